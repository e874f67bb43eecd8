// The AMX forward of l4q_linear (src/quant/codes_matmul.h): Y from W_q's integer codes on the
// tile unit, against the BLAS forward on W_q and a float64 reference. Skipped where the CPU or
// OS has no AMX-BF16.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
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
struct AmxTiles {
  int64_t saved = detail::amx_min_macs();
  explicit AmxTiles(bool on) {
    detail::amx_min_macs() = 0;
    cpu::set_amx_enabled(on);
  }
  ~AmxTiles() {
    detail::amx_min_macs() = saved;
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
  at::Tensor y, dx, dA, dB, ds, db, dy;  // dy: the upstream gradient
};

Result run(const Inputs& in, const Case& c, int64_t chunk = 0) {
  auto x = in.x.clone().set_requires_grad(true), A = in.A.clone().set_requires_grad(true),
       B = in.B.clone().set_requires_grad(true), s = in.s.clone().set_requires_grad(true),
       b = in.b.clone().set_requires_grad(true);
  // Ranks of 4 and more: the larger layers count clipped weights in the forward (the backward
  // reads the counts), so a wrong count would show in the gradients.
  auto y = l4q_linear(x, in.W0, A, B, s, b, in.bias, {{c.bits, c.gs}, 2.0, 0.3, chunk});
  at::manual_seed(77);
  const auto dy = at::randn(y.sizes());
  (y * dy).sum().backward();
  return {y.detach(), x.grad(), A.grad(), B.grad(), s.grad(), b.grad(), dy};
}

// W_q in float64 from the codes and s, b that l4q_linear uses (its values exactly: s q + b).
at::Tensor weight64(const Inputs& in, const Case& c) {
  const int64_t gs = c.gs > 0 ? c.gs : c.in;
  const auto Wc = in.W0.to(at::kFloat) + 2.0 * at::mm(in.B, in.A);
  const double qn = -std::ldexp(1.0, c.bits - 1), qp = std::ldexp(1.0, c.bits - 1) - 1;
  const auto se = in.s.repeat_interleave(gs, 1), be = in.b.repeat_interleave(gs, 1);
  const auto q = ((Wc - be) / se).clamp(qn, qp).round();
  return q.to(at::kDouble) * se.to(at::kDouble) + be.to(at::kDouble);
}

at::Tensor y64(const Inputs& in, const Case& c) {
  auto y = at::mm(in.x.to(at::kDouble), weight64(in, c).t());
  return c.bias ? y + in.bias.to(at::kDouble) : y;
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

TEST(AmxTiles, MatchTheBlasPathAndFloat64) {
  SKIP_WITHOUT_AMX();
  for (const auto& c : cases()) {
    SCOPED_TRACE(testing::Message() << "tokens " << c.tokens << " out " << c.out << " in "
                                    << c.in << " gs " << c.gs << " bits " << c.bits << " W0 "
                                    << c10::toString(c.w_dtype));
    const auto in = make(c, 5);
    Result amx, blas;
    {
      AmxTiles on(true);
      amx = run(in, c);
    }
    {
      AmxTiles off(false);
      blas = run(in, c);
    }
    // The tile paths have the rounding of fp32 dot products (and exact s q + b, or one
    // rounding of dY s): as close to float64 as BLAS on W_q, within a small factor.
    const auto ref_y = y64(in, c);
    const auto ref_dx = at::mm(amx.dy.to(at::kDouble), weight64(in, c));
    for (const auto& [name, got, base, ref] :
         {std::tuple<const char*, at::Tensor, at::Tensor, at::Tensor>{"y", amx.y, blas.y, ref_y},
          {"dx", amx.dx, blas.dx, ref_dx}}) {
      const double e_amx = rel_err(got, ref), e_blas = rel_err(base, ref);
      EXPECT_LT(e_amx, 1e-6) << name;
      EXPECT_LT(e_amx, 4 * e_blas + 1e-7) << name << ": amx " << e_amx << " blas " << e_blas;
      EXPECT_FALSE(at::equal(got, base)) << name << ": the AMX path did not run";
    }
    // The other gradients come from the backward pass and G, which do not use the tiles; they
    // read the forward's clip counts, which both paths take from the same row loops.
    EXPECT_TRUE(at::equal(amx.dA, blas.dA));
    EXPECT_TRUE(at::equal(amx.dB, blas.dB));
    EXPECT_TRUE(at::equal(amx.ds, blas.ds));
    EXPECT_TRUE(at::equal(amx.db, blas.db));
  }
}

// X = I picks one code per output: s q + b, rounded as qmath::dequantize rounds it (a
// multiply, then an add), so the forward gives merge()'s dequantized weight bit for bit.
TEST(AmxTiles, IdentityInputGivesTheDequantizedWeightBitForBit) {
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
      AmxTiles on(true);
      at::NoGradGuard ng;
      const auto y = layer.forward(at::eye(96));
      EXPECT_TRUE(at::equal(y, layer.merge().dequantize().t() + layer.bias()))
          << bits << "-bit gs " << gs;
    }
}

// A layer's backward takes the path its forward took, whatever the switch says by then.
TEST(AmxTiles, BackwardFollowsItsForward) {
  SKIP_WITHOUT_AMX();
  const Case c = cases()[0];
  const auto in = make(c, 6);
  auto grad_x = [&](bool forward_on, bool backward_on) {
    AmxTiles sw(forward_on);
    auto x = in.x.clone().set_requires_grad(true);
    auto y = l4q_linear(x, in.W0, in.A, in.B, in.s, in.b, in.bias, {{c.bits, c.gs}, 2.0, 0.3, 0});
    cpu::set_amx_enabled(backward_on);
    at::manual_seed(77);
    (y * at::randn(y.sizes())).sum().backward();
    return x.grad();
  };
  const auto tiles = grad_x(true, true), blas = grad_x(false, false);
  EXPECT_FALSE(at::equal(tiles, blas));
  EXPECT_TRUE(at::equal(grad_x(true, false), tiles));
  EXPECT_TRUE(at::equal(grad_x(false, true), blas));
}

TEST(AmxTiles, SameBitsForEveryThreadCountAndRowChunk) {
  SKIP_WITHOUT_AMX();
  const Case c = cases()[4];
  const auto in = make(c, 8);
  AmxTiles on(true);
  const int threads = at::get_num_threads();
  const auto want = run(in, c, 0), blocks = run(in, c, 7);
  at::set_num_threads(1);
  const auto one = run(in, c, 0), one_blocks = run(in, c, 7);
  at::set_num_threads(threads);
  // y: the same bits for any row blocks; dX adds the blocks in turn, as BLAS does, so its
  // bits depend on the blocks but not on the threads.
  EXPECT_TRUE(at::equal(blocks.y, want.y));
  EXPECT_TRUE(at::equal(one.y, want.y));
  EXPECT_TRUE(at::equal(one.dx, want.dx));
  EXPECT_TRUE(at::equal(one_blocks.dx, blocks.dx));
  // 43 blocks of 7 rows (ragged 32-row steps) against float64.
  const auto ref_dx = at::mm(blocks.dy.to(at::kDouble), weight64(in, c));
  EXPECT_LT(rel_err(blocks.dx, ref_dx), 1e-6);
}

// A weight that is not finite has no code: its forward panel and its input-gradient slab are
// multiplied by W_q with BLAS (the same NaN where BLAS puts one), the others by their codes.
TEST(AmxTiles, PanelsWithoutCodesUseTheWeightItself) {
  SKIP_WITHOUT_AMX();
  const int64_t P = cpu::kAmxPanelRows;
  Case c{24, P + 72, 192, 64, 4, 4, 1.0, false, at::kFloat};  // input-gradient slabs: 3 x 64
  const int threads = at::get_num_threads();
  // The NaN's slab first on its thread (packed alone), or second (packed while the first
  // multiplies), on one thread and on two.
  for (const int64_t col : {int64_t{3}, int64_t{70}})
    for (const int nt : {1, threads}) {
      SCOPED_TRACE(testing::Message() << "NaN in column " << col << ", " << nt << " threads");
      auto in = make(c, 9);
      in.W0[P + 22][col] = std::nan("");
      at::set_num_threads(nt);
      Result amx_r, blas_r;
      {
        AmxTiles on(true);
        amx_r = run(in, c);
      }
      {
        AmxTiles off(false);
        blas_r = run(in, c);
      }
      at::set_num_threads(threads);
      // dX: one column NaN; its slab is BLAS's bits, the others the tiles'.
      const int64_t bad = col / 64;
      for (int64_t sl = 0; sl < 3; ++sl) {
        const auto got = amx_r.dx.narrow(1, sl * 64, 64), want = blas_r.dx.narrow(1, sl * 64, 64);
        if (sl == bad) {
          EXPECT_TRUE(at::equal(got.isnan(), want.isnan()));
          EXPECT_TRUE(at::equal(got.nan_to_num(0), want.nan_to_num(0)));
        } else {
          EXPECT_FALSE(at::equal(got, want)) << "slab " << sl;
          EXPECT_LT(rel_err(got, want), 1e-5) << "slab " << sl;
        }
      }
      EXPECT_EQ(amx_r.dx.isnan().sum().item<int64_t>(), c.tokens);
      // y: the second panel's outputs are BLAS's bits, NaN in one column; the first panel's
      // are the tiles'.
      const auto &amx = amx_r.y, &blas = blas_r.y;
      const auto second = amx.narrow(1, P, 72), second_blas = blas.narrow(1, P, 72);
      EXPECT_TRUE(at::equal(second.isnan(), second_blas.isnan()));
      EXPECT_EQ(amx.isnan().sum().item<int64_t>(), c.tokens);
      EXPECT_TRUE(at::equal(second.nan_to_num(0), second_blas.nan_to_num(0)));
      EXPECT_FALSE(at::equal(amx.narrow(1, 0, P), blas.narrow(1, 0, P)));
      EXPECT_LT(rel_err(amx.narrow(1, 0, P), blas.narrow(1, 0, P)), 1e-5);
    }
}

// The split of X into three bfloat16 parts is exact: X1 + X2 + X3 == X, over every magnitude.
TEST(AmxTiles, SplitOfXIsExact) {
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

TEST(AmxTiles, SwitchRefusesWhatTheMachineLacks) {
  // The public switch: off, then back to the automatic choice.
  EXPECT_FALSE(set_amx_tiles(false));
  EXPECT_FALSE(cpu::amx_enabled());
  const char* env = std::getenv("L4Q_AMX");
  EXPECT_EQ(set_amx_tiles(true), cpu::amx_available() && !(env && std::string(env) == "0"));
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
