// The L4Q linear layer against independent references: autograd of a plain composite written
// with the detach trick (STE), float64 finite differences of the STE surrogate, and explicit
// checks that each defect of the public reproduction code (../shared/reference/L4Q.md) is
// absent.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/memory.h"
#include "l4q/nn/l4q_linear.h"
#include "nn/l4q_linear_tuning.h"
#include "quant/merged_rows.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::rel_err;

// ---------------------------------------------------------------------------------------
// Reference: plain composite. grad scale via s*g + (s - s*g).detach(); round via the detach
// trick; clamp's own gradient is the STE gate M (torch passes grad for min <= x <= max).
// ---------------------------------------------------------------------------------------
at::Tensor ref_fake_quant(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                          int bits, int64_t gs, double g) {
  const double qn = -std::ldexp(1.0, bits - 1), qp = std::ldexp(1.0, bits - 1) - 1;
  const auto sg = s * g + (s - s * g).detach();
  const auto bg = b * g + (b - b * g).detach();
  const auto se = sg.repeat_interleave(gs, 1), be = bg.repeat_interleave(gs, 1);
  const auto w = (W - be) / se;
  const auto wc = w.clamp(qn, qp);
  const auto wr = wc + (wc.round() - wc).detach();
  return wr * se + be;
}

struct Case {
  int64_t out, in, gs, rank;
  int bits;
  std::vector<int64_t> xshape;  // leading dims of x
  bool bias;
  int64_t chunk;
  double s_shrink;  // < 1 forces clipping at both ends
};

struct Inputs {
  at::Tensor x, W0, A, B, s, b, bias;
};

Inputs make_inputs(const Case& c, at::ScalarType dt, uint64_t seed) {
  at::manual_seed(seed);
  const auto o = at::TensorOptions().dtype(dt);
  Inputs in;
  auto xs = c.xshape;
  xs.push_back(c.in);
  in.x = at::randn(xs, o);
  in.W0 = at::randn({c.out, c.in}, o) * 0.5;
  in.A = at::randn({c.rank, c.in}, o) * 0.3;
  in.B = at::randn({c.out, c.rank}, o) * 0.3;
  const QuantGrid grid{c.bits, c.gs};
  auto so = init_step_offset(in.W0, grid, LsqInit::L4Q);
  in.s = (so.s * c.s_shrink).to(dt);
  in.b = (at::randn_like(so.s) * 0.1 * so.s).to(dt);
  in.bias = c.bias ? at::randn({c.out}, o) : at::Tensor();
  return in;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> cs = {
      {13, 24, 8, 3, 3, {2, 5}, true, 4, 0.6},   // 3-D input, bias, ragged last block
      {16, 32, 16, 2, 2, {7}, false, 16, 0.5},   // 2-bit
      {9, 40, 40, 4, 4, {3}, true, 2, 0.7},      // one group per row
      {11, 64, 32, 1, 8, {1, 1, 4}, false, 256, 0.3},  // 8-bit, chunk > out
      {6, 16, 4, 5, 4, {4}, true, 1, 0.8},       // chunk 1, rank > out
  };
  return cs;
}

// Runs a test body with layers of up to `n` weights summing their LoRA gradients directly
// (0: every layer takes the unmasked-GEMMs-minus-corrections path), then restores the default.
struct DirectThreshold {
  int64_t saved = detail::lora_direct_max_elements();
  explicit DirectThreshold(int64_t n) { detail::lora_direct_max_elements() = n; }
  ~DirectThreshold() { detail::lora_direct_max_elements() = saved; }
};

class LoraRegimes : public testing::TestWithParam<int64_t> {};
INSTANTIATE_TEST_SUITE_P(L4QLinear, LoraRegimes, testing::Values(int64_t(0), int64_t(1) << 16),
                         [](const auto& info) {
                           return info.param == 0 ? std::string("Corrections")
                                                  : std::string("SmallLayerDirect");
                         });

TEST_P(LoraRegimes, GradientsMatchAutogradCompositeFp64) {
  const DirectThreshold th(GetParam());
  for (const auto& c : cases()) {
    SCOPED_TRACE(testing::Message() << "out " << c.out << " in " << c.in << " gs " << c.gs
                                    << " bits " << c.bits << " chunk " << c.chunk);
    auto in = make_inputs(c, at::kDouble, 1);
    const double scale = 2.0 / c.rank, g = 0.37;
    // Our op.
    std::vector<at::Tensor> ours_p = {in.x.clone(), in.A.clone(), in.B.clone(), in.s.clone(),
                                      in.b.clone()};
    at::Tensor ours_bias = c.bias ? in.bias.clone() : at::Tensor();
    for (auto& t : ours_p) t.set_requires_grad(true);
    if (c.bias) ours_bias.set_requires_grad(true);
    L4QOptions opt{{c.bits, c.gs}, scale, g, c.chunk};
    auto y = l4q_linear(ours_p[0], in.W0, ours_p[1], ours_p[2], ours_p[3], ours_p[4], ours_bias,
                        opt);
    const auto R = at::randn_like(y);
    (y * R).sum().backward();
    // Reference.
    std::vector<at::Tensor> ref_p = {in.x.clone(), in.A.clone(), in.B.clone(), in.s.clone(),
                                     in.b.clone()};
    at::Tensor ref_bias = c.bias ? in.bias.clone() : at::Tensor();
    for (auto& t : ref_p) t.set_requires_grad(true);
    if (c.bias) ref_bias.set_requires_grad(true);
    const auto Wc = in.W0 + scale * at::mm(ref_p[2], ref_p[1]);
    const auto Wq = ref_fake_quant(Wc, ref_p[3], ref_p[4], c.bits, c.gs, g);
    auto yr = at::matmul(ref_p[0], Wq.t());
    if (c.bias) yr = yr + ref_bias;
    (yr * R).sum().backward();

    // The case must exercise clipping at both ends, or the STE gate is untested.
    const auto w = ((Wc - in.b.repeat_interleave(c.gs, 1)) / in.s.repeat_interleave(c.gs, 1))
                       .detach();
    EXPECT_GT((w < -std::ldexp(1.0, c.bits - 1)).sum().item<int64_t>(), 0);
    EXPECT_GT((w > std::ldexp(1.0, c.bits - 1) - 1).sum().item<int64_t>(), 0);

    EXPECT_LT(rel_err(y, yr), 1e-12);
    const char* names[] = {"x", "A", "B", "s", "b"};
    for (size_t i = 0; i < ours_p.size(); ++i) {
      ASSERT_TRUE(ours_p[i].grad().defined()) << names[i];
      EXPECT_LT(rel_err(ours_p[i].grad(), ref_p[i].grad()), 1e-10) << "grad of " << names[i];
    }
    if (c.bias) EXPECT_LT(rel_err(ours_bias.grad(), ref_bias.grad()), 1e-12);
  }
}

