// A linear layer that multiplies on packed low-bit codes (an `l4q` export's projection): the
// float weight is never materialised except on request (effective_weight()).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "l4q/infer/packed_matmul.h"
#include "l4q/infer/packed_weight.h"
#include "l4q/nn/linear.h"

namespace l4q {

class PackedLinear final : public Linear {
 public:
  // bias [out] fp32 or undefined.
  explicit PackedLinear(PackedWeight weight, at::Tensor bias = {});

  // x [..., in] fp32 -> [..., out]: the fused kernel for up to 4 rows, dequantized tiles and a
  // GEMM for more (packed_matmul).
  at::Tensor forward(const at::Tensor& x) const override;
  int64_t in_features() const override { return w_.in; }
  int64_t out_features() const override { return w_.out; }
  // W_q dequantized on demand (fp32 [out, in]; bit for bit the training forward's W_q).
  at::Tensor effective_weight() const override { return w_.dequantize(); }
  at::Tensor bias() const override { return bias_; }
  std::optional<MergedWeight> quantized_weight() const override { return w_.to_merged(); }
  std::string method() const override { return "packed"; }

  const PackedWeight& packed() const { return w_; }
  // Forces a kernel (tests and benchmarks); Auto by default.
  void set_kernel(PackedKernel k) { kernel_ = k; }

 private:
  PackedWeight w_;
  at::Tensor bias_;
  PackedKernel kernel_ = PackedKernel::Auto;
};

}  // namespace l4q
