#include "l4q/runtime.h"

#include <ATen/Parallel.h>
#include <sched.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <chrono>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "l4q/error.h"
#include "quant/codes_matmul.h"

namespace l4q {

namespace {
int usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}
}  // namespace

int set_num_threads(int n) {
  const int want = n > 0 ? n : usable_cores();
  at::set_num_threads(want);
  return at::get_num_threads();
}

int parallel_for_threads() {
  std::mutex m;
  std::set<std::thread::id> ids;
  const int64_t n = 64 * static_cast<int64_t>(at::get_num_threads());
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    // Long enough that one thread cannot take every chunk before the others start.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> lock(m);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int>(ids.size());
}

void init_runtime(int threads) { set_num_threads(threads); }

bool keep_freed_memory() {
  const char* env = std::getenv("L4Q_MALLOC");
  const std::string mode = env ? env : "keep";
  if (mode != "keep" && mode != "glibc")
    fail("environment variable L4Q_MALLOC: expected keep or glibc, got '", mode, "'");
  if (mode == "glibc") return false;
#if defined(__GLIBC__)
  // No mmapped blocks at all: the heap serves every size, and a freed block is reused by the
  // next step's allocation of the same size. The heap's top is still returned to the OS once
  // more than INT_MAX bytes of it are free (a one-off peak, not the steady state).
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
#else
  return false;
#endif
}

bool set_amx_tiles(bool on) {
  // On: the automatic choice (the hardware, and L4Q_AMX).
  cpu::set_amx_enabled(on ? std::nullopt : std::optional<bool>(false));
  return cpu::amx_enabled();
}

}  // namespace l4q
