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

// Whether the fake-quantized layers (l4q_linear) may run their CPU products with W_q, the
// forward and the input gradient, on the AMX tile unit from the weight's integer codes (CPUs
// with AMX-BF16 and AVX512-BF16, fp32 layers whose groups are multiples of 32 columns, products
// of at least 2^24 multiply-adds; docs/design.md). A layer's backward follows its forward. On
// by default; the environment variable L4Q_AMX=0 turns it off for the process, set_amx_tiles(true)
// included (1 or unset: on; any other value throws l4q::Error). Returns whether it is now in
// effect: false where the CPU, the OS or the build has no AMX.
bool set_amx_tiles(bool on);

}  // namespace l4q
