#include "l4q/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "l4q/error.h"

namespace l4q {

namespace {

std::string temp_template(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return dir + "." + base + ".tmp-XXXXXX";
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  std::vector<char> name;
  const std::string tmpl = temp_template(path_);
  name.assign(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  fd_ = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd_ < 0) fail(path_, ": cannot create a temporary file next to it: ", std::strerror(errno));
  tmp_ = name.data();
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  if (fd_ < 0) fail(path_, ": write after commit");
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    // Linux write() moves at most ~2 GiB per call.
    const ssize_t k = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
    if (k < 0) {
      if (errno == EINTR) continue;
      fail(path_, ": write failed after ", written_, " bytes: ", std::strerror(errno));
    }
    p += k;
    n -= static_cast<size_t>(k);
    written_ += static_cast<uint64_t>(k);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) fail(path_, ": commit called twice");
  if (::fchmod(fd_, 0644) != 0 || ::fsync(fd_) != 0)
    fail(path_, ": cannot flush the temporary file: ", std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail(path_, ": cannot close the temporary file: ", std::strerror(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail(path_, ": cannot rename the temporary file onto it: ", std::strerror(errno));
  committed_ = true;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) fail("copy ", from, " -> ", to, ": cannot open the source: ", std::strerror(errno));
  try {
    AtomicFile out(to);
    std::vector<char> buf(1 << 20);
    for (;;) {
      const ssize_t k = ::read(in, buf.data(), buf.size());
      if (k < 0) {
        if (errno == EINTR) continue;
        fail("copy ", from, " -> ", to, ": read failed: ", std::strerror(errno));
      }
      if (k == 0) break;
      out.write(buf.data(), static_cast<size_t>(k));
    }
    out.commit();
  } catch (...) {
    ::close(in);
    throw;
  }
  ::close(in);
}

}  // namespace l4q
