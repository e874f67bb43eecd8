// LoRA adapter hyper-parameters and initialisation.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace l4q {

struct LoraSpec {
  int64_t rank = 4;
  double alpha = 16.0;
  double dropout = 0.0;  // on the LoRA branch's input only (float LoRA methods)

  double scale() const { return alpha / static_cast<double>(rank); }
  void validate(const std::string& where) const;
};

// A [rank, in]: Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)), as
// torch.nn.Linear and PEFT initialise it. Uses the given generator (or torch's default).
at::Tensor init_lora_a(int64_t rank, int64_t in_features, at::ScalarType dtype,
                       c10::optional<at::Generator> gen = c10::nullopt);
// B [out, rank]: zeros, so the adapted layer starts equal to the base layer.
at::Tensor init_lora_b(int64_t out_features, int64_t rank, at::ScalarType dtype);

}  // namespace l4q
