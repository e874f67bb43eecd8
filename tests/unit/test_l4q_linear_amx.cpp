// The AMX forward of l4q_linear (src/quant/codes_matmul.h): Y from W_q's integer codes on the
// tile unit, against the BLAS forward on W_q and a float64 reference. Skipped where the CPU or
// OS has no AMX-BF16.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/nn/l4q_linear.h"
#include "l4q/runtime.h"
#include "nn/l4q_linear_tuning.h"
#include "quant/codes_matmul.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::rel_err;

// Every product takes the AMX path (or, with on = false, the BLAS path) while in scope.
struct AmxForward {
  int64_t saved = detail::amx_forward_min_macs();
  explicit AmxForward(bool on) {
    detail::amx_forward_min_macs() = 0;
    cpu::set_amx_enabled(on);
  }
  ~AmxForward() {
    detail::amx_forward_min_macs() = saved;
    cpu::set_amx_enabled(std::nullopt);
  }
};

#define SKIP_WITHOUT_AMX() \
  if (!cpu::amx_available()) GTEST_SKIP() << "no AMX-BF16 tile unit on this CPU or OS"

struct Case {
  int64_t tokens, out, in, gs, rank;
  int bits;
  double s_shrink;  // < 1: clipped weights at both ends
  bool bias;
  at::ScalarType w_dtype;
};

struct Inputs {
  at::Tensor x, W0, A, B, s, b, bias;
};

Inputs make(const Case& c, uint64_t seed) {
  at::manual_seed(seed);
  Inputs in;
  in.x = at::randn({c.tokens, c.in});
  in.W0 = (at::randn({c.out, c.in}) * 0.5).to(c.w_dtype);
  in.A = at::randn({c.rank, c.in}) * 0.3;
  in.B = at::randn({c.out, c.rank}) * 0.3;
  auto so = init_step_offset(in.W0.to(at::kFloat), {c.bits, c.gs}, LsqInit::L4Q);
  in.s = so.s * c.s_shrink;
  in.b = at::randn_like(so.s) * 0.3 * so.s;
  in.bias = c.bias ? at::randn({c.out}) : at::Tensor();
  return in;
}

struct Result {
  at::Tensor y, dx, dA, dB, ds, db;
};

Result run(const Inputs& in, const Case& c, int64_t chunk = 0) {
  auto x = in.x.clone().set_requires_grad(true), A = in.A.clone().set_requires_grad(true),
       B = in.B.clone().set_requires_grad(true), s = in.s.clone().set_requires_grad(true),
       b = in.b.clone().set_requires_grad(true);
  // Ranks of 4 and more: the larger layers count clipped weights in the forward (the backward
  // reads the counts), so a wrong count would show in the gradients.
  auto y = l4q_linear(x, in.W0, A, B, s, b, in.bias, {{c.bits, c.gs}, 2.0, 0.3, chunk});
  at::manual_seed(77);
  (y * at::randn(y.sizes())).sum().backward();
  return {y.detach(), x.grad(), A.grad(), B.grad(), s.grad(), b.grad()};
}

// y in float64 from the same W_q (rounded to fp32 as the BLAS path has it).
at::Tensor reference64(const Inputs& in, const Case& c) {
  const int64_t gs = c.gs > 0 ? c.gs : c.in;
  const auto Wc = in.W0.to(at::kFloat) + 2.0 * at::mm(in.B, in.A);
  const double qn = -std::ldexp(1.0, c.bits - 1), qp = std::ldexp(1.0, c.bits - 1) - 1;
  const auto se = in.s.repeat_interleave(gs, 1), be = in.b.repeat_interleave(gs, 1);
  const auto q = ((Wc - be) / se).clamp(qn, qp).round();
  const auto Wq = q.to(at::kDouble) * se.to(at::kDouble) + be.to(at::kDouble);
  auto y = at::mm(in.x.to(at::kDouble), Wq.t());
  if (c.bias) y = y + in.bias.to(at::kDouble);
  return y;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> cs = {
      {37, 80, 256, 128, 4, 4, 0.6, true, at::kFloat},    // ragged tokens and rows
      {64, 96, 192, 64, 8, 3, 0.5, false, at::kFloat},    // two 32-column steps per group
      {5, 33, 96, 32, 4, 2, 0.7, true, at::kFloat},       // one step per group, 2-bit
      {31, 130, 160, -1, 4, 8, 0.4, false, at::kFloat},   // one group per row, 8-bit
      {40, 300, 2176, 128, 16, 4, 0.8, true, at::kFloat}, // several panels and group blocks
      {19, 48, 128, 64, 4, 4, 0.6, true, at::kBFloat16},  // 16-bit frozen weight
      {23, 48, 128, 32, 4, 3, 0.6, false, at::kHalf},
  };
  return cs;
}