// Defect 1 of the public code: gradients taken from x[0] and grad_out[0] only.
TEST_P(LoraRegimes, MicroBatchGradientIsSumOfPerSampleGradients) {
  const DirectThreshold th(GetParam());
  const Case c{12, 32, 8, 4, 3, {3, 4}, true, 5, 0.6};
  auto in = make_inputs(c, at::kDouble, 2);
  L4QOptions opt{{c.bits, c.gs}, 4.0, 0.0, c.chunk};
  const auto R = at::randn({3, 4, c.out}, at::kDouble);
  auto run = [&](const at::Tensor& x, const at::Tensor& r) {
    auto A = in.A.clone().set_requires_grad(true), B = in.B.clone().set_requires_grad(true);
    auto s = in.s.clone().set_requires_grad(true), b = in.b.clone().set_requires_grad(true);
    auto xx = x.clone().set_requires_grad(true);
    (l4q_linear(xx, in.W0, A, B, s, b, in.bias, opt) * r).sum().backward();
    return std::vector<at::Tensor>{A.grad(), B.grad(), s.grad(), b.grad(), xx.grad()};
  };
  const auto full = run(in.x, R);
  std::vector<at::Tensor> summed;
  for (int64_t i = 0; i < 3; ++i) {
    const auto one = run(in.x.narrow(0, i, 1), R.narrow(0, i, 1));
    for (size_t k = 0; k < 4; ++k) {
      if (summed.size() <= k) summed.push_back(one[k].clone());
      else summed[k] += one[k];
    }
    EXPECT_LT(rel_err(full[4].narrow(0, i, 1), one[4]), 1e-13);  // dX per sample
  }
  for (size_t k = 0; k < 4; ++k) EXPECT_LT(rel_err(full[k], summed[k]), 1e-12) << k;
  // And the per-sample gradients really differ, so the sum is not trivially equal.
  EXPECT_GT(rel_err(run(in.x.narrow(0, 0, 1), R.narrow(0, 0, 1))[0], full[0]), 1e-3);
}

// Defect 2: the STE gate must apply to the LoRA gradients. With every weight clipped, the
// merged weight gets no gradient at all, so dA = dB = 0, while ds, db do not vanish.
TEST_P(LoraRegimes, ClippedWeightsGiveNoLoraGradient) {
  const DirectThreshold th(GetParam());
  const Case c{8, 16, 8, 2, 3, {5}, false, 3, 1.0};
  auto in = make_inputs(c, at::kFloat, 3);
  auto A = in.A.clone().set_requires_grad(true), B = in.B.clone().set_requires_grad(true);
  auto s = at::full_like(in.s, 1e-4).set_requires_grad(true);
  auto b = at::full_like(in.b, 100.0).set_requires_grad(true);  // everything below Qn
  auto y = l4q_linear(in.x, in.W0, A, B, s, b, at::Tensor(), {{c.bits, c.gs}, 1.0, 0.0, 3});
  y.sum().backward();
  EXPECT_EQ(A.grad().abs().max().item<float>(), 0.f);
  EXPECT_EQ(B.grad().abs().max().item<float>(), 0.f);
  EXPECT_GT(b.grad().abs().max().item<float>(), 0.f);
  EXPECT_GT(s.grad().abs().max().item<float>(), 0.f);
}

// Defect 3: dX must use the full W_q = w_int * s + b (with the offset).
TEST(L4QLinear, InputGradientUsesQuantizedWeightWithOffset) {
  const Case c{10, 24, 6, 2, 4, {7}, false, 4, 0.9};
  auto in = make_inputs(c, at::kDouble, 4);
  in.b = in.b + 0.05;  // a clearly non-zero offset
  auto x = in.x.clone().set_requires_grad(true);
  L4QOptions opt{{c.bits, c.gs}, 1.5, 0.0, c.chunk};
  auto y = l4q_linear(x, in.W0, in.A, in.B, in.s, in.b, at::Tensor(), opt);
  const auto R = at::randn_like(y);
  (y * R).sum().backward();
  const auto Wc = in.W0 + 1.5 * at::mm(in.B, in.A);
  const auto Wq = quantize_weight(Wc, in.s, in.b, opt.grid).dequantize();
  EXPECT_LT(rel_err(x.grad(), at::mm(R, Wq)), 1e-13);
}

