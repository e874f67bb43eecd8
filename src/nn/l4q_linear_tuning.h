// Knobs of l4q_linear's CPU forward and backward (private to src/ and tests): tests turn them to reach
// every code path on small shapes.
#pragma once
#include <cstdint>

namespace l4q::detail {

// Layers with at most this many weights (out x in) sum their LoRA gradients directly, every
// row; larger ones use unmasked rank-r GEMMs minus clip corrections (src/nn/l4q_linear.cpp).
// Default 65536.
int64_t& lora_direct_max_elements();

// The products with W_q (forward and input gradient) run on AMX tiles from its codes
// (src/quant/codes_matmul.h), where the CPU has them, for layers of at least this many
// multiply-adds per product (tokens x out x in); smaller ones call BLAS on W_q, whose fixed
// cost is lower. Default 2^24.
int64_t& amx_min_macs();

}  // namespace l4q::detail
