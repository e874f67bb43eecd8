#include "l4q/infer/packed_linear.h"

#include <ATen/ATen.h>

#include "l4q/error.h"
#include "quant/tensor_checks.h"

namespace l4q {

PackedLinear::PackedLinear(PackedWeight weight, at::Tensor bias)
    : w_(std::move(weight)), bias_(std::move(bias)) {
  if (!w_.qweight.defined()) fail("[PackedLinear] weight: empty PackedWeight");
  if (bias_.defined() && (!bias_.sizes().equals({w_.out}) || bias_.scalar_type() != at::kFloat))
    fail("[PackedLinear] bias: expected fp32 [", w_.out, "], got ", bias_.scalar_type(), " ",
         detail::shape_str(bias_));
}

at::Tensor PackedLinear::forward(const at::Tensor& x) const {
  auto y = packed_matmul(w_, x, kernel_);
  if (bias_.defined()) y.add_(bias_);
  return y;
}

}  // namespace l4q