// Defect 4: the offset gradient is a sum over each group of consecutive input weights.
TEST(L4QLinear, OffsetGradientIsGroupSumOverClippedElements) {
  const Case c{5, 12, 4, 2, 2, {6}, false, 2, 0.5};
  auto in = make_inputs(c, at::kDouble, 5);
  auto b = in.b.clone().set_requires_grad(true);
  const double g = 0.25;
  L4QOptions opt{{c.bits, c.gs}, 1.0, g, c.chunk};
  auto y = l4q_linear(in.x, in.W0, in.A, in.B, in.s, b, at::Tensor(), opt);
  const auto R = at::randn_like(y);
  (y * R).sum().backward();
  const auto Wc = in.W0 + at::mm(in.B, in.A);
  const auto G = at::mm(R.t(), in.x);  // dL/dW_q
  const auto w = (Wc - in.b.repeat_interleave(c.gs, 1)) / in.s.repeat_interleave(c.gs, 1);
  const auto outside = ((w < -2) | (w > 1)).to(at::kDouble);
  const auto expect = (G * outside).view({c.out, c.in / c.gs, c.gs}).sum(-1) * g;
  EXPECT_LT(rel_err(b.grad(), expect), 1e-12);
}

// Defect 6: s at 0 or below must not produce NaN/Inf, and projection restores s >= eps.
TEST(L4QLinear, StepSizeIsGuarded) {
  const Case c{6, 16, 8, 2, 3, {4}, false, 6, 1.0};
  auto in = make_inputs(c, at::kFloat, 6);
  auto s = in.s.clone();
  s[0][0] = 0.f;
  s[1][1] = -0.5f;
  s.set_requires_grad(true);
  auto A = in.A.clone().set_requires_grad(true);
  auto y = l4q_linear(in.x, in.W0, A, in.B, s, in.b, at::Tensor(), {{3, 8}, 1.0, 0.0, 6});
  y.sum().backward();
  EXPECT_TRUE(at::isfinite(y).all().item<bool>());
  EXPECT_TRUE(at::isfinite(s.grad()).all().item<bool>());
  EXPECT_TRUE(at::isfinite(A.grad()).all().item<bool>());
  project_step_(s);
  EXPECT_GE(s.min().item<double>(), min_step() * (1 - 1e-6));
}

// Finite differences of the STE surrogate (round's offset frozen at the evaluation point) in
// float64: an independent check of ds and db that does not use autograd at all.
TEST(L4QLinear, StepAndOffsetGradientsMatchFiniteDifferences) {
  const Case c{7, 20, 5, 3, 3, {9}, false, 3, 0.7};
  auto in = make_inputs(c, at::kDouble, 7);
  const double scale = 0.8, g = 1.0;
  const auto Wc = in.W0 + scale * at::mm(in.B, in.A);
  const double qn = -4, qp = 3;
  const auto wc0 = ((Wc - in.b.repeat_interleave(c.gs, 1)) / in.s.repeat_interleave(c.gs, 1))
                       .clamp(qn, qp);
  const auto frozen = wc0.round() - wc0;  // round(w) = w + frozen near the evaluation point
  const auto R = at::randn({9, c.out}, at::kDouble);
  auto loss = [&](const at::Tensor& s, const at::Tensor& b) {
    const auto se = s.repeat_interleave(c.gs, 1), be = b.repeat_interleave(c.gs, 1);
    const auto Wq = (((Wc - be) / se).clamp(qn, qp) + frozen) * se + be;
    return (at::mm(in.x, Wq.t()) * R).sum().item<double>();
  };
  auto s = in.s.clone().set_requires_grad(true), b = in.b.clone().set_requires_grad(true);
  auto y = l4q_linear(in.x, in.W0, in.A, in.B, s, b, at::Tensor(), {{c.bits, c.gs}, scale, g, 3});
  (y * R).sum().backward();
  const double h = 1e-7;
  int checked = 0;
  for (int64_t i = 0; i < c.out; ++i) {
    for (int64_t k = 0; k < c.in / c.gs; ++k) {
      // Skip groups with an element within 1e-4 of a clamp edge: there the surrogate has a
      // kink and a central difference straddles it.
      const auto wg = ((Wc[i].narrow(0, k * c.gs, c.gs) - in.b[i][k]) / in.s[i][k]);
      const auto near_edge = ((wg - qn).abs() < 1e-4) | ((wg - qp).abs() < 1e-4);
      if (near_edge.any().item<bool>()) continue;
      for (int which = 0; which < 2; ++which) {
        auto sp = in.s.clone(), sm = in.s.clone(), bp = in.b.clone(), bm = in.b.clone();
        auto& tp = which == 0 ? sp : bp;
        auto& tm = which == 0 ? sm : bm;
        tp[i][k] += h;
        tm[i][k] -= h;
        const double fd = (loss(sp, bp) - loss(sm, bm)) / (2 * h);
        const double an = (which == 0 ? s.grad() : b.grad())[i][k].item<double>();
        EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::abs(fd))) << (which ? "b" : "s") << i << "," << k;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 10);
}

