// The chunked lm_head + cross-entropy (train/linear_cross_entropy.h) against autograd of the
// plain composite nll_loss(log_softmax(h @ W^T)), in float64: loss, d hidden and d weight, for
// block sizes that split the rows unevenly, and the refusals.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <string>

#include "l4q/error.h"
#include "l4q/train/linear_cross_entropy.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::rel_err;

struct Ref {
  at::Tensor loss, dh, dw;
};

Ref reference(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& t, double g) {
  auto h = h0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
  auto loss = at::nll_loss(at::log_softmax(at::mm(h, w.t()), -1), t, {}, at::Reduction::Sum);
  (loss * g).backward();
  return {loss.detach(), h.grad(), w.grad()};
}

TEST(LinearCrossEntropy, MatchesAutogradOfThePlainHeadForEveryBlockSize) {
  at::manual_seed(7);
  const int64_t N = 11, H = 6, V = 37;
  const auto h0 = at::randn({N, H}, at::kDouble) * 2, w0 = at::randn({V, H}, at::kDouble);
  const auto t = at::randint(0, V, {N}, at::kLong);
  const double g = 0.37;  // a mean over tokens scales the loss: backward must scale too
  const auto ref = reference(h0, w0, t, g);
  for (int64_t chunk : {1, 3, 4, 11, 64, 0}) {
    auto h = h0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
    const auto loss = linear_cross_entropy_sum(h, w, t, chunk);
    EXPECT_EQ(loss.scalar_type(), at::kDouble);
    EXPECT_NEAR(loss.item<double>(), ref.loss.item<double>(), 1e-12 * ref.loss.item<double>())
        << chunk;
    (loss * g).backward();
    EXPECT_LT(rel_err(h.grad(), ref.dh), 1e-12) << chunk;
    EXPECT_LT(rel_err(w.grad(), ref.dw), 1e-12) << chunk;
  }
}

TEST(LinearCrossEntropy, FrozenWeightGetsNoGradientAndEvalNeedsNoGraph) {
  at::manual_seed(8);
  const auto h0 = at::randn({9, 5}), w = at::randn({13, 5});
  const auto t = at::randint(0, 13, {9}, at::kLong);
  auto h = h0.clone().set_requires_grad(true);
  const auto ref = reference(h0.to(at::kDouble), w.to(at::kDouble), t, 1.0);
  linear_cross_entropy_sum(h, w, t, 4).backward();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_LT(rel_err(h.grad().to(at::kDouble), ref.dh), 1e-5);
  {
    at::NoGradGuard ng;
    const auto l = linear_cross_entropy_sum(h, w, t, 2);
    EXPECT_FALSE(l.requires_grad());
    EXPECT_NEAR(l.item<double>(), ref.loss.item<double>(), 1e-5 * ref.loss.item<double>());
  }
}

// A bf16 model's logits go through a float softmax (as the plain head's .to(kFloat)).
TEST(LinearCrossEntropy, SixteenBitModelsGetAFloatSoftmax) {
  at::manual_seed(9);
  const auto h0 = at::randn({6, 8}).to(at::kBFloat16), w = at::randn({21, 8}).to(at::kBFloat16);
  const auto t = at::randint(0, 21, {6}, at::kLong);
  const auto ref = reference(h0.to(at::kDouble), w.to(at::kDouble), t, 1.0);
  auto h = h0.clone().set_requires_grad(true);
  const auto loss = linear_cross_entropy_sum(h, w, t, 4);
  EXPECT_EQ(loss.scalar_type(), at::kFloat);
  EXPECT_NEAR(loss.item<double>(), ref.loss.item<double>(), 2e-2 * ref.loss.item<double>());
  loss.backward();
  EXPECT_EQ(h.grad().scalar_type(), at::kBFloat16);
  EXPECT_LT(rel_err(h.grad().to(at::kDouble), ref.dh), 3e-2);
}

TEST(LinearCrossEntropy, RefusesBadInputNamingIt) {
  const auto h = at::randn({4, 3}), w = at::randn({10, 3});
  auto expect_error = [](auto f, const std::string& what) {
    try {
      f();
      ADD_FAILURE() << "no error for " << what;
    } catch (const l4q::Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error([&] { linear_cross_entropy_sum(h, w, at::tensor({0, 1, 10, 2}, at::kLong)); },
               "found 10");
  expect_error([&] { linear_cross_entropy_sum(h, w, at::tensor({0, -1, 1, 2}, at::kLong)); },
               "found -1");
  expect_error([&] { linear_cross_entropy_sum(h, at::randn({10, 4}), at::zeros({4}, at::kLong)); },
               "weight: expected [vocab, 3], got [10, 4]");
  expect_error([&] { linear_cross_entropy_sum(h, w, at::zeros({3}, at::kLong)); },
               "targets: expected int64 [4]");
  expect_error([&] { linear_cross_entropy_sum(h.view({-1}), w, at::zeros({4}, at::kLong)); },
               "hidden: expected [N, H]");
}

}  // namespace
}  // namespace l4q
