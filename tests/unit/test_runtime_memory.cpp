// l4q::keep_freed_memory(): after it, a large block freed and allocated again is served from
// the heap without page faults (glibc's defaults unmap it on free, so every page faults in
// again). The environment variable L4Q_MALLOC chooses; a bad value is an error, not a default.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstdlib>
#include <string>

#include "l4q/error.h"
#include "l4q/runtime.h"

namespace {

struct EnvVar {
  explicit EnvVar(const char* value) {
    if (const char* old = std::getenv("L4Q_MALLOC")) saved = old, had = true;
    if (value) setenv("L4Q_MALLOC", value, 1);
    else unsetenv("L4Q_MALLOC");
  }
  ~EnvVar() {
    if (had) setenv("L4Q_MALLOC", saved.c_str(), 1);
    else unsetenv("L4Q_MALLOC");
  }
  std::string saved;
  bool had = false;
};

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// Minor page faults while a freshly allocated 64 MiB block (above glibc's 32 MiB cap on its
// mmap threshold) is written, after one such block was allocated, written and freed.
// Volatile writes, one per 4 KiB page: the compiler may not drop a malloc/memset/free.
void touch(void* p, size_t bytes) {
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t i = 0; i < bytes; i += 4096) c[i] = 1;
}

long faults_of_second_block() {
  constexpr size_t kBytes = size_t{64} << 20;
  void* first = std::malloc(kBytes);
  touch(first, kBytes);
  std::free(first);
  const long before = minor_faults();
  void* second = std::malloc(kBytes);
  touch(second, kBytes);
  const long faults = minor_faults() - before;
  std::free(second);
  return faults;
}

}  // namespace

TEST(RuntimeMemory, BadModeIsAnErrorNamingTheVariable) {
  EnvVar env("sometimes");
  try {
    l4q::keep_freed_memory();
    FAIL() << "no error for L4Q_MALLOC=sometimes";
  } catch (const l4q::Error& e) {
    EXPECT_NE(std::string(e.what()).find("L4Q_MALLOC"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sometimes"), std::string::npos) << e.what();
  }
}

// One test, in this order: glibc's defaults first (the setting is process-wide and is not undone).
TEST(RuntimeMemory, KeptMemoryIsReusedWithoutPageFaults) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "the setting is glibc's";
#elif defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator replaces glibc's";
#else
  {
    EnvVar env("glibc");
    EXPECT_FALSE(l4q::keep_freed_memory());
    // glibc unmapped the first block, so the second faults in again: 16384 pages of 4 KiB, or
    // 32 of 2 MiB where transparent huge pages are always on.
    EXPECT_GT(faults_of_second_block(), 16);
  }
  EnvVar env(nullptr);  // unset: keep is the default
  EXPECT_TRUE(l4q::keep_freed_memory());
  faults_of_second_block();  // grows the heap once
  EXPECT_LT(faults_of_second_block(), 8) << "the freed block was handed back to the OS";
#endif
}
