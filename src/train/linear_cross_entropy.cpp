#include "l4q/train/linear_cross_entropy.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "l4q/error.h"
#include "quant/tensor_checks.h"

namespace l4q {
namespace {

using detail::shape_str;

struct Head {
  at::Tensor loss;  // scalar, float (double for double inputs)
  at::Tensor dh;    // [N, H], hidden's dtype; undefined unless asked for
  at::Tensor dw;    // [V, H], as loss; undefined unless asked for
};

int64_t resolve_chunk(int64_t chunk, int64_t n, int64_t vocab) {
  // A block of up to 256 MiB of float logits. Smaller blocks cost time, not just memory: every
  // block's two GEMMs re-pack the whole [V, H] weight (measured on the side-by-side model,
  // vocab 32000: 8 MiB blocks +17% step time, 32 MiB +2%, one block of 1020 rows -3%).
  if (chunk <= 0) chunk = std::max<int64_t>(64, (int64_t{256} << 20) / (4 * vocab));
  return std::max<int64_t>(1, std::min(chunk, n));
}

// The loss over all rows, block by block; with need_h / need_w also d loss / d hidden and
// d loss / d weight (for an incoming gradient of 1).
Head run_head(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets, int64_t chunk,
              bool need_h, bool need_w) {
  const int64_t N = h.size(0), V = w.size(0);
  // Softmax in float for 16-bit models (as the plain head's .to(kFloat)), in double for
  // double ones (the gradient checks).
  const auto acc = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Head out;
  if (need_h) out.dh = at::empty_like(h);
  if (need_w) out.dw = at::zeros(w.sizes(), w.options().dtype(acc));
  const auto wt = w.t();
  double loss = 0;
  chunk = resolve_chunk(chunk, N, V);
  // One [chunk, V] block, reused for every chunk (fresh ones would be page-faulted in anew
  // each time): the logits, then in place their softmax, then the softmax gradient.
  auto buf = at::empty({chunk, V}, h.options().dtype(acc));
  const auto minus_one = at::full({chunk, 1}, -1.0, buf.options());
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t n = std::min(chunk, N - r0);
    const auto hc = h.narrow(0, r0, n);
    const auto tc = targets.narrow(0, r0, n).unsqueeze(1);
    auto z = buf.narrow(0, 0, n);
    if (w.scalar_type() == acc) at::mm_out(z, hc, wt);
    else z.copy_(at::mm(hc, wt));
    // loss_i = lse_i - z_i[t_i]. The softmax below runs in place (ATen's last-dimension
    // softmax kernel finishes reading a row before writing it; the unit test checks the
    // result on both LibTorch versions CI builds), so what it needs of the logits is taken
    // first: the target logit and each row's maximum m_i with its position. Afterwards
    // p_i[argmax] = exp(m_i - lse_i) >= 1 / V never underflows, so lse_i = m_i - log of it.
    // One pass over the logits for the maximum, one for the softmax, one exp per element.
    const auto zt = z.gather(1, tc);
    const auto [m, arg] = at::max(z, 1, /*keepdim=*/true);
    at::_softmax_out(z, z, 1, /*half_to_float=*/false);
    loss += (m - z.gather(1, arg).log() - zt).sum().item<double>();
    if (!need_h && !need_w) continue;
    // d loss_i / d z_i = softmax(z_i) - onehot(target_i), built in place
    auto& p = z;
    p.scatter_add_(1, tc, minus_one.narrow(0, 0, n));
    const auto dz = p.to(w.scalar_type());
    if (need_h) {
      auto dhc = out.dh.narrow(0, r0, n);
      at::mm_out(dhc, dz, w);
    }
    if (need_w) out.dw.addmm_(dz.t().to(acc), hc.to(acc));
  }
  out.loss = at::scalar_tensor(loss, h.options().dtype(acc));
  return out;
}

struct LinearCrossEntropyFunction
    : public torch::autograd::Function<LinearCrossEntropyFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h,
                            const at::Tensor& w, const at::Tensor& targets, int64_t chunk) {
    auto r = run_head(h, w, targets, chunk, h.requires_grad(), w.requires_grad());
    // Absent gradients travel as empty placeholders (torch 1.13 saves no undefined tensors).
    ctx->save_for_backward({r.dh.defined() ? r.dh : at::empty({0}, h.options()),
                            r.dw.defined() ? r.dw : at::empty({0}, h.options())});
    return r.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sv = ctx->get_saved_variables();
    const auto& g = grads[0];
    at::Tensor dh, dw;
    if (ctx->needs_input_grad(0) && sv[0].numel() > 0) dh = sv[0] * g.to(sv[0].scalar_type());
    if (ctx->needs_input_grad(1) && sv[1].numel() > 0) dw = sv[1] * g;
    return {dh, dw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight,
                                    const at::Tensor& targets, int64_t chunk_rows) {
  if (!hidden.defined() || hidden.dim() != 2)
    fail("[linear_cross_entropy_sum] hidden: expected [N, H], got ",
         shape_str(hidden));
  if (!weight.defined() || weight.dim() != 2 || weight.size(1) != hidden.size(1))
    fail("[linear_cross_entropy_sum] weight: expected [vocab, ", hidden.size(1), "], got ",
         shape_str(weight));
  if (!targets.defined() || targets.dim() != 1 || targets.size(0) != hidden.size(0) ||
      targets.scalar_type() != at::kLong)
    fail("[linear_cross_entropy_sum] targets: expected int64 [", hidden.size(0), "], got ",
         shape_str(targets));
  if (!at::isFloatingType(hidden.scalar_type()) || hidden.scalar_type() != weight.scalar_type())
    fail("[linear_cross_entropy_sum] hidden and weight: expected one floating dtype, got ",
         hidden.scalar_type(), " and ", weight.scalar_type());
  if (hidden.size(0) == 0)
    return at::zeros({}, hidden.options().dtype(hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
  const int64_t lo = targets.min().item<int64_t>(), hi = targets.max().item<int64_t>();
  if (lo < 0 || hi >= weight.size(0))
    fail("[linear_cross_entropy_sum] targets: expected ids in [0, ", weight.size(0),
         "), found ", lo < 0 ? lo : hi);
  const auto h = hidden.contiguous();
  if (at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad()))
    return LinearCrossEntropyFunction::apply(h, weight, targets.contiguous(), chunk_rows);
  return run_head(h, weight, targets.contiguous(), chunk_rows, false, false).loss;
}

}  // namespace l4q
