#include "l4q/nn/baselines.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "l4q/error.h"
#include "l4q/nn/l4q_linear.h"
#include "quant/tensor_checks.h"

namespace l4q {

namespace {

at::Tensor frozen(const at::Tensor& t) { return t.defined() ? t.detach().contiguous() : t; }

at::Tensor add_bias(at::Tensor y, const at::Tensor& bias) {
  return bias.defined() ? y + bias : y;
}

// y += (alpha/r) drop(x) A^T B^T, the float LoRA branch, for 2-D x [N, in] and y [N, out].
// The scale goes on the rank-r intermediate and the sum is the GEMM's own accumulation, so
// no extra pass reads and writes the [N, out] output in forward or backward (the plain
// `y + (x A^T B^T) * scale` costs four). In place when `y` is a fresh product that no
// backward needs (a GEMM's output), else out of place.
at::Tensor plus_lora_branch(at::Tensor y, const at::Tensor& x2, const at::Tensor& A,
                            const at::Tensor& B, const LoraSpec& lora, bool training,
                            bool y_in_place) {
  const auto xd = lora.dropout > 0 ? at::dropout(x2, lora.dropout, training) : x2;
  const auto xa = at::mm(xd, A.t()) * lora.scale();  // [N, r]
  return y_in_place ? y.addmm_(xa, B.t()) : at::addmm(y, xa, B.t());
}

// x [..., in] -> [N, in], and a [N, out] result back to [..., out].
at::Tensor rows(const at::Tensor& x) { return x.reshape({-1, x.size(-1)}); }
at::Tensor unrows(const at::Tensor& y, const at::Tensor& x) {
  auto shape = x.sizes().vec();
  shape.back() = y.size(-1);
  return y.view(shape);
}

void check_base(const char* where, const at::Tensor& W, const at::Tensor& bias) {
  detail::check_weight(where, "weight", W);
  detail::check_finite(where, "weight", W);
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != W.size(0)))
    fail("[", where, "] tensor 'bias': expected [", W.size(0), "], got ", detail::shape_str(bias));
}

L4QOptions fq_options(const QuantSpec& q) { return {q.grid, 1.0, q.grad_scale, q.row_chunk}; }

}  // namespace

MergedWeight round_to_nearest(const at::Tensor& W, const QuantSpec& q) {
  at::NoGradGuard ng;
  const auto so = init_step_offset(W.detach(), q.grid, q.init);
  return quantize_weight(W.detach(), so.s, so.b, q.grid);
}

// ---------------------------------------------------------------------------------------

LoraLinear::LoraLinear(at::Tensor weight, at::Tensor bias, const LoraSpec& lora,
                       std::optional<QuantSpec> ptq, c10::optional<at::Generator> gen)
    : lora_(lora), ptq_(std::move(ptq)) {
  check_base("LoraLinear", weight, bias);
  lora_.validate("LoraLinear");
  if (ptq_) ptq_->grid.validate("LoraLinear", weight.size(1));
  weight_ = frozen(weight);
  bias_ = frozen(bias);
  a_ = init_lora_a(lora_.rank, weight_.size(1), weight_.scalar_type(), gen).set_requires_grad(true);
  b_ = init_lora_b(weight_.size(0), lora_.rank, weight_.scalar_type()).set_requires_grad(true);
}

at::Tensor LoraLinear::forward(const at::Tensor& x) const {
  if (deployed_weight_.defined()) return at::linear(x, deployed_weight_, bias_);
  const auto x2 = rows(x);
  return add_bias(unrows(plus_lora_branch(at::mm(x2, weight_.t()), x2, a_, b_, lora_, training_,
                                          /*y_in_place=*/true),
                         x),
                  bias_);
}

std::vector<NamedParam> LoraLinear::parameters() const {
  return {{"lora_a", a_, ParamRole::Adapter}, {"lora_b", b_, ParamRole::Adapter}};
}

