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

}  // namespace l4q
