// Whole-file writes that either complete or leave nothing behind: bytes go to a temporary file
// in the destination's directory, which is fsync'ed and renamed over the destination only on
// commit(). Readers of the old file (including memory mappings) keep seeing the old content.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace l4q {

class AtomicFile {
 public:
  // Creates `path`'s temporary sibling. Throws l4q::Error naming `path` on failure.
  explicit AtomicFile(std::string path);
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(const std::string& s) { write(s.data(), s.size()); }
  uint64_t bytes_written() const { return written_; }
  // Flushes, fsyncs and renames onto the destination (mode 0644).
  void commit();

  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

// Writes `content` to `path` atomically.
void write_file_atomic(const std::string& path, const std::string& content);
// Copies the file `from` to `to` atomically. Throws l4q::Error naming both paths on failure.
void copy_file_atomic(const std::string& from, const std::string& to);

}  // namespace l4q
