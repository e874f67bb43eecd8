#include "l4q/runtime.h"

#include <ATen/Parallel.h>
#include <sched.h>

#include <thread>

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

void init_runtime(int threads) { set_num_threads(threads); }

}  // namespace l4q
