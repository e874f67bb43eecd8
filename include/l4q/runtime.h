// Process-wide runtime settings. Tools and tests call init_runtime() once at start.
#pragma once

namespace l4q {

// Sets torch's intra-op thread count. n <= 0 means every core the process may use (torch's
// own default here is 1). Returns the number now in effect.
int set_num_threads(int n);

// Calls set_num_threads(threads) and seeds nothing else; safe to call more than once.
void init_runtime(int threads = 0);

}  // namespace l4q
