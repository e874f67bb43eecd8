#include "l4q/nn/lora.h"

#include <ATen/ATen.h>

#include <cmath>

#include "l4q/error.h"

namespace l4q {

void LoraSpec::validate(const std::string& where) const {
  if (rank < 1) fail("[", where, "] lora.rank: expected >= 1, got ", rank);
  if (!std::isfinite(alpha) || alpha <= 0)
    fail("[", where, "] lora.alpha: expected a finite value > 0, got ", alpha);
  if (!(dropout >= 0 && dropout < 1))
    fail("[", where, "] lora.dropout: expected 0 <= dropout < 1, got ", dropout);
}

at::Tensor init_lora_a(int64_t rank, int64_t in_features, at::ScalarType dtype,
                       c10::optional<at::Generator> gen) {
  // kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in)
  // = 1 / sqrt(fan_in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  auto A = at::empty({rank, in_features}, at::TensorOptions().dtype(dtype));
  A.uniform_(-bound, bound, gen);
  return A;
}

at::Tensor init_lora_b(int64_t out_features, int64_t rank, at::ScalarType dtype) {
  return at::zeros({out_features, rank}, at::TensorOptions().dtype(dtype));
}

}  // namespace l4q
