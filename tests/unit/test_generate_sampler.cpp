// Sampler: greedy ties, seeded reproducibility independent of torch's RNG, temperature and
// top-p against the probabilities they should realise.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "l4q/infer/sampler.h"
#include "test_support.h"

namespace l4q {
namespace {

TEST(Sampler, GreedyTakesFirstMaximum) {
  Sampler s({0.0, 1.0, 1});
  EXPECT_EQ(s.sample(at::tensor({0.5f, 2.0f, -1.0f, 2.0f})), 1);
  EXPECT_EQ(s.sample(at::tensor({-3.0, -2.0, -2.5}, at::kDouble)), 1);
  EXPECT_EQ(s.sample(at::tensor({7.0f})), 0);
}

std::vector<int> draws(const SamplerOptions& o, const at::Tensor& logits, int n) {
  Sampler s(o);
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(s.sample(logits));
  return out;
}

TEST(Sampler, SeedDeterminesTheSequence) {
  const auto logits = at::tensor({1.0f, 1.2f, 0.7f, 0.1f, 1.1f});
  at::manual_seed(1);
  const auto a = draws({1.0, 1.0, 123}, logits, 200);
  at::manual_seed(999);  // torch's RNG plays no part
  (void)at::rand({10});
  const auto b = draws({1.0, 1.0, 123}, logits, 200);
  const auto c = draws({1.0, 1.0, 124}, logits, 200);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampler, TemperatureRealisesSoftmax) {
  const std::vector<float> l = {0.0f, 1.0f, 2.0f};
  for (double temp : {0.5, 1.0, 2.0}) {
    const int n = 40000;
    const auto d = draws({temp, 1.0, 7}, at::tensor(l), n);
    double z = 0;
    for (float x : l) z += std::exp(x / temp);
    for (int k = 0; k < 3; ++k) {
      const double want = std::exp(l[k] / temp) / z;
      const double got = std::count(d.begin(), d.end(), k) / double(n);
      EXPECT_NEAR(got, want, 0.01) << "T " << temp << " token " << k;
    }
  }
}

TEST(Sampler, TopPKeepsTheNucleusOnly) {
  // probabilities 0.5, 0.3, 0.15, 0.05 (log-probs as logits)
  const auto logits = at::log(at::tensor({0.15, 0.5, 0.05, 0.3}, at::kDouble));
  const int n = 40000;
  // top_p 0.7: 0.5 + 0.3 exceeds it, so tokens 1 and 3 remain with 5/8 and 3/8.
  const auto d = draws({1.0, 0.7, 3}, logits, n);
  EXPECT_EQ(std::count(d.begin(), d.end(), 0), 0);
  EXPECT_EQ(std::count(d.begin(), d.end(), 2), 0);
  EXPECT_NEAR(std::count(d.begin(), d.end(), 1) / double(n), 0.625, 0.01);
  // A tiny top_p is greedy.
  for (int t : draws({1.5, 1e-6, 3}, logits, 100)) EXPECT_EQ(t, 1);
}

TEST(Sampler, RejectsBadOptions) {
  test::expect_error([] { Sampler({-1.0, 1.0, 0}); }, {"temperature", "-1"});
  test::expect_error([] { Sampler({1.0, 0.0, 0}); }, {"top_p", "(0, 1]"});
  test::expect_error([] { Sampler({1.0, 1.5, 0}); }, {"top_p"});
  Sampler s({1.0, 1.0, 0});
  EXPECT_THROW(s.sample(at::zeros({2, 2})), Error);
}

}  // namespace
}  // namespace l4q
