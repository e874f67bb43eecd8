// Helpers shared by the unit tests.
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "l4q/error.h"

namespace l4q::test {

// Max relative error, |a - b| / max(|b|, floor).
inline double rel_err(const at::Tensor& a, const at::Tensor& b, double floor = 1e-12) {
  const auto diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  const auto ref = b.to(at::kDouble).abs().max().item<double>();
  return diff / std::max(ref, floor);
}

// Expects `f` to throw l4q::Error whose message contains every fragment.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected l4q::Error";
  } catch (const l4q::Error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "message '" << msg << "' lacks '" << frag << "'";
  }
}

}  // namespace l4q::test
