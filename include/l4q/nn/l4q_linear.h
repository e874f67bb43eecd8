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

#include "l4q/nn/lora.h"
#include "l4q/quant/grid.h"
#include "l4q/quant/lsq.h"

namespace l4q {

struct L4QOptions {
  QuantGrid grid;
  double lora_scale = 1.0;  // alpha / r
  double grad_scale = 0.0;  // LSQ g; <= 0 means lsq_grad_scale(grid, in)
  int64_t row_chunk = 256;  // rows of W per transient block in forward and backward
};

// Functional op. Shapes: x [..., in], W0 [out, in], A [r, in], B [out, r], s and b
// [out, in/G], bias [out] or undefined. A and B may both be undefined (no LoRA: fake-quant
// linear). Nothing of size out x in is saved for backward; forward and backward build the
// merged/quantized weight, the mask and G = dY^T X one block of `row_chunk` rows at a time.
// CPU, fp32 or fp64 (all tensors the same dtype, except s and b which may be fp32 under fp64).
at::Tensor l4q_linear(const at::Tensor& x, const at::Tensor& W0, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& s, const at::Tensor& b,
                      const at::Tensor& bias, const L4QOptions& opt);

// The deployable form of a quantized weight: W = w_int * s + b per group.
struct MergedWeight {
  at::Tensor w_int;  // int8 [out, in], signed codes in [Qn, Qp]
  at::Tensor s;      // [out, groups]
  at::Tensor b;      // [out, groups]
  QuantGrid grid;    // group_size resolved (never -1)

  // w_int * s + b, computed with the same element math as the forward pass: bit for bit the
  // W_q that l4q_linear used.
  at::Tensor dequantize() const;
  // Unsigned view for export: q = w_int - Qn in [0, 2^bits - 1] (uint8), m = b + s*Qn.
  at::Tensor unsigned_codes() const;
  at::Tensor min_offset() const;
};

// Quantizes a weight with given s, b exactly as the forward pass does (no autograd).
MergedWeight quantize_weight(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                             const QuantGrid& grid);

struct L4QLinearSpec {
  LoraSpec lora;
  QuantGrid grid;
  LsqInit init = LsqInit::L4Q;
  double grad_scale = 0.0;  // <= 0: LSQ default
  int64_t row_chunk = 256;
};

// Module: holds the frozen weight, the adapter (A, B) and the quantizer (s, b).
class L4QLinear {
 public:
  // weight [out, in] (frozen, must be finite), bias [out] or undefined (frozen).
  // The quantizer is initialised from `weight` (B = 0 so W0 is the merged weight).
  L4QLinear(at::Tensor weight, at::Tensor bias, const L4QLinearSpec& spec,
            c10::optional<at::Generator> gen = c10::nullopt);

  at::Tensor forward(const at::Tensor& x) const;

  // Re-initialises s, b from the current merged weight W0 + (alpha/r) B A (used after a
  // float-LoRA warm-up, as the paper's code does).
  void init_quantizer(LsqInit init);
  // Keeps s >= min step; call after every optimizer step.
  void project_parameters_();

  at::Tensor merged_float_weight() const;  // W0 + (alpha/r) B A, no quantization
  MergedWeight merge() const;

  std::vector<std::pair<std::string, at::Tensor>> adapter_parameters() const;    // A, B
  std::vector<std::pair<std::string, at::Tensor>> quantizer_parameters() const;  // s, b

  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }
  const L4QLinearSpec& spec() const { return spec_; }
  L4QOptions options() const;

  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  const at::Tensor& lora_a() const { return a_; }
  const at::Tensor& lora_b() const { return b_lora_; }
  const at::Tensor& step() const { return s_; }
  const at::Tensor& offset() const { return offset_; }

 private:
  L4QLinearSpec spec_;
  at::Tensor weight_, bias_;
  at::Tensor a_, b_lora_;  // LoRA A [r, in], B [out, r]
  at::Tensor s_, offset_;  // quantizer [out, groups]
};

}  // namespace l4q
