// Causal grouped-query attention, softmax(q k^T / sqrt(d) + causal mask) v, written with
// matmul + softmax (at::scaled_dot_product_attention is not in LibTorch 1.13) in the order
// transformers' eager LlamaAttention uses, so results agree to fp32 rounding.
#pragma once
#include <ATen/core/Tensor.h>

namespace l4q {

// q [B, H, T, d]; k, v [B, KV, S, d] with KV dividing H (query head h reads key/value head
// h / (H/KV), as transformers' repeat_kv) and S >= T. Query i sits at absolute position
// S - T + i and sees keys 0 .. S - T + i. Returns [B, H, T, d].
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace l4q
