// Knobs of l4q_linear's CPU forward and backward (private to src/ and tests): tests turn them to reach
// every code path on small shapes.
#pragma once
#include <cstdint>

namespace l4q::detail {

// Layers with at most this many weights (out x in) sum their LoRA gradients directly, every
// row; larger ones use unmasked rank-r GEMMs minus clip corrections (src/nn/l4q_linear.cpp).
// Default 65536.
int64_t& lora_direct_max_elements();

// The forward runs on AMX tiles from W_q's codes (src/quant/codes_matmul.h), where the CPU has
// them, for products of at least this many multiply-adds (tokens x out x in); smaller ones call
// BLAS on W_q, whose fixed cost is lower. Default 2^24.
int64_t& amx_forward_min_macs();

}  // namespace l4q::detail
