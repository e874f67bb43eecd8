// Process-wide runtime settings. Tools and tests call init_runtime() once at start.
#pragma once

namespace l4q {

// Sets torch's intra-op thread count. n <= 0 means every core the process may use (torch's
// own default here is 1). Returns the number now in effect.
int set_num_threads(int n);

// How many threads an at::parallel_for inside l4q actually runs on, for a range large enough
// to split: at::get_num_threads() when l4q was compiled with OpenMP (ATen's OpenMP backend
// inlines the parallel region into the caller), 1 when it was not. Tests assert it.
int parallel_for_threads();

// Calls set_num_threads(threads) and seeds nothing else; safe to call more than once.
void init_runtime(int threads = 0);

// Makes the C allocator keep freed memory for reuse instead of handing it back to the OS. With
// glibc's defaults every block above its mmap threshold (at most 32 MiB) is a fresh mmap that
// is unmapped on free, so a training step's activation buffers page-fault in again every step
// (stories260K training: 8-10% more tokens/s and a third of the system time with this, peak
// RSS within 8% either way; docs/benchmarks.md). Process-wide, so the library never calls it:
// the tools do, at start. The environment variable L4Q_MALLOC=glibc keeps glibc's defaults
// (=keep is the default); any other value throws l4q::Error. Returns whether the setting is now in effect (false with
// L4Q_MALLOC=glibc or a C library other than glibc).
bool keep_freed_memory();

}  // namespace l4q