at::Tensor LoraLinear::merged_float_weight() const {
  at::NoGradGuard ng;
  return at::addmm(weight_, b_, a_, 1.0, lora_.scale());
}

at::Tensor LoraLinear::effective_weight() const {
  return ptq_ ? quantized_weight()->dequantize() : merged_float_weight();
}

std::optional<MergedWeight> LoraLinear::quantized_weight() const {
  if (!ptq_) return std::nullopt;
  return round_to_nearest(merged_float_weight(), *ptq_);
}

// ---------------------------------------------------------------------------------------

QatLoraLinear::QatLoraLinear(at::Tensor weight, at::Tensor bias, const LoraSpec& lora,
                             const QuantSpec& q, bool learn_scales,
                             c10::optional<at::Generator> gen)
    : lora_(lora), q_(q), learn_scales_(learn_scales) {
  check_base("QatLoraLinear", weight, bias);
  lora_.validate("QatLoraLinear");
  q_.grid.validate("QatLoraLinear", weight.size(1));
  weight_ = frozen(weight);
  bias_ = frozen(bias);
  a_ = init_lora_a(lora_.rank, weight_.size(1), weight_.scalar_type(), gen).set_requires_grad(true);
  b_ = init_lora_b(weight_.size(0), lora_.rank, weight_.scalar_type()).set_requires_grad(true);
  auto so = init_step_offset(weight_, q_.grid, q_.init);
  s_ = so.s.set_requires_grad(learn_scales_);
  offset_ = so.b.set_requires_grad(learn_scales_);
  if (!learn_scales_) {
    at::NoGradGuard ng;
    base_fq_ = fake_quantize(weight_, s_, offset_, q_.grid, q_.grad_scale);
  }
}

at::Tensor QatLoraLinear::forward(const at::Tensor& x) const {
  if (deployed_weight_.defined()) return at::linear(x, deployed_weight_, bias_);
  const auto x2 = rows(x);
  // Learned scales: the blocked fake-quant linear (no out x in tensor kept for backward); its
  // output belongs to a custom autograd Function, so the branch is added out of place.
  const auto base = learn_scales_
                        ? l4q_linear(x2, weight_, {}, {}, s_, offset_, bias_, fq_options(q_))
                        : at::linear(x2, base_fq_, bias_.defined() ? bias_ : at::Tensor());
  return unrows(plus_lora_branch(base, x2, a_, b_, lora_, training_, !learn_scales_), x);
}

std::vector<NamedParam> QatLoraLinear::parameters() const {
  std::vector<NamedParam> p = {{"lora_a", a_, ParamRole::Adapter},
                               {"lora_b", b_, ParamRole::Adapter}};
  if (learn_scales_) {
    p.push_back({"step", s_, ParamRole::Quantizer});
    p.push_back({"offset", offset_, ParamRole::Quantizer});
  }
  return p;
}

void QatLoraLinear::after_step() {
  if (learn_scales_) project_step_(s_);
}

std::optional<MergedWeight> QatLoraLinear::quantized_weight() const {
  at::NoGradGuard ng;
  return round_to_nearest(at::addmm(weight_, b_, a_, 1.0, lora_.scale()), q_);
}

std::optional<double> QatLoraLinear::clipped_fraction() const {
  return l4q::clipped_fraction(weight_, s_, offset_, q_.grid);
}

at::Tensor QatLoraLinear::effective_weight() const { return quantized_weight()->dequantize(); }

// ---------------------------------------------------------------------------------------

QaLoraLinear::QaLoraLinear(at::Tensor weight, at::Tensor bias, const LoraSpec& lora,
                           const QuantSpec& q, c10::optional<at::Generator> gen)
    : lora_(lora), q_(q) {
  check_base("QaLoraLinear", weight, bias);
  lora_.validate("QaLoraLinear");
  q_.grid.validate("QaLoraLinear", weight.size(1));
  base_ = round_to_nearest(weight, q_);
  base_dq_ = base_.dequantize();
  bias_ = frozen(bias);
  const int64_t groups = q_.grid.groups_per_row(weight.size(1));
  a_ = init_lora_a(lora_.rank, groups, weight.scalar_type(), gen).set_requires_grad(true);
  b_ = init_lora_b(weight.size(0), lora_.rank, weight.scalar_type()).set_requires_grad(true);
}