TEST(L4QLinear, GradientScaleIsRespected) {
  const Case c{8, 32, 16, 2, 4, {5}, false, 8, 0.7};
  auto in = make_inputs(c, at::kDouble, 8);
  auto grads = [&](double g) {
    auto s = in.s.clone().set_requires_grad(true), b = in.b.clone().set_requires_grad(true);
    auto A = in.A.clone().set_requires_grad(true);
    l4q_linear(in.x, in.W0, A, in.B, s, b, at::Tensor(), {{c.bits, c.gs}, 1.0, g, 8}).sum().backward();
    return std::vector<at::Tensor>{s.grad(), b.grad(), A.grad()};
  };
  const auto one = grads(1.0), half = grads(0.5), dflt = grads(0.0);
  EXPECT_LT(rel_err(half[0], one[0] * 0.5), 1e-14);
  EXPECT_LT(rel_err(half[1], one[1] * 0.5), 1e-14);
  EXPECT_LT(rel_err(half[2], one[2]), 1e-14);  // the scale touches s and b only
  const double lsq = 1.0 / std::sqrt(16.0 * 7.0);
  EXPECT_DOUBLE_EQ(lsq_grad_scale({4, 16}, 32), lsq);
  EXPECT_LT(rel_err(dflt[0], one[0] * lsq), 1e-14);
  EXPECT_LT(rel_err(dflt[1], one[1] * lsq), 1e-14);
}

TEST_P(LoraRegimes, ChunkSizeDoesNotChangeResults) {
  const DirectThreshold th(GetParam());
  const Case c{37, 48, 16, 4, 3, {2, 6}, true, 0, 0.7};
  auto in = make_inputs(c, at::kFloat, 9);
  auto run = [&](int64_t chunk) {
    auto x = in.x.clone().set_requires_grad(true), A = in.A.clone().set_requires_grad(true);
    auto B = in.B.clone().set_requires_grad(true), s = in.s.clone().set_requires_grad(true);
    auto b = in.b.clone().set_requires_grad(true);
    auto y = l4q_linear(x, in.W0, A, B, s, b, in.bias, {{c.bits, c.gs}, 2.0, 0.0, chunk});
    (y * y).sum().backward();
    return std::vector<at::Tensor>{y.detach(), x.grad(), A.grad(), B.grad(), s.grad(), b.grad()};
  };
  const auto ref = run(37);
  // With OpenBLAS (Debian's libtorch) a GEMM's element does not depend on how many rows the
  // call has, so the output and the per-row gradients are bit-identical across block sizes.
  // MKL (official LibTorch) picks kernels by shape and differs in the last bits: there we
  // check a tight tolerance instead.
  const bool exact = !at::hasMKL();
  for (int64_t chunk : {0, 1, 5, 16, 100}) {  // 0: automatic
    const auto got = run(chunk);
    if (exact) EXPECT_TRUE(at::equal(got[0], ref[0])) << "chunk " << chunk;
    EXPECT_LT(rel_err(got[0], ref[0]), 1e-6) << "chunk " << chunk;
    // Gradients summed over row blocks (dX, dA) may differ in the last bits of fp32.
    for (size_t k = 1; k < got.size(); ++k)
      EXPECT_LT(rel_err(got[k], ref[k]), 1e-5) << "chunk " << chunk << " grad " << k;
    if (exact) {
      EXPECT_TRUE(at::equal(got[3], ref[3]));  // dB rows come from one block each
      EXPECT_TRUE(at::equal(got[4], ref[4]));
      EXPECT_TRUE(at::equal(got[5], ref[5]));
    }
  }
}

// Full LSQ QAT uses the same op with W0 trainable: dW = M * G.
TEST(L4QLinear, WeightGradientForFullQat) {
  const Case c{9, 16, 8, 1, 3, {4}, false, 4, 0.6};
  auto in = make_inputs(c, at::kDouble, 10);
  auto W = in.W0.clone().set_requires_grad(true);
  auto Wr = in.W0.clone().set_requires_grad(true);
  auto y = l4q_linear(in.x, W, at::Tensor(), at::Tensor(), in.s, in.b, at::Tensor(),
                      {{c.bits, c.gs}, 1.0, 0.0, c.chunk});
  const auto R = at::randn_like(y);
  (y * R).sum().backward();
  (at::mm(in.x, ref_fake_quant(Wr, in.s, in.b, c.bits, c.gs, 1.0).t()) * R).sum().backward();
  EXPECT_LT(rel_err(W.grad(), Wr.grad()), 1e-12);
}

TEST(L4QLinear, FakeQuantizeMatchesComposite) {
  at::manual_seed(11);
  auto W = (at::randn({6, 24}, at::kDouble)).set_requires_grad(true);
  auto Wr = W.detach().clone().set_requires_grad(true);
  const QuantGrid grid{3, 8};
  auto so = init_step_offset(W.detach(), grid, LsqInit::MinMax);
  auto s = (so.s * 0.7).set_requires_grad(true), b = so.b.clone().set_requires_grad(true);
  auto sr = s.detach().clone().set_requires_grad(true), br = b.detach().clone().set_requires_grad(true);
  const auto R = at::randn({6, 24}, at::kDouble);
  auto y = fake_quantize(W, s, b, grid, 0.5);
  (y * R).sum().backward();
  auto yr = ref_fake_quant(Wr, sr, br, 3, 8, 0.5);
  (yr * R).sum().backward();
  EXPECT_LT(rel_err(y, yr), 1e-14);
  EXPECT_LT(rel_err(W.grad(), Wr.grad()), 1e-14);
  EXPECT_LT(rel_err(s.grad(), sr.grad()), 1e-12);
  EXPECT_LT(rel_err(b.grad(), br.grad()), 1e-12);
}

