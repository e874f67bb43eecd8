// A read-only view of a whole file through mmap, shared by the checkpoint readers so that
// tensors can alias file pages instead of copying them. Private to src/io.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace l4q::detail {

class MappedFile {
 public:
  // Maps `path` privately (copy-on-write, MAP_NORESERVE: no swap is reserved for pages that
  // are never written): a tensor that aliases the mapping may be written without touching the
  // file and without faulting. Throws l4q::Error naming the path when the
  // file cannot be opened, is not a regular file, or cannot be mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Drops the pages lying wholly inside [offset, offset + length) from this process's resident
  // set (madvise MADV_DONTNEED). Used once a tensor has been converted into a new buffer, so a
  // load never keeps both the source and the converted weights resident. Only whole pages are
  // dropped, so neighbouring tensors are never affected; a later read faults the pages in again
  // from the file (any private write to them is lost, so call this only on source bytes).
  void release(uint64_t offset, uint64_t length) const;

 private:
  MappedFile() = default;
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace l4q::detail
