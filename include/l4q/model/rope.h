// Rotary position embedding in HF's rotate-half convention: within a head of size d, element i
// pairs with element i + d/2 (q/k rows of every checkpoint are brought to this layout by the
// loaders). Frequencies follow transformers' modeling_rope_utils.py, computed in fp32 exactly
// as it does, so logits agree with LlamaForCausalLM to fp32 rounding:
//   inv_freq[i] = 1 / theta^(2i/d)                                    (type none)
//   inv_freq[i] /= factor                                             (type linear)
//   llama3: long wavelengths divided by factor, short kept, a smooth blend in between.
#pragma once
#include <ATen/core/Tensor.h>

#include "l4q/model/config.h"

namespace l4q {

class RotaryEmbedding {
 public:
  // Throws l4q::Error when the config cannot define frequencies (odd head_dim, theta <= 0,
  // unknown scaling type, llama3 with high_freq_factor == low_freq_factor).
  explicit RotaryEmbedding(const LlamaConfig& config);

  // cos and sin [count, head_dim] for positions start .. start+count-1, in `dtype`, on
  // `device` (the angles themselves are fp32, as in transformers).
  std::pair<at::Tensor, at::Tensor> cos_sin(int64_t start, int64_t count, at::ScalarType dtype,
                                            at::Device device) const;

  const at::Tensor& inv_freq() const { return inv_freq_; }  // fp32 [head_dim / 2], CPU

 private:
  at::Tensor inv_freq_;
};

// x [..., T, head_dim] with cos, sin [T, head_dim]: x * cos + rotate_half(x) * sin, where
// rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace l4q
