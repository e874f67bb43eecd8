// LSQ+ quantizer: grid, initialisations and the unsigned export view.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "l4q/nn/l4q_linear.h"
#include "l4q/quant/lsq.h"
#include "test_support.h"

namespace l4q {
namespace {

TEST(QuantGrid, BoundsAndGroups) {
  for (int bits = 2; bits <= 8; ++bits) {
    const QuantGrid g{bits, 16};
    EXPECT_EQ(g.qn(), -(1 << (bits - 1)));
    EXPECT_EQ(g.qp(), (1 << (bits - 1)) - 1);
    EXPECT_EQ(g.qp() - g.qn() + 1, g.levels());
  }
  EXPECT_EQ((QuantGrid{4, -1}).groups_per_row(96), 1);
  EXPECT_EQ((QuantGrid{4, 32}).groups_per_row(96), 3);
  test::expect_error([] { QuantGrid{4, 0}.validate("t"); }, {"group_size", "0"});
  test::expect_error([] { QuantGrid{4, 64}.validate("t", 96); }, {"group_size", "64", "96"});
}

TEST(LsqInit, L4QInitCoversTheGroupRange) {
  at::manual_seed(1);
  const auto W = at::randn({5, 32});
  const QuantGrid grid{3, 8};
  const auto so = init_step_offset(W, grid, LsqInit::L4Q);
  EXPECT_EQ(so.s.sizes(), (at::IntArrayRef{5, 4}));
  EXPECT_EQ(so.b.abs().max().item<float>(), 0.f);
  const auto Wg = W.view({5, 4, 8});
  const auto expect = at::maximum((std::get<0>(Wg.min(-1)) / -4).abs(),
                                  (std::get<0>(Wg.max(-1)) / 3).abs());
  EXPECT_TRUE(at::allclose(so.s, expect));
  // No element of W is clipped by more than rounding: |w| within the grid.
  const auto w = W / so.s.repeat_interleave(8, 1);
  EXPECT_GE(w.min().item<float>(), -4 - 1e-5);
  EXPECT_LE(w.max().item<float>(), 3 + 1e-5);
}

TEST(LsqInit, MinMaxMapsGroupExtremesToGridEnds) {
  at::manual_seed(2);
  const auto W = at::randn({4, 16}) + 0.3;
  const QuantGrid grid{4, 8};
  const auto so = init_step_offset(W, grid, LsqInit::MinMax);
  const auto m = quantize_weight(W, so.s, so.b, grid);
  const auto codes = m.w_int.view({4, 2, 8}).to(at::kInt);
  EXPECT_TRUE(at::equal(std::get<0>(codes.min(-1)), at::full({4, 2}, -8, at::kInt)));
  EXPECT_TRUE(at::equal(std::get<0>(codes.max(-1)), at::full({4, 2}, 7, at::kInt)));
  // Error at most half a step everywhere (nothing clipped).
  const auto err = (m.dequantize() - W).abs() / so.s.repeat_interleave(8, 1);
  EXPECT_LE(err.max().item<float>(), 0.5 + 1e-4);
}

TEST(LsqInit, AbsMaxAndLsqPlusAreSymmetric) {
  at::manual_seed(3);
  const auto W = at::randn({3, 64});
  const QuantGrid grid{4, -1};
  const auto am = init_step_offset(W, grid, LsqInit::AbsMax);
  EXPECT_TRUE(at::allclose(am.s.squeeze(1), W.abs().amax(1) / 7));
  const auto lp = init_step_offset(W, grid, LsqInit::LsqPlus);
  const auto mu = W.mean(1), sd = W.std(1, false);
  EXPECT_TRUE(at::allclose(lp.s.squeeze(1), at::maximum((mu - 3 * sd).abs(), (mu + 3 * sd).abs()) / 8));
  EXPECT_EQ(lp.b.abs().max().item<float>(), 0.f);
}

TEST(LsqInit, ZeroGroupGetsPositiveStep) {
  const auto W = at::zeros({2, 8});
  for (auto init : {LsqInit::L4Q, LsqInit::MinMax, LsqInit::AbsMax, LsqInit::LsqPlus}) {
    const auto so = init_step_offset(W, {3, 4}, init);
    EXPECT_GT(so.s.min().item<float>(), 0.f) << to_string(init);
    EXPECT_TRUE(at::equal(quantize_weight(W, so.s, so.b, {3, 4}).dequantize(), W)) << to_string(init);
  }
}

TEST(LsqInit, ParsesNamesAndRejectsUnknown) {
  EXPECT_EQ(parse_lsq_init("l4q"), LsqInit::L4Q);
  EXPECT_EQ(parse_lsq_init("minmax"), LsqInit::MinMax);
  EXPECT_EQ(parse_lsq_init("absmax"), LsqInit::AbsMax);
  EXPECT_EQ(parse_lsq_init("lsq+"), LsqInit::LsqPlus);
  for (auto i : {LsqInit::L4Q, LsqInit::MinMax, LsqInit::AbsMax, LsqInit::LsqPlus})
    EXPECT_EQ(parse_lsq_init(to_string(i)), i);
  test::expect_error([] { parse_lsq_init("gptq"); }, {"quant.init", "gptq", "l4q"});
}

TEST(LsqInit, ParametersAreFp32ForFp32AndFp64ForFp64) {
  EXPECT_EQ(init_step_offset(at::randn({2, 8}), {4, 8}, LsqInit::L4Q).s.scalar_type(), at::kFloat);
  EXPECT_EQ(init_step_offset(at::randn({2, 8}, at::kDouble), {4, 8}, LsqInit::L4Q).s.scalar_type(),
            at::kDouble);
}

TEST(QuantMath, RoundsHalfToEvenLikeTorch) {
  const auto v = at::arange(-130.0, 130.0, 0.25, at::kFloat);
  const QuantGrid grid{8, -1};
  // s = 1, b = 0 quantizes to round(clamp(v, -128, 127)).
  const auto m = quantize_weight(v.view({1, -1}), at::ones({1, 1}), at::zeros({1, 1}), grid);
  EXPECT_TRUE(at::equal(m.w_int.to(at::kFloat).view(-1), v.clamp(-128, 127).round()));
}

}  // namespace
}  // namespace l4q
