// The L4Q linear layer: LoRA merged into the weight, then LSQ+ quantized.
//
//   W_q = Q(W0 + (alpha/r) B A; s, b)        Y = X W_q^T (+ bias)
//
// with straight-through gradients for X, A, B, s, b (and W0 when it requires grad, which
// gives full LSQ QAT). See docs/design.md for the equations and the memory argument.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "l4q/nn/linear.h"
#include "l4q/nn/lora.h"
#include "l4q/quant/grid.h"
#include "l4q/quant/lsq.h"
#include "l4q/quant/merged_weight.h"

namespace l4q {

struct L4QOptions {
  QuantGrid grid;
  double lora_scale = 1.0;  // alpha / r
  double grad_scale = 0.0;  // LSQ g; <= 0 means lsq_grad_scale(grid, in)
  // Rows of W per transient block in forward and backward; 0: automatic (the fewest equal
  // blocks of at most 12M elements, at least 1024 rows: one block buffer of at most 48 MiB in
  // fp32 for layers up to 12K wide, 45 MiB for each of LLaMA-7B's MLP projections).
  int64_t row_chunk = 0;
};

// Functional op. Shapes: x [..., in], W0 [out, in], A [r, in], B [out, r], s and b
// [out, in/G], bias [out] or undefined. A and B may both be undefined (no LoRA: fake-quant
// linear). Nothing of size out x in is saved for backward; forward and backward build the
// merged/quantized weight, the mask and G = dY^T X one block of `row_chunk` rows at a time.
// CPU, fp32 or fp64 (all tensors the same dtype, except s and b which may be fp32 under fp64).
// On CPU W0 may also be kept in bfloat16 or half with everything else fp32 (frozen: it cannot
// require grad); the results are bit for bit those of W0.to(float).
at::Tensor l4q_linear(const at::Tensor& x, const at::Tensor& W0, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& s, const at::Tensor& b,
                      const at::Tensor& bias, const L4QOptions& opt);

// l4q_linear keeps its row-block buffer (row_chunk x in of the widest layer run on the calling
// thread) from call to call, so a step does not page-fault a fresh 16-45 MiB buffer per layer.
// This frees the calling thread's buffer; the next call allocates it again.
void release_l4q_workspace();

// The offset of integer-offset training: b_eff = s * k with k = clamp(round(b/s), -Qp, -Qn)
// (round half to even), an integer multiple of the step, so that the GPTQ zero point
// z = -Qn - k is an integer in [0, 2^bits - 1]. Differentiable (straight-through round):
//   k in range:  d b_eff/db = 1,  d b_eff/ds = k - b/s
//   k clamped:   d b_eff/db = 0,  d b_eff/ds = k
// The value is exactly fl(s * k) (see docs/design.md, "Integer offset"). s and b [out, groups].
at::Tensor integer_offset(const at::Tensor& s, const at::Tensor& b, const QuantGrid& grid);

struct L4QLinearSpec {
  LoraSpec lora;
  QuantGrid grid;
  LsqInit init = LsqInit::L4Q;
  double grad_scale = 0.0;  // <= 0: LSQ default
  int64_t row_chunk = 0;  // 0: automatic (L4QOptions::row_chunk)
  bool integer_offset = false;  // forward and merge() use integer_offset(s, b) as the offset
};

// Module: holds the frozen weight, the adapter (A, B) and the quantizer (s, b).
class L4QLinear final : public Linear {
 public:
  // weight [out, in] (frozen, must be finite), bias [out] or undefined (frozen).
  // The quantizer is initialised from `weight` (B = 0 so W0 is the merged weight).
  // On CPU, a bfloat16 or half weight is kept as it is (half the memory of fp32) and widened
  // as the L4Q loops read it: the results are those of the same values in fp32, bit for bit.
  // The adapter, the quantizer and the computation are then fp32.
  L4QLinear(at::Tensor weight, at::Tensor bias, const L4QLinearSpec& spec,
            c10::optional<at::Generator> gen = c10::nullopt);

  at::Tensor forward(const at::Tensor& x) const override;

  // Quantization warm-up: while disabled the layer is plain float LoRA
  // (y = x W0^T + (alpha/r) x A^T B^T). Enabling re-initialises s, b from the merged weight
  // W0 + (alpha/r) B A, as the paper's code does after its first LoRA steps.
  void disable_quantization() { quantize_ = false; }
  void enable_quantization(LsqInit init);
  bool quantization_enabled() const { return quantize_; }

  // Re-initialises s, b from the current merged weight W0 + (alpha/r) B A.
  void init_quantizer(LsqInit init);
  // Keeps s >= min step; call after every optimizer step.
  void project_parameters_();
  void after_step() override { project_parameters_(); }

  at::Tensor merged_float_weight() const;  // W0 + (alpha/r) B A, no quantization
  // The offset the forward pass uses: b, or integer_offset(s, b) when spec.integer_offset
  // (differentiable; detach it for export).
  at::Tensor effective_offset() const;
  MergedWeight merge() const;              // the integer weight the forward pass uses

  std::vector<NamedParam> parameters() const override;
  at::Tensor effective_weight() const override;
  at::Tensor bias() const override { return bias_; }
  std::optional<MergedWeight> quantized_weight() const override { return merge(); }
  std::optional<double> clipped_fraction() const override;
  std::string method() const override { return "l4q"; }

  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }
  const L4QLinearSpec& spec() const { return spec_; }
  L4QOptions options() const;

  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& lora_a() const { return a_; }
  const at::Tensor& lora_b() const { return b_lora_; }
  const at::Tensor& step() const { return s_; }
  const at::Tensor& offset() const { return offset_; }

 private:
  L4QLinearSpec spec_;
  at::Tensor weight_, bias_;
  at::Tensor a_, b_lora_;  // LoRA A [r, in], B [out, r]
  at::Tensor s_, offset_;  // quantizer [out, groups]
  bool quantize_ = true;
};

}  // namespace l4q
