// The CPU references of the CUDA kernels (kernels/reference/) against the ATen path of the L4Q
// layer: l4q_linear forward and backward, quantize_weight and MergedWeight.
//
// Two kinds of inputs:
//  - "dyadic": small integers times powers of two, with power-of-two step sizes. Every product
//    and sum is exact in fp32, so the results cannot depend on summation order and the
//    reference must match the layer bit for bit. Dyadic inputs also land on exact rounding ties
//    (w = k + 0.5) and exactly on the clamp bounds, the cases where two implementations of the
//    element math would disagree first.
//  - random fp64 inputs, compared with a relative tolerance.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "l4q/nn/l4q_linear.h"
#include "reference/fake_quant_matmul_ref.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::rel_err;

struct Case {
  int64_t out, in, gs, rank;
  int bits;
  int64_t tokens, chunk;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> cs = {
      {13, 24, 8, 3, 3, 10, 4},   // ragged row blocks
      {16, 32, 16, 2, 2, 7, 16},  // 2-bit
      {9, 40, 40, 4, 4, 3, 2},    // one group per row
      {11, 64, 32, 1, 8, 4, 256}, // 8-bit, chunk > out
      {6, 16, 4, 5, 4, 4, 1},     // rank > out, chunk 1
      {7, 48, 16, 0, 4, 5, 3},    // no LoRA
  };
  return cs;
}

// k / 2^e with k uniform in [-n, n].
at::Tensor dyadic(at::IntArrayRef shape, int64_t n, int e, at::ScalarType dt) {
  return (at::randint(-n, n + 1, shape, at::kLong).to(dt) / static_cast<double>(1 << e));
}

struct Inputs {
  at::Tensor x, W0, A, B, s, b;  // A and B undefined when rank == 0
  double scale;
};

