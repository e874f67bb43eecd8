// The interface every linear-layer method implements (float, LoRA, QAT-LoRA, QA-LoRA, LSQ,
// L4Q), and the factory the model uses to build its projections. The model never names a
// method: a LinearFactory decides, per module name, what each projection becomes.
#pragma once
#include <ATen/core/Tensor.h>

#include "l4q/quant/merged_weight.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace l4q {

// What a trainable tensor is, so the trainer can put it in the right optimizer group.
enum class ParamRole {
  Adapter,    // LoRA A, B: adapter lr and weight decay
  Quantizer,  // step sizes and offsets: their own lr, no weight decay, fp32
  Weight,     // full weights (full LSQ QAT)
};

struct NamedParam {
  std::string name;  // relative to the layer, e.g. "lora_a"
  at::Tensor tensor;
  ParamRole role;
};

class Linear {
 public:
  virtual ~Linear() = default;
  // x [..., in] -> [..., out]
  virtual at::Tensor forward(const at::Tensor& x) const = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // Trainable tensors (requires_grad), empty for a frozen float layer.
  virtual std::vector<NamedParam> parameters() const { return {}; }
  // Called after every optimizer step (e.g. keeps step sizes positive).
  virtual void after_step() {}
  // Training mode toggles dropout where a method has any.
  virtual void set_training(bool training) { training_ = training; }
  // The float weight [out, in] this layer multiplies by (dequantized for quantized methods),
  // without autograd. Evaluation and export start from it.
  virtual at::Tensor effective_weight() const = 0;
  virtual at::Tensor bias() const { return {}; }
  // The deployable integer weight for quantized methods (codes, step, offset); nullopt for
  // float methods. Dequantizing it gives effective_weight().
  virtual std::optional<MergedWeight> quantized_weight() const { return std::nullopt; }
  // Fraction of weights the learned quantizer clips (|w| outside [Qn, Qp]); nullopt for
  // methods without a quantizer in the training forward.
  virtual std::optional<double> clipped_fraction() const { return std::nullopt; }
  virtual std::string method() const = 0;
  // Methods whose exported model is not their training-time one: lora-rtn rounds the merged
  // W0 + BA to the grid only at export, qat-lora re-quantizes it (PTQ). While deployed, their
  // forward multiplies by the exported weight instead, so evaluation and generation run what
  // users deploy. set_deployed(true) builds that weight once (an out x in buffer, for frozen
  // parameters: call it after training); set_deployed(false) frees it. No-op for the others.
  virtual bool rounds_at_export() const { return false; }
  void set_deployed(bool deployed);

 protected:
  bool training_ = true;
  at::Tensor deployed_weight_;  // defined while deployed (rounds_at_export() layers only)
};

// A plain frozen linear layer: y = x W^T (+ b).
class FloatLinear final : public Linear {
 public:
  FloatLinear(at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x) const override;
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }
  at::Tensor effective_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  std::string method() const override { return "float"; }

 private:
  at::Tensor weight_, bias_;
};

// name: the module's HF name, e.g. "model.layers.3.self_attn.q_proj"; weight [out, in];
// bias [out] or undefined.
using LinearFactory = std::function<std::unique_ptr<Linear>(
    const std::string& name, const at::Tensor& weight, const at::Tensor& bias)>;

LinearFactory float_linear_factory();

}  // namespace l4q