at::Tensor QaLoraLinear::forward(const at::Tensor& x) const {
  const int64_t in = in_features(), gs = q_.grid.group_size_for(in);
  auto sizes = x.sizes().vec();
  sizes.back() = in / gs;
  sizes.push_back(gs);
  const auto xd = lora_.dropout > 0 ? at::dropout(x, lora_.dropout, training_) : x;
  const auto pooled = xd.reshape(sizes).mean(-1);  // [..., in/G]
  const auto lora = at::matmul(at::matmul(pooled, a_.t()), b_.t()) * lora_.scale();
  return add_bias(at::matmul(x, base_dq_.t()) + lora, bias_);
}

std::vector<NamedParam> QaLoraLinear::parameters() const {
  return {{"lora_a", a_, ParamRole::Adapter}, {"lora_b", b_, ParamRole::Adapter}};
}

std::optional<MergedWeight> QaLoraLinear::quantized_weight() const {
  // pool_G(x) A^T B^T = x (repeat_G(B A) / G)^T: constant within each group, so it is an
  // offset change: b' = b + (alpha/r) (B A) / G. Codes and steps are untouched.
  at::NoGradGuard ng;
  const double G = static_cast<double>(q_.grid.group_size_for(in_features()));
  MergedWeight m = base_;
  m.b = base_.b + at::mm(b_, a_).to(base_.b.scalar_type()) * (lora_.scale() / G);
  return m;
}

at::Tensor QaLoraLinear::effective_weight() const { return quantized_weight()->dequantize(); }

// ---------------------------------------------------------------------------------------

LsqLinear::LsqLinear(at::Tensor weight, at::Tensor bias, const QuantSpec& q) : q_(q) {
  check_base("LsqLinear", weight, bias);
  q_.grid.validate("LsqLinear", weight.size(1));
  weight_ = weight.detach().clone().set_requires_grad(true);
  bias_ = frozen(bias);
  auto so = init_step_offset(weight_.detach(), q_.grid, q_.init);
  s_ = so.s.set_requires_grad(true);
  offset_ = so.b.set_requires_grad(true);
}

at::Tensor LsqLinear::forward(const at::Tensor& x) const {
  return l4q_linear(x, weight_, {}, {}, s_, offset_, bias_, fq_options(q_));
}

std::vector<NamedParam> LsqLinear::parameters() const {
  return {{"weight", weight_, ParamRole::Weight},
          {"step", s_, ParamRole::Quantizer},
          {"offset", offset_, ParamRole::Quantizer}};
}

void LsqLinear::after_step() { project_step_(s_); }

std::optional<MergedWeight> LsqLinear::quantized_weight() const {
  return quantize_weight(weight_.detach(), s_, offset_, q_.grid);
}

std::optional<double> LsqLinear::clipped_fraction() const {
  return l4q::clipped_fraction(weight_, s_, offset_, q_.grid);
}

at::Tensor LsqLinear::effective_weight() const { return quantized_weight()->dequantize(); }

// ---------------------------------------------------------------------------------------

RtnLinear::RtnLinear(at::Tensor weight, at::Tensor bias, const QuantSpec& q) {
  check_base("RtnLinear", weight, bias);
  q.grid.validate("RtnLinear", weight.size(1));
  merged_ = round_to_nearest(weight, q);
  dequantized_ = merged_.dequantize();
  bias_ = frozen(bias);
}

at::Tensor RtnLinear::forward(const at::Tensor& x) const {
  return add_bias(at::matmul(x, dequantized_.t()), bias_);
}

}  // namespace l4q