Inputs dyadic_inputs(const Case& c, uint64_t seed) {
  at::manual_seed(seed);
  const auto f = at::kFloat;
  Inputs in;
  in.x = dyadic({c.tokens, c.in}, 8, 3, f);
  in.W0 = dyadic({c.out, c.in}, 16, 4, f);
  if (c.rank > 0) {
    in.A = dyadic({c.rank, c.in}, 8, 3, f);
    in.B = dyadic({c.out, c.rank}, 8, 3, f);
  }
  in.scale = 0.5;
  const int64_t groups = c.in / c.gs;
  // Steps 1/8 or 1/16 (so w is exact and often a tie), offsets multiples of 1/64.
  in.s = at::where(at::rand({c.out, groups}) < 0.5, at::full({c.out, groups}, 0.125),
                   at::full({c.out, groups}, 0.0625))
             .to(f);
  in.b = dyadic({c.out, groups}, 4, 6, f);
  return in;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

template <typename T>
std::vector<T> vec(const at::Tensor& t) {
  const auto c = t.contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

template <typename T>
at::Tensor tensor(const std::vector<T>& v, at::IntArrayRef shape, at::ScalarType dt) {
  return at::from_blob(const_cast<T*>(v.data()), shape, dt).clone();
}

template <typename T>
kernels::ref::FakeQuantProblem problem(const Case& c, const Inputs& in, double g) {
  kernels::ref::FakeQuantProblem p;
  p.tokens = in.x.size(0);
  p.out = c.out;
  p.in = c.in;
  p.rank = c.rank;
  p.group_size = c.gs;
  p.bits = c.bits;
  p.lora_scale = in.scale;
  p.grad_scale = g;
  return p;
}

template <typename T>
const T* ptr_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

// Runs the layer with autograd and the reference on the same inputs.
template <typename T>
void compare_with_layer(const Case& c, const Inputs& in, double g, bool exact, bool w0_grad) {
  const auto dt = in.x.scalar_type();
  auto x = in.x.clone().set_requires_grad(true);
  auto W0 = in.W0.clone().set_requires_grad(w0_grad);
  auto s = in.s.clone().set_requires_grad(true);
  auto b = in.b.clone().set_requires_grad(true);
  at::Tensor A, B;
  if (c.rank > 0) {
    A = in.A.clone().set_requires_grad(true);
    B = in.B.clone().set_requires_grad(true);
  }
  const L4QOptions opt{{c.bits, c.gs}, in.scale, g, c.chunk};
  auto y = l4q_linear(x, W0, A, B, s, b, at::Tensor(), opt);
  at::manual_seed(99);
  const auto dY = exact ? dyadic(y.sizes(), 8, 3, dt) : at::randn_like(y);
  y.backward(dY);

  const auto p = problem<T>(c, in, g);
  const auto xv = vec<T>(in.x), W0v = vec<T>(in.W0), sv = vec<T>(in.s), bv = vec<T>(in.b),
             dYv = vec<T>(dY);
  const auto Av = c.rank > 0 ? vec<T>(in.A) : std::vector<T>();
  const auto Bv = c.rank > 0 ? vec<T>(in.B) : std::vector<T>();
  const auto yr = kernels::ref::forward<T>(p, xv.data(), W0v.data(), ptr_or_null(Av),
                                           ptr_or_null(Bv), sv.data(), bv.data());
  const auto gr = kernels::ref::backward<T>(p, xv.data(), dYv.data(), W0v.data(), ptr_or_null(Av),
                                            ptr_or_null(Bv), sv.data(), bv.data());
  const int64_t groups = c.in / c.gs;
  struct Pair {
    const char* name;
    at::Tensor ours, ref;
  };
  std::vector<Pair> pairs = {
      {"Y", y.detach(), tensor(yr, {p.tokens, c.out}, dt)},
      {"dX", x.grad(), tensor(gr.dX, {p.tokens, c.in}, dt)},
      {"ds", s.grad(), tensor(gr.ds, {c.out, groups}, dt)},
      {"db", b.grad(), tensor(gr.db, {c.out, groups}, dt)},
  };
  // dW = M*G, the full-QAT gradient (the layer then takes its other backward branch).
  if (w0_grad) pairs.push_back({"dW", W0.grad(), tensor(gr.dW, {c.out, c.in}, dt)});
  if (c.rank > 0) {
    pairs.push_back({"dA", A.grad(), tensor(gr.dA, {c.rank, c.in}, dt)});
    pairs.push_back({"dB", B.grad(), tensor(gr.dB, {c.out, c.rank}, dt)});
  }
  for (const auto& pr : pairs) {
    ASSERT_TRUE(pr.ours.defined()) << pr.name;
    if (exact)
      EXPECT_TRUE(at::equal(pr.ours, pr.ref))
          << pr.name << ": max |diff| " << max_abs_diff(pr.ours, pr.ref);
    else
      EXPECT_LT(rel_err(pr.ours, pr.ref), 1e-12) << pr.name;
  }
  // Every case must clip at both ends, or the gate and the clamp branch go untested.
  const auto q = kernels::ref::quantize_weight<T>(
      p, kernels::ref::merged_weight<T>(p, W0v.data(), ptr_or_null(Av), ptr_or_null(Bv)).data(),
      sv.data(), bv.data());
  int64_t clipped = 0;
  for (auto m : q.mask) clipped += m == 0;
  if (c.bits < 8) EXPECT_GT(clipped, 0);
  // And ds must not be trivially zero.
  EXPECT_GT(max_abs_diff(s.grad(), at::zeros_like(s)), 0);
}

TEST(KernelsReference, MatchesLayerBitForBitOnDyadicInputs) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(testing::Message() << "out " << c.out << " in " << c.in << " gs " << c.gs
                                    << " rank " << c.rank << " bits " << c.bits);
    const auto in = dyadic_inputs(c, 11 + c.out);
    compare_with_layer<float>(c, in, 0.375, /*exact=*/true, /*w0_grad=*/false);
    compare_with_layer<float>(c, in, 0.375, /*exact=*/true, /*w0_grad=*/true);
  }
}

TEST(KernelsReference, DyadicInputsHitRoundingTies) {
  // The exact test above is only meaningful if ties occur: count w = k + 1/2 exactly.
  const auto& c = cases()[0];
  const auto in = dyadic_inputs(c, 11 + c.out);
  const auto Wc = in.W0 + in.scale * at::mm(in.B, in.A);
  const auto w = (Wc - in.b.repeat_interleave(c.gs, 1)) / in.s.repeat_interleave(c.gs, 1);
  const auto frac = w - w.floor();
  EXPECT_GT((frac == 0.5).sum().item<int64_t>(), 0);
}