// Nothing of size out x in survives from forward to backward, and the transients inside
// forward and backward are bounded by row_chunk x in, not out x in.
TEST(L4QLinear, MemoryIsBoundedByRowChunk) {
  const int64_t out = 1024, in = 256, chunk = 32, tokens = 8, rank = 4;
  at::manual_seed(12);
  auto W0 = at::randn({out, in});
  auto A = (at::randn({rank, in}) * 0.1).set_requires_grad(true);
  auto B = (at::randn({out, rank}) * 0.1).set_requires_grad(true);
  auto so = init_step_offset(W0, {4, 64}, LsqInit::L4Q);
  auto s = so.s.set_requires_grad(true), b = so.b.set_requires_grad(true);
  auto x = at::randn({tokens, in}).set_requires_grad(true);
  const int64_t full = out * in * 4, block = chunk * in * 4;
  MemoryMeter counter;
  release_l4q_workspace();  // a buffer cached by an earlier test would not be counted
  auto y = l4q_linear(x, W0, A, B, s, b, at::Tensor(), {{4, 64}, 4.0, 0.0, chunk});
  // What stays alive: y and the cached row-block buffer (one block), nothing out x in.
  const int64_t with_workspace = counter.live_bytes() - y.numel() * 4;
  EXPECT_GE(with_workspace, block);
  EXPECT_LT(with_workspace, 2 * block);
  release_l4q_workspace();
  const int64_t after_forward = counter.live_bytes() - y.numel() * 4;
  EXPECT_LT(after_forward, block) << "forward kept a large tensor alive for backward";
  EXPECT_LT(counter.peak_bytes(), 2 * block + out * tokens * 4 * 2);
  counter.reset_peak();
  const auto base = counter.live_bytes();
  y.sum().backward();
  const int64_t grads = (A.numel() + B.numel() + s.numel() + b.numel() + x.numel()) * 4;
  // One block buffer (G, with W_q written over it) and the gradients.
  EXPECT_LT(counter.peak_bytes() - base, 2 * block + grads + out * tokens * 4 * 2);
  EXPECT_LT(2 * block + grads + out * tokens * 4 * 2, full / 2);  // the bound means something
}

TEST(L4QLinear, MergeDequantizesToTheForwardWeightBitForBit) {
  for (int bits : {2, 3, 4, 8}) {
    for (int64_t gs : {int64_t{8}, int64_t{-1}}) {
      at::manual_seed(13 + bits);
      L4QLinearSpec spec;
      spec.lora = {4, 8.0, 0.0};
      spec.grid = {bits, gs};
      spec.row_chunk = 5;
      L4QLinear layer(at::randn({21, 32}), at::randn({21}), spec);
      {
        at::NoGradGuard ng;  // give B and s, b non-trivial values
        const_cast<at::Tensor&>(layer.lora_b()).normal_(0, 0.2);
        const_cast<at::Tensor&>(layer.step()).mul_(0.8);
        const_cast<at::Tensor&>(layer.offset()).normal_(0, 0.01);
      }
      at::NoGradGuard ng;
      // x = I gives y = W_q^T + bias, exactly (adding zeros and multiplying by one is exact).
      const auto y = layer.forward(at::eye(32));
      const auto m = layer.merge();
      const auto wq = m.dequantize();
      EXPECT_TRUE(at::equal(y, wq.t() + layer.bias())) << bits << "-bit gs " << gs;
      EXPECT_EQ(m.w_int.scalar_type(), at::kChar);
      EXPECT_GE(m.w_int.min().item<int>(), -(1 << (bits - 1)));
      EXPECT_LE(m.w_int.max().item<int>(), (1 << (bits - 1)) - 1);
      const auto q = m.unsigned_codes();
      EXPECT_EQ(q.max().item<int>() <= (1 << bits) - 1, true);
      const auto gsr = m.grid.group_size;
      const auto alt = q.to(at::kFloat) * m.s.repeat_interleave(gsr, 1) +
                       m.min_offset().repeat_interleave(gsr, 1);
      EXPECT_LT(rel_err(alt, wq), 1e-5);
    }
  }
}

TEST(L4QLinear, InitQuantizerFromMergedWeightAfterWarmup) {
  at::manual_seed(14);
  L4QLinearSpec spec;
  spec.grid = {4, 16};
  L4QLinear layer(at::randn({8, 32}), at::Tensor(), spec);
  {
    at::NoGradGuard ng;
    const_cast<at::Tensor&>(layer.lora_b()).normal_(0, 1.0);
  }
  layer.init_quantizer(LsqInit::L4Q);
  const auto expect = init_step_offset(layer.merged_float_weight(), spec.grid, LsqInit::L4Q);
  EXPECT_TRUE(at::equal(layer.step().detach(), expect.s));
  EXPECT_TRUE(layer.step().requires_grad());
}

