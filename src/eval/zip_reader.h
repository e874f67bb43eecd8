// A read-only ZIP archive reader for data sets shipped as .zip (MMLU): the central directory,
// entries stored (method 0) or deflated (method 8), CRC-32 checked. No ZIP64, encryption,
// multi-disk archives or other methods (each refused with l4q::Error naming the entry).
// The deflate decoder is RFC 1951 written out (stored, fixed and dynamic Huffman blocks),
// so l4q needs no zlib.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace l4q {

class ZipReader {
 public:
  struct Entry {
    std::string name;            // path inside the archive, '/' separated
    uint16_t method = 0;         // 0 stored, 8 deflate
    uint32_t crc32 = 0;
    uint64_t compressed_size = 0, size = 0;
    uint64_t local_header_offset = 0;
  };

  // Reads the whole file and its central directory. Throws l4q::Error naming `path`.
  explicit ZipReader(const std::string& path);
  // An archive already in memory; `where` names it in errors.
  ZipReader(std::string bytes, std::string where);

  const std::vector<Entry>& entries() const { return entries_; }
  // The uncompressed bytes of `e` (CRC and size checked).
  std::string read(const Entry& e) const;

 private:
  void parse();
  std::string bytes_;
  std::string where_;
  std::vector<Entry> entries_;
};

// RFC 1951 raw deflate stream -> bytes. `expected_size` bounds the output (an error past it).
std::string inflate_raw(std::string_view in, uint64_t expected_size, const std::string& where);

uint32_t crc32(std::string_view data);

}  // namespace l4q
