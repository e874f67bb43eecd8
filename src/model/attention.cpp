#include "l4q/model/attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <limits>

#include "l4q/error.h"

namespace l4q {
namespace {

// out[i] = alpha * a[i] @ b[i] + beta * out[i] for every i of the leading (batch) dimension:
// the batch is split over the threads and each product is one single-threaded GEMM
// (a GEMM called inside a parallel region runs on its thread alone). LibTorch 1.13's CPU
// bmm does the opposite, the products one after another with each split over the threads,
// and for attention-sized products (T x d by d x S) that synchronisation costs more than the
// arithmetic. a and b may be transposed views.
void batched_mm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                double alpha) {
  at::parallel_for(0, out.size(0), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      auto o = out.select(0, i);
      if (beta == 0.0 && alpha == 1.0) at::mm_out(o, a.select(0, i), b.select(0, i));
      else at::addmm_out(o, o, a.select(0, i), b.select(0, i), beta, alpha);
    }
  });
}

// q3 [n, R, d] (R = g query heads x T positions), k3, v3 [n, S, d], bias [R, S] (0 or -inf,
// empty for no mask). Returns softmax(bias + scale * q k^T) and that times v.
std::pair<at::Tensor, at::Tensor> attention_rows(const at::Tensor& q3, const at::Tensor& k3,
                                                 const at::Tensor& v3, const at::Tensor& bias,
                                                 double scale) {
  const int64_t n = q3.size(0), R = q3.size(1), S = k3.size(1), d = q3.size(2);
  auto probs = bias.numel() > 0 ? bias.expand({n, R, S}).contiguous()
                                : at::empty({n, R, S}, q3.options());
  batched_mm(probs, q3, k3.transpose(1, 2), bias.numel() > 0 ? 1.0 : 0.0, scale);
  // In place: ATen's last-dimension softmax finishes reading a row before writing it (the
  // attention unit tests compare with the out-of-place composite on both LibTorch versions).
  at::_softmax_out(probs, probs, -1, /*half_to_float=*/false);
  auto out = at::empty({n, R, d}, q3.options());
  batched_mm(out, probs, v3, 0.0, 1.0);
  return {out, probs};
}

struct CausalAttentionFunction : public torch::autograd::Function<CausalAttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q3,
                            const at::Tensor& k3, const at::Tensor& v3, const at::Tensor& bias,
                            double scale) {
    auto [out, probs] = attention_rows(q3, k3, v3, bias, scale);
    ctx->save_for_backward({q3, k3, v3, probs});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  // With P = softmax(Z), Z = bias + scale q k^T, O = P v:
  //   dv = P^T dO, dP = dO v^T, dZ = P * (dP - rowsum(dP * P)), dq = scale dZ k,
  //   dk = scale dZ^T q. Masked entries have P = 0, hence dZ = 0.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sv = ctx->get_saved_variables();
    const auto &q3 = sv[0], &k3 = sv[1], &v3 = sv[2], &probs = sv[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto dout = grads[0].contiguous();
    const int64_t n = q3.size(0), R = q3.size(1), S = k3.size(1), d = q3.size(2);
    auto dv = at::empty({n, S, d}, v3.options());
    batched_mm(dv, probs.transpose(1, 2), dout, 0.0, 1.0);
    auto dprobs = at::empty({n, R, S}, probs.options());
    batched_mm(dprobs, dout, v3.transpose(1, 2), 0.0, 1.0);
    const auto dz = at::_softmax_backward_data(dprobs, probs, -1, probs.scalar_type());
    auto dq = at::empty({n, R, d}, q3.options()), dk = at::empty({n, S, d}, k3.options());
    batched_mm(dq, dz, k3, 0.0, scale);
    batched_mm(dk, dz.transpose(1, 2), q3, 0.0, scale);
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
  const int64_t g = H / KV;
  // The g query heads sharing a key/value head are adjacent, so folding them into the row
  // dimension lets one product per KV head serve them all without repeating k and v.
  const auto q3 = q.reshape({B * KV, g * T, d});
  const auto k3 = k.reshape({B * KV, S, d}), v3 = v.reshape({B * KV, S, d});
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor bias;  // [g * T, S]: -inf where key j lies after query i's position S - T + i
  if (T > 1) {
    const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    const auto qpos = at::arange(S - T, S, opts).unsqueeze(1);
    const auto kpos = at::arange(0, S, opts).unsqueeze(0);
    bias = at::zeros({T, S}, q.options())
               .masked_fill_(kpos > qpos, -std::numeric_limits<double>::infinity())
               .repeat({g, 1});
  }
  if (!q.device().is_cpu()) {
    // Other devices: the composite (their bmm is one batched kernel). The scale and the mask
    // ride in the GEMM (bias + scale q k^T) rather than in two more passes over the scores.
    const auto kt = k3.transpose(1, 2);
    const auto scores =
        bias.defined() ? at::baddbmm(bias, q3, kt, 1.0, scale) : at::bmm(q3 * scale, kt);
    return at::bmm(at::softmax(scores, -1), v3).view({B, H, T, d});
  }
  if (!bias.defined()) bias = at::empty({0}, q.options());
  const bool grad = at::GradMode::is_enabled() &&
                    (q.requires_grad() || k.requires_grad() || v.requires_grad());
  const auto out = grad ? CausalAttentionFunction::apply(q3, k3.contiguous(), v3.contiguous(),
                                                         bias, scale)
                        : attention_rows(q3.contiguous(), k3, v3, bias, scale).first;
  return out.view({B, H, T, d});
}

}  // namespace l4q
