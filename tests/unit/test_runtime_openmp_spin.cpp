// include/l4q/openmp_spin.h: the unit-test binary links src/openmp_preinit.cpp, so by the time
// main() runs it has been re-executed with GOMP_SPINCOUNT in its real environment.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "l4q/openmp_spin.h"

TEST(RuntimeOpenmpSpin, ProcessWasStartedWithShortSpinUnlessUserChose) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) GTEST_SKIP() << "OMP_WAIT_POLICY set by the user";
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  ASSERT_NE(spin, nullptr) << "the .preinit_array re-exec of src/openmp_preinit.cpp did not happen";
}

TEST(RuntimeOpenmpSpin, KeepsAUserChoiceAndAppendsOtherwise) {
  using l4q::detail::add_short_spin;
  using l4q::detail::openmp_wait_chosen;
  std::vector<std::string> vars = {"HOME=/root", "GOMP_SPINCOUNTX=1", "OMP_WAIT_POLICYX=1"};
  std::vector<char*> env;
  for (auto& v : vars) env.push_back(v.data());
  env.push_back(nullptr);
  EXPECT_FALSE(openmp_wait_chosen(env.data()));
  EXPECT_FALSE(openmp_wait_chosen(nullptr));
  std::vector<char*> out(env.size() + 1);
  add_short_spin(env.data(), vars.size(), out.data());
  EXPECT_STREQ(out[0], "HOME=/root");
  EXPECT_STREQ(out[3], "GOMP_SPINCOUNT=1000");
  EXPECT_EQ(out[4], nullptr);
  EXPECT_TRUE(openmp_wait_chosen(out.data()));
  std::string policy = "OMP_WAIT_POLICY=ACTIVE";
  char* user[] = {policy.data(), nullptr};
  EXPECT_TRUE(openmp_wait_chosen(user));
}