TEST(L4QLinear, RejectsBadConfiguration) {
  const auto W = at::randn({8, 32});
  auto make = [&](auto edit) {
    L4QLinearSpec spec;
    spec.grid = {4, 16};
    edit(spec);
    return [spec, W] { L4QLinear layer(W, at::Tensor(), spec); };
  };
  test::expect_error(make([](L4QLinearSpec& s) { s.grid.bits = 9; }), {"quant.bits", "2..8", "9"});
  test::expect_error(make([](L4QLinearSpec& s) { s.grid.bits = 1; }), {"quant.bits", "1"});
  test::expect_error(make([](L4QLinearSpec& s) { s.grid.group_size = 12; }),
                     {"quant.group_size", "12", "32"});
  test::expect_error(make([](L4QLinearSpec& s) { s.lora.rank = 0; }), {"lora.rank", "0"});
  test::expect_error(make([](L4QLinearSpec& s) { s.lora.alpha = -1; }), {"lora.alpha"});
  test::expect_error(make([](L4QLinearSpec& s) { s.lora.dropout = 0.1; }), {"lora.dropout"});
  test::expect_error(make([](L4QLinearSpec& s) { s.row_chunk = -1; }), {"row_chunk", "-1"});
  auto Wnan = W.clone();
  Wnan[3][4] = NAN;
  test::expect_error([&] { L4QLinear l(Wnan, at::Tensor(), L4QLinearSpec{{4, 8.0, 0}, {4, 16}}); },
                     {"weight", "NaN"});
  test::expect_error([&] { L4QLinear l(W, at::randn({7}), L4QLinearSpec{{4, 8.0, 0}, {4, 16}}); },
                     {"bias", "[8]", "[7]"});
  // The functional op checks shapes.
  auto so = init_step_offset(W, {4, 16}, LsqInit::L4Q);
  const L4QOptions opt{{4, 16}, 1.0, 0.0, 4};
  test::expect_error([&] { l4q_linear(at::randn({3, 31}), W, {}, {}, so.s, so.b, {}, opt); },
                     {"'x'", "32", "31"});
  test::expect_error([&] {
    l4q_linear(at::randn({3, 32}), W, at::randn({2, 32}), at::randn({8, 3}), so.s, so.b, {}, opt);
  }, {"'B'", "[8, 2]", "[8, 3]"});
  test::expect_error([&] {
    l4q_linear(at::randn({3, 32}), W, {}, {}, so.s.narrow(1, 0, 1), so.b, {}, opt);
  }, {"'s'", "[8, 2]", "[8, 1]"});
  test::expect_error([&] {
    l4q_linear(at::randn({3, 32}, at::kDouble), W, {}, {}, so.s, so.b, {}, opt);
  }, {"'x'", "dtype"});
}

// The LoRA gradients are computed as unmasked rank-r products minus corrections from the clipped
// weights, except in rows the forward found more than a quarter clipped, which are summed
// directly (cpu::merged_quantize_backward_rows). Rows here span both regimes: no clipping, a
// few clipped, about half, all.
struct MixedRows {
  static inline const Case kCase{40, 64, 16, 4, 3, {6, 3}, true, 7, 1.0};
  Case c;
  Inputs in;
  // The same values (drawn in fp64) in either dtype.
  explicit MixedRows(at::ScalarType dt, const Case& shape = kCase)
      : c(shape), in(make_inputs(c, at::kDouble, 21)) {
    // Per-row step factors: 1 keeps every weight in range (L4Q init), < 1 clips more and more.
    const double f[] = {1.0, 0.93, 0.8, 0.45, 0.2, 1e-3};
    auto rowf = at::empty({c.out, 1}, at::kDouble);
    for (int64_t i = 0; i < c.out; ++i) rowf[i][0] = f[i % 6];
    in.s = (in.s * rowf).contiguous();
    in.b = in.b * 0.1;
    for (auto* t : {&in.x, &in.W0, &in.A, &in.B, &in.s, &in.b, &in.bias}) *t = t->to(dt);
  }
  // Fraction of clipped weights per row, for the merged weight at these inputs.
  at::Tensor clipped_per_row(double scale) const {
    const auto Wc = (in.W0 + scale * at::mm(in.B, in.A)).to(at::kDouble);
    const auto w = (Wc - in.b.to(at::kDouble).repeat_interleave(c.gs, 1)) /
                   in.s.to(at::kDouble).repeat_interleave(c.gs, 1);
    const double qn = -std::ldexp(1.0, c.bits - 1), qp = std::ldexp(1.0, c.bits - 1) - 1;
    return ((w < qn) | (w > qp)).to(at::kDouble).mean(1);
  }
  std::vector<at::Tensor> run(double scale, double g) const {
    auto x = in.x.clone().set_requires_grad(true), A = in.A.clone().set_requires_grad(true);
    auto B = in.B.clone().set_requires_grad(true), s = in.s.clone().set_requires_grad(true);
    auto b = in.b.clone().set_requires_grad(true);
    auto y = l4q_linear(x, in.W0, A, B, s, b, in.bias, {{c.bits, c.gs}, scale, g, c.chunk});
    at::manual_seed(5);
    (y * at::randn(y.sizes(), at::kDouble).to(y.scalar_type())).sum().backward();
    return {y.detach(), x.grad(), A.grad(), B.grad(), s.grad(), b.grad()};
  }
};

TEST_P(LoraRegimes, LoraGradientsExactInEveryClippingRegimeFp64) {
  const DirectThreshold th(GetParam());
  const MixedRows m(at::kDouble);
  const double scale = 0.5, g = 0.25;
  const auto frac = m.clipped_per_row(scale);
  // Both regimes present: rows with a few clipped weights (corrections) and rows over a
  // quarter clipped (summed directly), plus fully clipped rows.
  EXPECT_GT(((frac > 0) & (frac < 0.25)).sum().item<int64_t>(), 0);
  EXPECT_GT((frac > 0.25).sum().item<int64_t>(), 0);
  EXPECT_GT((frac == 1.0).sum().item<int64_t>(), 0);
  const auto got = m.run(scale, g);
  // Reference: the plain composite.
  auto x = m.in.x.clone().set_requires_grad(true), A = m.in.A.clone().set_requires_grad(true);
  auto B = m.in.B.clone().set_requires_grad(true), s = m.in.s.clone().set_requires_grad(true);
  auto b = m.in.b.clone().set_requires_grad(true);
  const auto Wq = ref_fake_quant(m.in.W0 + scale * at::mm(B, A), s, b, m.c.bits, m.c.gs, g);
  auto yr = at::matmul(x, Wq.t()) + m.in.bias;
  at::manual_seed(5);
  (yr * at::randn(yr.sizes(), at::kDouble)).sum().backward();
  const std::vector<at::Tensor> want = {yr.detach(), x.grad(), A.grad(), B.grad(), s.grad(),
                                        b.grad()};
  const char* names[] = {"y", "x", "A", "B", "s", "b"};
  for (size_t k = 0; k < want.size(); ++k)
    EXPECT_LT(rel_err(got[k], want[k]), 1e-12) << names[k];
  // A fully clipped row gets exactly no B gradient (summed directly, nothing subtracted).
  for (int64_t i = 0; i < m.c.out; ++i)
    if (frac[i].item<double>() == 1.0) EXPECT_EQ(got[3][i].abs().max().item<double>(), 0.0) << i;
}

