#include "l4q/model/attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <limits>

#include "l4q/error.h"

namespace l4q {
namespace {

// One head's product o = alpha * a @ b + beta * o on 2-D views (any row stride, unit column
// stride: BLAS reads them in place). Called inside a parallel region, so it is one
// single-threaded GEMM.
void head_mm(at::Tensor o, const at::Tensor& a, const at::Tensor& b, double beta, double alpha) {
  if (beta == 0.0 && alpha == 1.0) at::mm_out(o, a, b);
  else at::addmm_out(o, o, a, b, beta, alpha);
}

// Runs f(b, kv, j, h) for every query head h = kv * g + j, the (batch, KV head) pairs split
// over the threads and the g heads sharing a KV head in order on one thread (their dk, dv
// accumulate). LibTorch 1.13's CPU bmm does the opposite, the products one after another
// with each split over the threads: for attention-sized products (T x d by d x S) that
// synchronisation costs more than the arithmetic. Working on per-head views also spares the
// copies a 3-D bmm needs of the [B, T, H, d]-laid-out projections.
// The worker threads get the caller's thread-local state (grad mode, dispatch-key
// exclusions): at::parallel_for does not carry it, and inside an autograd Function's forward
// ATen ops on a worker would otherwise run with grad mode on (out= ops then refuse).
template <typename F>
void for_heads(int64_t B, int64_t KV, int64_t g, const F& f) {
  const at::ThreadLocalState state;
  at::parallel_for(0, B * KV, 1, [&](int64_t i0, int64_t i1) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < g; ++j) f(i / KV, i % KV, j, (i % KV) * g + j);
  });
}

// q [B, H, T, d]; k, v [B, KV, S, d] (strided views welcome); bias [T, S] (0 or -inf, empty
// for no mask). Returns softmax(bias + scale q k^T) [B, H, T, S] and that times v, as a
// [B, H, T, d] view of a [B, T, H, d] tensor (the layout the output projection reads).
std::pair<at::Tensor, at::Tensor> attention_heads(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& v, const at::Tensor& bias,
                                                  double scale) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), d = q.size(3);
  const int64_t KV = k.size(1), S = k.size(2);
  auto probs = at::empty({B, H, T, S}, q.options());
  auto out = at::empty({B, T, H, d}, q.options()).transpose(1, 2);
  const bool masked = bias.numel() > 0;
  for_heads(B, KV, H / KV, [&](int64_t b, int64_t kv, int64_t, int64_t h) {
    auto p = probs[b][h];
    if (masked) p.copy_(bias);
    head_mm(p, q[b][h], k[b][kv].t(), masked ? 1.0 : 0.0, scale);
    // In place: ATen's last-dimension softmax finishes reading a row before writing it (the
    // attention unit tests compare with the composite on both LibTorch versions CI builds).
    at::_softmax_out(p, p, -1, /*half_to_float=*/false);
    head_mm(out[b][h], p, v[b][kv], 0.0, 1.0);
  });
  return {out, probs};
}

struct CausalAttentionFunction : public torch::autograd::Function<CausalAttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                            double scale) {
    auto [out, probs] = attention_heads(q, k, v, bias, scale);
    ctx->save_for_backward({q, k, v, probs});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  // Per head, with P = softmax(Z), Z = bias + scale q k^T, O = P v:
  //   dv = P^T dO, dP = dO v^T, dZ = P * (dP - rowsum(dP * P)), dq = scale dZ k,
  //   dk = scale dZ^T q; dk and dv summed over the g query heads of a KV head. Masked
  //   entries have P = 0, hence dZ = 0.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sv = ctx->get_saved_variables();
    const auto &q = sv[0], &k = sv[1], &v = sv[2], &probs = sv[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto& dout = grads[0];
    const int64_t B = q.size(0), H = q.size(1), KV = k.size(1);
    auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
    auto dprobs = at::empty_like(probs);
    for_heads(B, KV, H / KV, [&](int64_t b, int64_t kv, int64_t j, int64_t h) {
      const auto p = probs[b][h], dO = dout[b][h];
      const double acc = j == 0 ? 0.0 : 1.0;  // the first head of a KV head writes, the rest add
      head_mm(dv[b][kv], p.t(), dO, acc, 1.0);
      auto dp = dprobs[b][h];
      head_mm(dp, dO, v[b][kv].t(), 0.0, 1.0);
      const auto dz = at::_softmax_backward_data(dp, p, -1, p.scalar_type());
      head_mm(dq[b][h], dz, k[b][kv], 0.0, scale);
      head_mm(dk[b][kv], dz.t(), q[b][h], acc, scale);
    });
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail("[causal_attention] expected 4-D q, k, v, got ", q.dim(), "-D, ", k.dim(), "-D, ",
         v.dim(), "-D");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), d = q.size(3);
  const int64_t KV = k.size(1), S = k.size(2);
  if (!k.sizes().equals(v.sizes()) || k.size(0) != B || k.size(3) != d || KV < 1 || H % KV != 0 ||
      S < T)
    fail("[causal_attention] shapes: q [", B, ", ", H, ", ", T, ", ", d, "] needs k, v [", B,
         ", KV dividing ", H, ", S >= ", T, ", ", d, "], got k ", k.sizes(), ", v ", v.sizes());
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor bias;  // [T, S]: -inf where key j lies after query i's position S - T + i
  if (T > 1) {
    const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    const auto qpos = at::arange(S - T, S, opts).unsqueeze(1);
    const auto kpos = at::arange(0, S, opts).unsqueeze(0);
    bias = at::zeros({T, S}, q.options())
               .masked_fill_(kpos > qpos, -std::numeric_limits<double>::infinity());
  }
  if (!q.device().is_cpu()) {
    // Other devices: the composite (their bmm is one batched kernel). The g query heads
    // sharing a KV head are adjacent, so folding them into the row dimension lets one
    // product per KV head serve them all; the scale and the mask ride in the GEMM.
    const int64_t g = H / KV;
    const auto q3 = q.reshape({B * KV, g * T, d});
    const auto kt = k.reshape({B * KV, S, d}).transpose(1, 2);
    const auto scores = bias.defined() ? at::baddbmm(bias.repeat({g, 1}), q3, kt, 1.0, scale)
                                       : at::bmm(q3 * scale, kt);
    return at::bmm(at::softmax(scores, -1), v.reshape({B * KV, S, d})).view({B, H, T, d});
  }
  // Per-head views need a unit last stride (BLAS reads them in place).
  auto unit = [](const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); };
  if (!bias.defined()) bias = at::empty({0}, q.options());
  const bool grad = at::GradMode::is_enabled() &&
                    (q.requires_grad() || k.requires_grad() || v.requires_grad());
  return grad ? CausalAttentionFunction::apply(unit(q), unit(k), unit(v), bias, scale)
              : attention_heads(unit(q), unit(k), unit(v), bias, scale).first;
}

}  // namespace l4q
