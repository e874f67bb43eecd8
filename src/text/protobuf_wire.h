// The protobuf wire format (proto2 encoding), just enough to read and write SentencePiece's
// ModelProto without libprotobuf: varints, fixed32/64, length-delimited fields and groups.
// Every read is bounds-checked; errors name `where` and the absolute byte offset.
// Reference: protobuf.dev/programming-guides/encoding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace l4q::pb {

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,  // deprecated groups: skipped as a whole, never produced
  kEndGroup = 4,
  kFixed32 = 5,
};

const char* wire_type_name(uint32_t wire);

struct FieldTag {
  uint32_t number = 0;
  uint32_t wire = 0;
  size_t begin = 0;  // offset of the tag inside the reader's data
};

// Walks the fields of one message. `base` is the message's offset inside the file, so that
// errors report file offsets; `where` names the file and the message ("tok512.model:
// trainer_spec").
class Reader {
 public:
  Reader(std::string_view data, std::string where, size_t base = 0);

  bool done() const { return pos_ >= data_.size(); }
  size_t pos() const { return pos_; }
  size_t file_offset(size_t pos) const { return base_ + pos; }
  const std::string& where() const { return where_; }

  // Reads the next tag; rejects field number 0, wire types 6 and 7 and a lone end-group.
  FieldTag next_field();

  uint64_t read_varint();
  uint32_t read_fixed32();
  uint64_t read_fixed64();
  std::string_view read_length_delimited();  // view into the reader's data

  // Skips the value of `tag` (its tag already read); groups are skipped up to their end tag.
  void skip(const FieldTag& tag);

  // Bytes of the field that began at `tag.begin` and ends at the current position.
  std::string_view raw_field(const FieldTag& tag) const {
    return data_.substr(tag.begin, pos_ - tag.begin);
  }

  // Checks that a known field came with the wire type its declaration implies.
  void expect_wire(const FieldTag& tag, uint32_t wire, const char* field_name) const;

  [[noreturn]] void fail_at(size_t pos, const std::string& what) const;

 private:
  void skip_group(uint32_t number, int depth);

  std::string_view data_;
  std::string where_;
  size_t base_;
  size_t pos_ = 0;
};

// Appends fields to a byte string.
class Writer {
 public:
  void tag(uint32_t number, uint32_t wire);
  void varint(uint64_t v);
  void varint_field(uint32_t number, uint64_t v);
  // int32 fields encode negative values as 10-byte sign-extended varints, as protobuf does.
  void int32_field(uint32_t number, int32_t v) {
    varint_field(number, static_cast<uint64_t>(static_cast<int64_t>(v)));
  }
  void bool_field(uint32_t number, bool v) { varint_field(number, v ? 1 : 0); }
  void float_field(uint32_t number, float v);
  void bytes_field(uint32_t number, std::string_view v);
  void raw(std::string_view bytes) { out_.append(bytes.data(), bytes.size()); }

  const std::string& bytes() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace l4q::pb
