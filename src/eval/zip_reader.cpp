#include "eval/zip_reader.h"

#include <array>
#include <fstream>
#include <sstream>

#include "l4q/error.h"

namespace l4q {

namespace {

uint32_t rd16(const std::string& b, uint64_t at) {
  return uint32_t(uint8_t(b[at])) | uint32_t(uint8_t(b[at + 1])) << 8;
}
uint32_t rd32(const std::string& b, uint64_t at) { return rd16(b, at) | rd16(b, at + 2) << 16; }

// LSB-first bit reader over a deflate stream.
class Bits {
 public:
  Bits(std::string_view in, const std::string& where) : in_(in), where_(where) {}
  uint32_t get(int n) {
    uint32_t v = bitbuf_;
    while (bitcnt_ < n) {
      if (pos_ >= in_.size()) fail(where_, ": deflate stream ends early");
      v |= uint32_t(uint8_t(in_[pos_++])) << bitcnt_;
      bitcnt_ += 8;
    }
    bitbuf_ = v >> n;
    bitcnt_ -= n;
    return v & ((1u << n) - 1);
  }
  void align() { bitbuf_ = 0, bitcnt_ = 0; }
  std::string_view take(size_t n) {
    if (in_.size() - pos_ < n) fail(where_, ": stored deflate block past the end of the data");
    auto s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  const std::string& where() const { return where_; }

 private:
  std::string_view in_;
  const std::string& where_;
  size_t pos_ = 0;
  uint32_t bitbuf_ = 0;
  int bitcnt_ = 0;
};

constexpr int kMaxBits = 15;

// A canonical Huffman code: how many codes of each length, and the symbols ordered by code.
struct Huffman {
  std::array<uint16_t, kMaxBits + 1> count{};
  std::vector<uint16_t> symbol;

  Huffman(const uint16_t* lengths, int n, const std::string& where) : symbol(n) {
    for (int s = 0; s < n; ++s) ++count[lengths[s]];
    int left = 1;
    for (int len = 1; len <= kMaxBits; ++len) {
      left = left * 2 - count[len];
      if (left < 0) fail(where, ": deflate Huffman code is over-subscribed");
    }
    std::array<uint16_t, kMaxBits + 2> offs{};
    for (int len = 1; len <= kMaxBits; ++len) offs[len + 1] = offs[len] + count[len];
    for (int s = 0; s < n; ++s)
      if (lengths[s] != 0) symbol[offs[lengths[s]]++] = static_cast<uint16_t>(s);
  }

