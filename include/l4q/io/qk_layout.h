// The two RoPE row orders of q_proj / k_proj weights. l4q's model uses HF's rotate-half order
// (element i of a head pairs with i + head_dim/2); Meta, llama2.c and llama.cpp's GGUF use the
// interleaved order (pairs 2i, 2i+1). Per head, interleaved row 2i+c is rotate-half row
// c*(head_dim/2)+i (transformers convert_llama_weights_to_hf.py `permute`). K uses the number
// of KV heads. Only output rows move, so the permutation commutes with per-row quantization
// groups along the input.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace l4q {

// w [n_heads * head_dim, ...] in interleaved order -> a new tensor in rotate-half order.
at::Tensor interleaved_to_rotate_half(const at::Tensor& w, int64_t n_heads);
// The inverse: rotate-half order -> interleaved order (for GGUF / llama2.c export).
at::Tensor rotate_half_to_interleaved(const at::Tensor& w, int64_t n_heads);

}  // namespace l4q
