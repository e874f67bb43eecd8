#include "l4q/nn/linear.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "nn/row_matmul.h"

namespace l4q {

void Linear::set_deployed(bool deployed) {
  at::NoGradGuard no_grad;
  deployed_weight_ = deployed && rounds_at_export() ? effective_weight() : at::Tensor();
}

FloatLinear::FloatLinear(at::Tensor weight, at::Tensor bias)
    : weight_(weight.detach()), bias_(bias.defined() ? bias.detach() : bias) {}

at::Tensor FloatLinear::forward(const at::Tensor& x) const {
  const auto y = detail::matmul_weight_t(x, weight_);
  return bias_.defined() ? y + bias_ : y;
}

LinearFactory float_linear_factory() {
  return [](const std::string&, const at::Tensor& w, const at::Tensor& b) {
    return std::make_unique<FloatLinear>(w, b);
  };
}

}  // namespace l4q