  int decode(Bits& b) const {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= kMaxBits; ++len) {
      code |= static_cast<int>(b.get(1));
      const int c = count[len];
      if (code - c < first) return symbol[index + (code - first)];
      index += c;
      first = (first + c) << 1;
      code <<= 1;
    }
    fail(b.where(), ": invalid deflate Huffman code");
  }
};

constexpr uint16_t kLenBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                   31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr uint16_t kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                    2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr uint16_t kDistBase[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,
                                    33,  49,  65,  97,  129, 193,  257,  385,  513,  769,
                                    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr uint16_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                     6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

void inflate_codes(Bits& b, std::string& out, const Huffman& lit, const Huffman& dist, uint64_t limit) {
  for (;;) {
    int sym = lit.decode(b);
    if (sym < 256) {
      if (out.size() >= limit) fail(b.where(), ": inflated data longer than the ", limit, " bytes declared");
      out.push_back(static_cast<char>(sym));
    } else if (sym == 256) {
      return;
    } else {
      sym -= 257;
      if (sym >= 29) fail(b.where(), ": invalid deflate length symbol");
      const size_t len = kLenBase[sym] + b.get(kLenExtra[sym]);
      const int ds = dist.decode(b);
      if (ds >= 30) fail(b.where(), ": invalid deflate distance symbol");
      const size_t d = kDistBase[ds] + b.get(kDistExtra[ds]);
      if (d > out.size()) fail(b.where(), ": deflate distance ", d, " reaches before the start of the data");
      if (out.size() + len > limit) fail(b.where(), ": inflated data longer than the ", limit, " bytes declared");
      const size_t from = out.size() - d;
      for (size_t k = 0; k < len; ++k) out.push_back(out[from + k]);  // may overlap
    }
  }
}

}  // namespace

std::string inflate_raw(std::string_view in, uint64_t expected_size, const std::string& where) {
  Bits b(in, where);
  std::string out;
  out.reserve(expected_size);
  // Fixed codes (RFC 1951 3.2.6), built once.
  static const auto fixed = [] {
    std::array<uint16_t, 288> l{};
    for (int i = 0; i < 144; ++i) l[i] = 8;
    for (int i = 144; i < 256; ++i) l[i] = 9;
    for (int i = 256; i < 280; ++i) l[i] = 7;
    for (int i = 280; i < 288; ++i) l[i] = 8;
    std::array<uint16_t, 30> d{};
    d.fill(5);
    return std::make_pair(Huffman(l.data(), 288, "fixed"), Huffman(d.data(), 30, "fixed"));
  }();
  bool last = false;
  while (!last) {
    last = b.get(1) == 1;
    const uint32_t type = b.get(2);
    if (type == 0) {
      b.align();
      const auto hdr = b.take(4);
      const uint32_t len = uint8_t(hdr[0]) | uint8_t(hdr[1]) << 8;
      const uint32_t nlen = uint8_t(hdr[2]) | uint8_t(hdr[3]) << 8;
      if ((len ^ 0xffffu) != nlen) fail(where, ": stored deflate block with LEN/NLEN mismatch");
      if (out.size() + len > expected_size) fail(where, ": inflated data longer than the ", expected_size, " bytes declared");
      out.append(b.take(len));
    } else if (type == 1) {
      inflate_codes(b, out, fixed.first, fixed.second, expected_size);
    } else if (type == 2) {
      const int nlen = static_cast<int>(b.get(5)) + 257;
      const int ndist = static_cast<int>(b.get(5)) + 1;
      const int ncode = static_cast<int>(b.get(4)) + 4;
      if (nlen > 286 || ndist > 30) fail(where, ": deflate block with too many length or distance codes");
      static constexpr int kOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
      std::array<uint16_t, 320> lengths{};
      for (int i = 0; i < ncode; ++i) lengths[kOrder[i]] = static_cast<uint16_t>(b.get(3));
      const Huffman lencode(lengths.data(), 19, where);
      int idx = 0;
      while (idx < nlen + ndist) {
        int sym = lencode.decode(b);
        if (sym < 16) {
          lengths[idx++] = static_cast<uint16_t>(sym);
          continue;
        }
        uint16_t value = 0;
        int repeat;
        if (sym == 16) {
          if (idx == 0) fail(where, ": deflate length repeat with no previous length");
          value = lengths[idx - 1];
          repeat = 3 + static_cast<int>(b.get(2));
        } else if (sym == 17) {
          repeat = 3 + static_cast<int>(b.get(3));
        } else {
          repeat = 11 + static_cast<int>(b.get(7));
        }
        if (idx + repeat > nlen + ndist) fail(where, ": deflate code lengths overrun");
        while (repeat--) lengths[idx++] = value;
      }
      if (lengths[256] == 0) fail(where, ": deflate block without an end-of-block code");
      const Huffman lit(lengths.data(), nlen, where);
      const Huffman dist(lengths.data() + nlen, ndist, where);
      inflate_codes(b, out, lit, dist, expected_size);
    } else {
      fail(where, ": invalid deflate block type 3");
    }
  }
  if (out.size() != expected_size)
    fail(where, ": inflated to ", out.size(), " bytes, the archive declares ", expected_size);
  return out;
}

uint32_t crc32(std::string_view data) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (const char ch : data) c = table[(c ^ uint8_t(ch)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

ZipReader::ZipReader(const std::string& path) : where_(path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  bytes_ = ss.str();
  parse();
}

ZipReader::ZipReader(std::string bytes, std::string where) : bytes_(std::move(bytes)), where_(std::move(where)) {
  parse();
}

void ZipReader::parse() {
  const std::string& b = bytes_;
  const uint64_t n = b.size();
  if (n < 22) fail(where_, ": not a ZIP archive (", n, " bytes, no end of central directory)");
  // The end-of-central-directory record is the last thing in the file but for a comment of up
  // to 65535 bytes.
  int64_t eocd = -1;
  for (int64_t at = int64_t(n) - 22; at >= 0 && at >= int64_t(n) - 22 - 65535; --at)
    if (rd32(b, at) == 0x06054b50u && uint64_t(at) + 22 + rd16(b, at + 20) == n) {
      eocd = at;
      break;
    }
  if (eocd < 0) fail(where_, ": not a ZIP archive (no end of central directory record)");
  const uint32_t count = rd16(b, eocd + 10);
  const uint64_t cd_size = rd32(b, eocd + 12), cd_off = rd32(b, eocd + 16);
  if (rd16(b, eocd + 4) != 0 || rd16(b, eocd + 6) != 0 || rd16(b, eocd + 8) != count)
    fail(where_, ": multi-disk ZIP archives are not supported");
  if (count == 0xFFFF || cd_off == 0xFFFFFFFFu) fail(where_, ": ZIP64 archives are not supported");
  if (cd_off + cd_size > uint64_t(eocd)) fail(where_, ": central directory [", cd_off, ", +", cd_size, ") past its end record");
  uint64_t at = cd_off;
  for (uint32_t i = 0; i < count; ++i) {
    if (at + 46 > cd_off + cd_size || rd32(b, at) != 0x02014b50u)
      fail(where_, ": central directory entry ", i, " at offset ", at, " is malformed");
    Entry e;
    const uint32_t flags = rd16(b, at + 8);
    e.method = static_cast<uint16_t>(rd16(b, at + 10));
    e.crc32 = rd32(b, at + 16);
    e.compressed_size = rd32(b, at + 20);
    e.size = rd32(b, at + 24);
    const uint32_t name_len = rd16(b, at + 28), extra_len = rd16(b, at + 30), comment_len = rd16(b, at + 32);
    e.local_header_offset = rd32(b, at + 42);
    if (at + 46 + name_len > cd_off + cd_size) fail(where_, ": central directory entry ", i, " name past the directory");
    e.name = b.substr(at + 46, name_len);
    if (flags & 1) fail(where_, ": entry '", e.name, "' is encrypted (not supported)");
    if (e.compressed_size == 0xFFFFFFFFu || e.size == 0xFFFFFFFFu || e.local_header_offset == 0xFFFFFFFFu)
      fail(where_, ": entry '", e.name, "' needs ZIP64 (not supported)");
    entries_.push_back(std::move(e));
    at += 46 + uint64_t(name_len) + extra_len + comment_len;
  }
}

std::string ZipReader::read(const Entry& e) const {
  const std::string& b = bytes_;
  const std::string where = where_ + ": entry '" + e.name + "'";
  const uint64_t lh = e.local_header_offset;
  if (lh + 30 > b.size() || rd32(b, lh) != 0x04034b50u) fail(where, ": local header at offset ", lh, " is malformed");
  const uint64_t data = lh + 30 + rd16(b, lh + 26) + rd16(b, lh + 28);
  if (data + e.compressed_size > b.size())
    fail(where, ": data [", data, ", +", e.compressed_size, ") past the end of the archive (", b.size(), " bytes)");
  const std::string_view raw(b.data() + data, e.compressed_size);
  std::string out;
  if (e.method == 0) {
    if (e.compressed_size != e.size) fail(where, ": stored entry with sizes ", e.compressed_size, " and ", e.size);
    out.assign(raw);
  } else if (e.method == 8) {
    out = inflate_raw(raw, e.size, where);
  } else {
    fail(where, ": compression method ", e.method, " (only 0 stored and 8 deflate are supported)");
  }
  if (crc32(out) != e.crc32) fail(where, ": CRC-32 mismatch (archive damaged)");
  return out;
}

}  // namespace l4q