TEST(KernelsReference, MatchesLayerOnRandomFp64Inputs) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(testing::Message() << "out " << c.out << " in " << c.in << " gs " << c.gs
                                    << " rank " << c.rank << " bits " << c.bits);
    at::manual_seed(21 + c.out);
    const auto d = at::kDouble;
    Inputs in;
    in.x = at::randn({c.tokens, c.in}, d);
    in.W0 = at::randn({c.out, c.in}, d) * 0.5;
    if (c.rank > 0) {
      in.A = at::randn({c.rank, c.in}, d) * 0.3;
      in.B = at::randn({c.out, c.rank}, d) * 0.3;
    }
    in.scale = 1.7;
    const QuantGrid grid{c.bits, c.gs};
    auto so = init_step_offset(in.W0, grid, LsqInit::L4Q);
    in.s = so.s * 0.6;  // < 1: clips at both ends
    in.b = at::randn_like(so.s) * 0.1 * so.s;
    compare_with_layer<double>(c, in, lsq_grad_scale(grid, c.in), /*exact=*/false,
                               /*w0_grad=*/c.rank == 0);
  }
}

TEST(KernelsReference, QuantizeWeightMatchesMergedWeight) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(testing::Message() << "out " << c.out << " in " << c.in << " bits " << c.bits);
    at::manual_seed(31 + c.out);
    const auto W = at::randn({c.out, c.in}) * 0.5;
    const QuantGrid grid{c.bits, c.gs};
    auto so = init_step_offset(W, grid, LsqInit::MinMax);
    so.s = so.s * 0.8;
    const auto mw = quantize_weight(W, so.s, so.b, grid);
    kernels::ref::FakeQuantProblem p;
    p.out = c.out;
    p.in = c.in;
    p.group_size = c.gs;
    p.bits = c.bits;
    const auto Wv = vec<float>(W), sv = vec<float>(so.s), bv = vec<float>(so.b);
    const auto q = kernels::ref::quantize_weight<float>(p, Wv.data(), sv.data(), bv.data());
    EXPECT_TRUE(at::equal(mw.w_int, tensor(q.codes, {c.out, c.in}, at::kChar)));
    EXPECT_TRUE(at::equal(mw.dequantize(), tensor(q.Wq, {c.out, c.in}, at::kFloat)));
  }
}

TEST(KernelsReference, Bf16OperandRoundingOnlyTouchesTheProducts) {
  const auto& c = cases()[2];
  at::manual_seed(41);
  const auto W = at::randn({c.out, c.in});
  const auto s = at::full({c.out, c.in / c.gs}, 0.0123f), b = at::full({c.out, c.in / c.gs}, 0.001f);
  kernels::ref::FakeQuantProblem p;
  p.out = c.out;
  p.in = c.in;
  p.group_size = c.gs;
  p.bits = c.bits;
  const auto Wv = vec<float>(W), sv = vec<float>(s), bv = vec<float>(b);
  const auto exact = kernels::ref::quantize_weight<float>(p, Wv.data(), sv.data(), bv.data());
  p.round_wq_bf16 = true;
  const auto rounded = kernels::ref::quantize_weight<float>(p, Wv.data(), sv.data(), bv.data());
  EXPECT_EQ(exact.codes, rounded.codes);
  EXPECT_EQ(exact.mask, rounded.mask);
  int64_t changed = 0;
  for (size_t k = 0; k < exact.Wq.size(); ++k) {
    EXPECT_EQ(rounded.Wq[k], bf16::round(exact.Wq[k]));
    EXPECT_LE(std::abs(rounded.Wq[k] - exact.Wq[k]), std::abs(exact.Wq[k]) * 0x1p-8f);
    changed += rounded.Wq[k] != exact.Wq[k];
  }
  EXPECT_GT(changed, 0);  // s = 0.0123 is not a bf16 value: the rounding must show
}

}  // namespace
}  // namespace l4q
