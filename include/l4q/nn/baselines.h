// The baseline linear-layer methods L4Q is compared against. Each is a plain module over the
// frozen base weight; see docs/design.md for what each trains and how it becomes an integer
// weight at export.
//
//   lora      y = x W0^T + (alpha/r) drop(x) A^T B^T                      export: float merge
//   lora-rtn  the same training; export: round-to-nearest of W0 + (alpha/r) B A
//   qat-lora  y = x Q(W0)^T + (alpha/r) drop(x) A^T B^T  (s, b fixed or learned)
//             export: round-to-nearest of the merged weight (PTQ, scales recomputed)
//   qa-lora   y = x Q(W0)^T + (alpha/r) pool_G(drop(x)) A^T B^T,  A [r, in/G]
//             export: exact, (alpha/r)(B A)/G folds into each group's offset
//   lsq       y = x Q(W; s, b)^T with W, s, b all trained (full QAT)
//   rtn       y = x Q(W0)^T, nothing trained
#pragma once
#include <ATen/core/Tensor.h>

#include "l4q/nn/linear.h"
#include "l4q/nn/lora.h"
#include "l4q/quant/grid.h"
#include "l4q/quant/lsq.h"

namespace l4q {

// Settings every quantized baseline needs.
struct QuantSpec {
  QuantGrid grid;
  LsqInit init = LsqInit::MinMax;  // how s, b come from a float weight (PTQ and fixed bases)
  double grad_scale = 0.0;         // learned quantizers: LSQ g (<= 0: default)
  int64_t row_chunk = 0;  // 0: automatic (L4QOptions::row_chunk)
};

// Round-to-nearest PTQ of a float weight: s, b from `init`, then codes.
MergedWeight round_to_nearest(const at::Tensor& W, const QuantSpec& q);

class LoraLinear final : public Linear {
 public:
  // With `ptq` set this is lora-rtn: the exported weight is RTN of the merged weight.
  LoraLinear(at::Tensor weight, at::Tensor bias, const LoraSpec& lora,
             std::optional<QuantSpec> ptq = std::nullopt,
             c10::optional<at::Generator> gen = c10::nullopt);
  at::Tensor forward(const at::Tensor& x) const override;
  std::vector<NamedParam> parameters() const override;
  at::Tensor effective_weight() const override;
  at::Tensor bias() const override { return bias_; }
  std::optional<MergedWeight> quantized_weight() const override;
  std::string method() const override { return ptq_ ? "lora-rtn" : "lora"; }
  bool rounds_at_export() const override { return ptq_.has_value(); }
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }
  at::Tensor merged_float_weight() const;

 private:
  LoraSpec lora_;
  std::optional<QuantSpec> ptq_;
  at::Tensor weight_, bias_, a_, b_;
};

class QatLoraLinear final : public Linear {
 public:
  QatLoraLinear(at::Tensor weight, at::Tensor bias, const LoraSpec& lora, const QuantSpec& q,
                bool learn_scales, c10::optional<at::Generator> gen = c10::nullopt);
  at::Tensor forward(const at::Tensor& x) const override;
  std::vector<NamedParam> parameters() const override;
  void after_step() override;
  at::Tensor effective_weight() const override;
  at::Tensor bias() const override { return bias_; }
  std::optional<MergedWeight> quantized_weight() const override;
  std::optional<double> clipped_fraction() const override;
  std::string method() const override { return "qat-lora"; }
  bool rounds_at_export() const override { return true; }
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }

 private:
  LoraSpec lora_;
  QuantSpec q_;
  bool learn_scales_;
  at::Tensor weight_, bias_, a_, b_, s_, offset_;
  // With fixed scales the fake-quantized base Q(W0) never changes: it is computed once and
  // multiplied directly (as torchao's QAT keeps it for backward), trading one out x in
  // buffer for the two block-wise rebuilds per step. With learned scales it is rebuilt.
  at::Tensor base_fq_;
};

class QaLoraLinear final : public Linear {
 public:
  QaLoraLinear(at::Tensor weight, at::Tensor bias, const LoraSpec& lora, const QuantSpec& q,
               c10::optional<at::Generator> gen = c10::nullopt);
  at::Tensor forward(const at::Tensor& x) const override;
  std::vector<NamedParam> parameters() const override;
  at::Tensor effective_weight() const override;
  at::Tensor bias() const override { return bias_; }
  std::optional<MergedWeight> quantized_weight() const override;
  std::string method() const override { return "qa-lora"; }
  int64_t in_features() const override { return base_.w_int.size(1); }
  int64_t out_features() const override { return base_.w_int.size(0); }

 private:
  LoraSpec lora_;
  QuantSpec q_;
  MergedWeight base_;   // the frozen quantized base
  at::Tensor base_dq_;  // its dequantized float form, what the forward multiplies by
  at::Tensor bias_, a_, b_;
};

class LsqLinear final : public Linear {
 public:
  LsqLinear(at::Tensor weight, at::Tensor bias, const QuantSpec& q);
  at::Tensor forward(const at::Tensor& x) const override;
  std::vector<NamedParam> parameters() const override;
  void after_step() override;
  at::Tensor effective_weight() const override;
  at::Tensor bias() const override { return bias_; }
  std::optional<MergedWeight> quantized_weight() const override;
  std::optional<double> clipped_fraction() const override;
  std::string method() const override { return "lsq"; }
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }

 private:
  QuantSpec q_;
  at::Tensor weight_, bias_, s_, offset_;
};

class RtnLinear final : public Linear {
 public:
  RtnLinear(at::Tensor weight, at::Tensor bias, const QuantSpec& q);
  at::Tensor forward(const at::Tensor& x) const override;
  at::Tensor effective_weight() const override { return dequantized_; }
  at::Tensor bias() const override { return bias_; }
  std::optional<MergedWeight> quantized_weight() const override { return merged_; }
  std::string method() const override { return "rtn"; }
  int64_t in_features() const override { return dequantized_.size(1); }
  int64_t out_features() const override { return dequantized_.size(0); }

 private:
  MergedWeight merged_;
  at::Tensor dequantized_, bias_;
};

}  // namespace l4q