TEST(AmxForward, MatchesTheBlasForwardAndItsGradientsBitForBit) {
  SKIP_WITHOUT_AMX();
  for (const auto& c : cases()) {
    SCOPED_TRACE(testing::Message() << "tokens " << c.tokens << " out " << c.out << " in "
                                    << c.in << " gs " << c.gs << " bits " << c.bits << " W0 "
                                    << c10::toString(c.w_dtype));
    const auto in = make(c, 5);
    Result amx, blas;
    {
      AmxForward on(true);
      amx = run(in, c);
    }
    {
      AmxForward off(false);
      blas = run(in, c);
    }
    const auto ref = reference64(in, c);
    const double e_amx = rel_err(amx.y, ref), e_blas = rel_err(blas.y, ref);
    // The tile path has the rounding of an fp32 dot product (and exact s q + b): as close to
    // the float64 product as BLAS on W_q, within a small factor.
    EXPECT_LT(e_amx, 1e-6);
    EXPECT_LT(e_amx, 4 * e_blas + 1e-7) << "amx " << e_amx << " blas " << e_blas;
    EXPECT_FALSE(at::equal(amx.y, blas.y)) << "the AMX path did not run";
    // The backward does not depend on the forward's product; it reads the forward's clip
    // counts, which both paths take from the same row loops.
    EXPECT_TRUE(at::equal(amx.dx, blas.dx));
    EXPECT_TRUE(at::equal(amx.dA, blas.dA));
    EXPECT_TRUE(at::equal(amx.dB, blas.dB));
    EXPECT_TRUE(at::equal(amx.ds, blas.ds));
    EXPECT_TRUE(at::equal(amx.db, blas.db));
  }
}

// X = I picks one code per output: s q + b, rounded as qmath::dequantize rounds it (a
// multiply, then an add), so the forward gives merge()'s dequantized weight bit for bit.
TEST(AmxForward, IdentityInputGivesTheDequantizedWeightBitForBit) {
  SKIP_WITHOUT_AMX();
  for (int bits : {2, 3, 4, 8})
    for (int64_t gs : {int64_t{32}, int64_t{-1}}) {
      at::manual_seed(13 + bits);
      L4QLinearSpec spec;
      spec.lora = {4, 8.0, 0.0};
      spec.grid = {bits, gs};
      L4QLinear layer(at::randn({45, 96}), at::randn({45}), spec);
      {
        at::NoGradGuard ng;
        const_cast<at::Tensor&>(layer.lora_b()).normal_(0, 0.2);
        const_cast<at::Tensor&>(layer.step()).mul_(0.8);
        const_cast<at::Tensor&>(layer.offset()).normal_(0, 0.01);
      }
      AmxForward on(true);
      at::NoGradGuard ng;
      const auto y = layer.forward(at::eye(96));
      EXPECT_TRUE(at::equal(y, layer.merge().dequantize().t() + layer.bias()))
          << bits << "-bit gs " << gs;
    }
}

TEST(AmxForward, SameBitsForEveryThreadCountAndRowChunk) {
  SKIP_WITHOUT_AMX();
  const Case c = cases()[4];
  const auto in = make(c, 8);
  AmxForward on(true);
  const int threads = at::get_num_threads();
  const auto want = run(in, c, 0).y;
  EXPECT_TRUE(at::equal(run(in, c, 7).y, want));
  at::set_num_threads(1);
  const auto one = run(in, c, 0).y;
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, want));
}

