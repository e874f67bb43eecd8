// l4q's own at::parallel_for loops (the L4Q row passes, attention's heads, the packed matmul)
// run on every thread torch is given: ATen's OpenMP backend inlines the parallel region into
// the caller, so a libl4q built without -fopenmp would silently run them on one thread.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "l4q/runtime.h"

TEST(RuntimeThreads, LibraryParallelForUsesEveryThread) {
  const int before = at::get_num_threads();
  ASSERT_EQ(l4q::set_num_threads(2), 2);
  EXPECT_EQ(l4q::parallel_for_threads(), 2)
      << "libl4q's at::parallel_for ran on one thread: was it compiled without OpenMP?";
  ASSERT_EQ(l4q::set_num_threads(1), 1);
  EXPECT_EQ(l4q::parallel_for_threads(), 1);
  l4q::set_num_threads(before);
}