TEST_P(LoraRegimes, LoraGradientsFp32CloseToFp64InEveryClippingRegime) {
  const DirectThreshold th(GetParam());
  // fp32 rounding of the subtraction scheme, against the same computation in fp64 on the same
  // values. Only dA and dB: they depend on the clip mask, not on where W_comb rounds (y, dX,
  // ds, db move by a step wherever fp32 and fp64 round an element differently).
  const MixedRows m32(at::kFloat), m64(at::kDouble);
  const auto got = m32.run(0.5, 0.25), want = m64.run(0.5, 0.25);
  EXPECT_LT(rel_err(got[2].to(at::kDouble), want[2]), 1e-5) << "A";
  EXPECT_LT(rel_err(got[3].to(at::kDouble), want[3]), 1e-5) << "B";
}

// L4Q_CPU_ISA caps the automatic choice, never raises it, and a value it does not know is an
// error naming the variable (it was silently ignored).
TEST(RowsIsa, EnvironmentCapsTheChoice) {
  using cpu::RowsIsa;
  EXPECT_EQ(cpu::capped_isa(RowsIsa::Avx512, nullptr), RowsIsa::Avx512);
  EXPECT_EQ(cpu::capped_isa(RowsIsa::Avx512, ""), RowsIsa::Avx512);
  EXPECT_EQ(cpu::capped_isa(RowsIsa::Avx512, "avx512"), RowsIsa::Avx512);
  EXPECT_EQ(cpu::capped_isa(RowsIsa::Avx512, "avx2"), RowsIsa::Avx2);
  EXPECT_EQ(cpu::capped_isa(RowsIsa::Avx512, "base"), RowsIsa::Base);
  EXPECT_EQ(cpu::capped_isa(RowsIsa::Avx2, "avx512"), RowsIsa::Avx2);
  EXPECT_EQ(cpu::capped_isa(RowsIsa::Base, "avx2"), RowsIsa::Base);
  try {
    cpu::capped_isa(RowsIsa::Avx512, "AVX2");
    FAIL() << "no error for L4Q_CPU_ISA=AVX2";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("L4Q_CPU_ISA"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'AVX2'"), std::string::npos) << e.what();
  }
}

// Every instruction set's loops give the generic code's bits (merged_rows_kernels.h), for L4Q
// and for full LSQ QAT (W0 trained): on MixedRows' shape (groups of 16: only 8-lane tiles and
// tails) and on one whose groups of 44 take the AVX-512 loops' 32-element tiles, then an 8-lane
// tile and 4 single elements, with blocks of 7 rows (4- and 2-row tiles plus leftover rows).
TEST_P(LoraRegimes, EveryInstructionSetGivesTheSameBits) {
  const DirectThreshold th(GetParam());
  std::vector<cpu::RowsIsa> isas;
  for (auto isa : {cpu::RowsIsa::Avx2, cpu::RowsIsa::Avx512})
    if (cpu::rows_isa_available(isa)) isas.push_back(isa);
  if (isas.empty()) GTEST_SKIP() << "only the generic loops on this CPU";
  const char* names[] = {"y", "x", "A", "B", "s", "b"};
  for (const Case& c : {MixedRows::kCase, Case{43, 176, 44, 4, 3, {6, 3}, true, 7, 1.0}}) {
    const MixedRows m(at::kFloat, c);
    auto run_with = [&](cpu::RowsIsa isa) {
      cpu::set_rows_isa(isa);
      auto r = m.run(0.5, 0.25);
      cpu::set_rows_isa(std::nullopt);
      return r;
    };
    // Full LSQ QAT on the same weights: W0 trained (dW = M * G written into G), no LoRA.
    auto full_qat_with = [&](cpu::RowsIsa isa) {
      cpu::set_rows_isa(isa);
      auto W = m.in.W0.clone().set_requires_grad(true);
      auto s = m.in.s.clone().set_requires_grad(true), b = m.in.b.clone().set_requires_grad(true);
      auto y = l4q_linear(m.in.x, W, {}, {}, s, b, {}, {{c.bits, c.gs}, 1.0, 0.25, c.chunk});
      at::manual_seed(6);
      (y * at::randn(y.sizes(), at::kDouble).to(y.scalar_type())).sum().backward();
      cpu::set_rows_isa(std::nullopt);
      return std::vector<at::Tensor>{y.detach(), W.grad(), s.grad(), b.grad()};
    };
    const char* qat_names[] = {"y (full QAT)", "W", "s (full QAT)", "b (full QAT)"};
    const auto frac = m.clipped_per_row(0.5);
    EXPECT_GT(((frac > 0) & (frac < 0.25)).sum().item<int64_t>(), 0);
    const auto base = run_with(cpu::RowsIsa::Base);
    const auto base_qat = full_qat_with(cpu::RowsIsa::Base);
    EXPECT_GT((base_qat[1] == 0).sum().item<int64_t>(), 0);  // some weights clipped: M = 0
    for (auto isa : isas) {
      const auto got = run_with(isa);
      for (size_t k = 0; k < base.size(); ++k)
        EXPECT_TRUE(at::equal(base[k], got[k]))
            << names[k] << ", isa " << static_cast<int>(isa) << ", in " << c.in;
      const auto got_qat = full_qat_with(isa);
      for (size_t k = 0; k < base_qat.size(); ++k)
        EXPECT_TRUE(at::equal(base_qat[k], got_qat[k]))
            << qat_names[k] << ", isa " << static_cast<int>(isa) << ", in " << c.in;
    }
  }
  EXPECT_THROW(cpu::set_rows_isa(static_cast<cpu::RowsIsa>(7)), std::exception);
}

// A frozen W0 kept in bfloat16 or half gives, bit for bit, what the same values in fp32 give
// (merged_rows.h: rows widened to fp32 as the loops read them), on every instruction set. On
// MixedRows' shape (every clipping regime, groups of 16) and on 70 rows of 4096 (groups of 128:
// the AVX-512 tiles; the widening takes 32 rows at a time, so each thread's 35 rows come in
// two calls, the second of 3 rows).
TEST_P(LoraRegimes, SixteenBitWeightGivesTheBitsOfItsValuesInFloat) {
  const DirectThreshold th(GetParam());
  std::vector<std::optional<cpu::RowsIsa>> isas = {std::nullopt, cpu::RowsIsa::Base};
  for (auto isa : {cpu::RowsIsa::Avx2, cpu::RowsIsa::Avx512})
    if (cpu::rows_isa_available(isa)) isas.push_back(isa);
  const char* names[] = {"y", "x", "A", "B", "s", "b"};
  for (const auto dt16 : {at::kBFloat16, at::kHalf})
    for (const Case& c : {MixedRows::kCase, Case{70, 4096, 128, 4, 4, {2, 9}, true, 0, 1.0}}) {
      MixedRows as_float(at::kFloat, c);
      const auto w16 = as_float.in.W0.to(dt16);
      as_float.in.W0 = w16.to(at::kFloat);
      MixedRows as_16 = as_float;
      as_16.in.W0 = w16;
      const auto frac = as_float.clipped_per_row(0.5);
      EXPECT_GT((frac > 0).sum().item<int64_t>(), 0);
      for (const auto isa : isas) {
        cpu::set_rows_isa(isa);
        const auto want = as_float.run(0.5, 0.25), got = as_16.run(0.5, 0.25);
        cpu::set_rows_isa(std::nullopt);
        for (size_t k = 0; k < want.size(); ++k)
          EXPECT_TRUE(at::equal(want[k], got[k]))
              << names[k] << ", " << c10::toString(dt16) << ", isa "
              << (isa ? static_cast<int>(*isa) : -1) << ", in " << c.in;
      }
    }
}

// The module keeps a 16-bit weight as it is (half the memory), with an fp32 adapter and
// quantizer, and trains and merges as with the same values in fp32.
TEST(L4QLinear, KeepsASixteenBitWeightAndMatchesItsValuesInFloat) {
  at::manual_seed(3);
  const auto w16 = (at::randn({24, 64}) * 0.1).to(at::kBFloat16);
  const L4QLinearSpec spec{{4, 8.0, 0.0}, {3, 16}};
  at::manual_seed(9);
  L4QLinear m16(w16, {}, spec);
  at::manual_seed(9);
  L4QLinear m32(w16.to(at::kFloat), {}, spec);
  EXPECT_TRUE(at::equal(m16.lora_a(), m32.lora_a()));
  EXPECT_EQ(m16.weight().scalar_type(), at::kBFloat16);
  EXPECT_EQ(m16.weight().nbytes() * 2, m32.weight().nbytes());
  EXPECT_EQ(m16.lora_a().scalar_type(), at::kFloat);
  {
    at::NoGradGuard ng;
    const auto Bv = at::randn({24, 4}) * 0.05;
    m16.lora_b().copy_(Bv);
    m32.lora_b().copy_(Bv);
  }
  const auto x = at::randn({5, 64});
  const auto y16 = m16.forward(x), y32 = m32.forward(x);
  EXPECT_TRUE(at::equal(y16, y32));
  y16.pow(2).sum().backward();
  y32.pow(2).sum().backward();
  EXPECT_TRUE(at::equal(m16.lora_a().grad(), m32.lora_a().grad()));
  EXPECT_TRUE(at::equal(m16.step().grad(), m32.step().grad()));
  const auto q16 = m16.merge(), q32 = m32.merge();
  EXPECT_TRUE(at::equal(q16.w_int, q32.w_int));
  EXPECT_TRUE(at::equal(q16.dequantize(), q32.dequantize()));
  EXPECT_TRUE(at::equal(m16.merged_float_weight(), m32.merged_float_weight()));
  // While quantization is off (warm-up), plain float LoRA on the widened weight.
  m16.disable_quantization();
  m32.disable_quantization();
  EXPECT_TRUE(at::equal(m16.forward(x), m32.forward(x)));
}

TEST(L4QLinear, RejectsSixteenBitWeightMisuse) {
  const auto w16 = at::randn({8, 32}).to(at::kHalf);
  const auto s = at::full({8, 2}, 0.1), b = at::zeros({8, 2});
  const L4QOptions opt{{4, 16}, 1.0, 0.0, 0};
  auto expect_error = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Compute with a 16-bit W0 is fp32: an fp64 input is refused, naming the dtype it needs.
  expect_error([&] { l4q_linear(at::randn({3, 32}, at::kDouble), w16, {}, {}, s, b, {}, opt); },
               "W0's compute dtype");
  // A 16-bit W0 is frozen.
  expect_error([&] {
    l4q_linear(at::randn({3, 32}), w16.clone().set_requires_grad(true), {}, {}, s, b, {}, opt);
  }, "frozen");
}

}  // namespace
}  // namespace l4q