// A weight that is not finite has no code: its panel is multiplied by W_q with BLAS (the same
// NaN where BLAS puts one), the other panels by their codes.
TEST(AmxForward, PanelsWithoutCodesUseTheWeightItself) {
  SKIP_WITHOUT_AMX();
  const int64_t P = cpu::kAmxPanelRows;
  Case c{24, P + 72, 128, 64, 4, 4, 1.0, false, at::kFloat};
  auto in = make(c, 9);
  in.W0[P + 22][3] = std::nan("");
  at::Tensor amx, blas;
  {
    AmxForward on(true);
    amx = run(in, c).y;
  }
  {
    AmxForward off(false);
    blas = run(in, c).y;
  }
  // The second panel's outputs are BLAS's bits, NaN in one column; the first panel's are the
  // tile path's.
  const auto second = amx.narrow(1, P, 72), second_blas = blas.narrow(1, P, 72);
  EXPECT_TRUE(at::equal(second.isnan(), second_blas.isnan()));
  EXPECT_EQ(amx.isnan().sum().item<int64_t>(), c.tokens);
  EXPECT_TRUE(at::equal(second.nan_to_num(0), second_blas.nan_to_num(0)));
  EXPECT_FALSE(at::equal(amx.narrow(1, 0, P), blas.narrow(1, 0, P)));
  EXPECT_LT(rel_err(amx.narrow(1, 0, P), blas.narrow(1, 0, P)), 1e-5);
}

// The split of X into three bfloat16 parts is exact: X1 + X2 + X3 == X, over every magnitude.
TEST(AmxForward, SplitOfXIsExact) {
  SKIP_WITHOUT_AMX();
  const int64_t M = 21, K = 64, gs = 32;
  at::manual_seed(4);
  auto X = at::randn({M, K}) * at::pow(2.0, at::randint(-60, 60, {M, K})).to(at::kFloat);
  std::vector<uint16_t> parts(cpu::amx_parts_elements(M, K));
  const int64_t m32 = 32;
  std::vector<float> xsum(m32 * (K / gs));
  cpu::amx_split_x(X.data_ptr<float>(), M, K, gs, 0, m32 / 16, parts.data(), xsum.data());
  auto widen = [](uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  const float* x = X.data_ptr<float>();
  int64_t inexact = 0;
  for (int64_t m = 0; m < m32; ++m)
    for (int64_t k = 0; k < K; ++k) {
      const uint16_t* t = parts.data() + ((m / 16) * (K / 32) + k / 32) * 3 * 512 + (m % 16) * 32 +
                          k % 32;
      const double sum = double(widen(t[0])) + widen(t[512]) + widen(t[1024]);
      const double want = m < M ? x[m * K + k] : 0.0;
      inexact += sum != want;
      // Each part after the first is at most half an ulp (bfloat16) of the one before.
      if (m < M && t[0] != 0) EXPECT_LE(std::fabs(widen(t[512])), std::fabs(widen(t[0])) / 128);
    }
  EXPECT_EQ(inexact, 0);
}

TEST(AmxForward, SwitchRefusesWhatTheMachineLacks) {
  // The public switch: off, then back to the automatic choice.
  EXPECT_FALSE(set_amx_forward(false));
  EXPECT_FALSE(cpu::amx_enabled());
  const char* env = std::getenv("L4Q_AMX");
  EXPECT_EQ(set_amx_forward(true), cpu::amx_available() && !(env && std::string(env) == "0"));
  if (cpu::amx_available()) {
    cpu::set_amx_enabled(true);
    EXPECT_TRUE(cpu::amx_enabled());
    cpu::set_amx_enabled(false);
    EXPECT_FALSE(cpu::amx_enabled());
    cpu::set_amx_enabled(std::nullopt);
  } else {
    EXPECT_THROW(cpu::set_amx_enabled(true), Error);
    EXPECT_FALSE(cpu::amx_enabled());
  }
}

}  // namespace
}  // namespace l4q
