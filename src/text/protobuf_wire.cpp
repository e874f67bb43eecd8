#include "text/protobuf_wire.h"

#include <cstring>

#include "l4q/error.h"

namespace l4q::pb {
namespace {
// Nesting of groups inside skipped fields; real files have none, a corrupt one could recurse.
constexpr int kMaxGroupDepth = 64;
}  // namespace

const char* wire_type_name(uint32_t wire) {
  switch (wire) {
    case kVarint: return "varint";
    case kFixed64: return "fixed64";
    case kLengthDelimited: return "length-delimited";
    case kStartGroup: return "start-group";
    case kEndGroup: return "end-group";
    case kFixed32: return "fixed32";
    default: return "invalid";
  }
}

Reader::Reader(std::string_view data, std::string where, size_t base)
    : data_(data), where_(std::move(where)), base_(base) {}

void Reader::fail_at(size_t pos, const std::string& what) const {
  fail(where_, ": ", what, " (at byte ", base_ + pos, ")");
}

uint64_t Reader::read_varint() {
  const size_t start = pos_;
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (pos_ >= data_.size()) fail_at(start, "varint runs past the end of the data");
    const auto byte = static_cast<uint8_t>(data_[pos_++]);
    if (shift == 63 && (byte & 0x7e) != 0) fail_at(start, "varint overflows 64 bits");
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return v;
  }
  fail_at(start, "varint longer than 10 bytes");
}

uint32_t Reader::read_fixed32() {
  if (data_.size() - pos_ < 4) fail_at(pos_, "fixed32 runs past the end of the data");
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
  pos_ += 4;
  return v;
}

uint64_t Reader::read_fixed64() {
  if (data_.size() - pos_ < 8) fail_at(pos_, "fixed64 runs past the end of the data");
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
  pos_ += 8;
  return v;
}

std::string_view Reader::read_length_delimited() {
  const size_t start = pos_;
  const uint64_t len = read_varint();
  const size_t left = data_.size() - pos_;
  if (len > left)
    fail_at(start, detail::concat("length ", len, " runs past the end of the data (", left,
                                  " bytes left)"));
  const auto out = data_.substr(pos_, static_cast<size_t>(len));
  pos_ += static_cast<size_t>(len);
  return out;
}

FieldTag Reader::next_field() {
  FieldTag t;
  t.begin = pos_;
  const uint64_t key = read_varint();
  t.wire = static_cast<uint32_t>(key & 7);
  const uint64_t number = key >> 3;
  if (number == 0 || number > 0x1fffffff)
    fail_at(t.begin, detail::concat("invalid field number ", number));
  t.number = static_cast<uint32_t>(number);
  if (t.wire > kFixed32)
    fail_at(t.begin, detail::concat("field ", t.number, ": invalid wire type ", t.wire));
  if (t.wire == kEndGroup)
    fail_at(t.begin, detail::concat("field ", t.number, ": end-group without a start-group"));
  return t;
}

void Reader::skip_group(uint32_t number, int depth) {
  if (depth > kMaxGroupDepth) fail_at(pos_, "groups nested too deeply");
  for (;;) {
    if (done()) fail_at(pos_, detail::concat("group ", number, " has no end-group tag"));
    const size_t start = pos_;
    const uint64_t key = read_varint();
    const auto wire = static_cast<uint32_t>(key & 7);
    const uint64_t inner = key >> 3;
    if (inner == 0 || wire > kFixed32)
      fail_at(start, detail::concat("invalid tag ", key, " inside group ", number));
    if (wire == kEndGroup) {
      if (inner != number)
        fail_at(start, detail::concat("end-group ", inner, " closes group ", number));
      return;
    }
    FieldTag t{static_cast<uint32_t>(inner), wire, start};
    if (wire == kStartGroup)
      skip_group(t.number, depth + 1);
    else
      skip(t);
  }
}

void Reader::skip(const FieldTag& tag) {
  switch (tag.wire) {
    case kVarint: read_varint(); return;
    case kFixed64: read_fixed64(); return;
    case kLengthDelimited: read_length_delimited(); return;
    case kStartGroup: skip_group(tag.number, 1); return;
    case kFixed32: read_fixed32(); return;
    default: fail_at(tag.begin, detail::concat("field ", tag.number, ": cannot skip wire type ", tag.wire));
  }
}

void Reader::expect_wire(const FieldTag& tag, uint32_t wire, const char* field_name) const {
  if (tag.wire != wire)
    fail_at(tag.begin, detail::concat("field ", tag.number, " (", field_name, "): expected wire type ",
                                      wire_type_name(wire), ", got ", wire_type_name(tag.wire)));
}

void Writer::tag(uint32_t number, uint32_t wire) {
  varint((static_cast<uint64_t>(number) << 3) | wire);
}

void Writer::varint(uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out_.push_back(static_cast<char>(v));
}

void Writer::varint_field(uint32_t number, uint64_t v) {
  tag(number, kVarint);
  varint(v);
}

void Writer::float_field(uint32_t number, float v) {
  tag(number, kFixed32);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

void Writer::bytes_field(uint32_t number, std::string_view v) {
  tag(number, kLengthDelimited);
  varint(v.size());
  raw(v);
}

}  // namespace l4q::pb
