// Knobs of l4q_linear's CPU backward (private to src/ and tests): tests turn them to reach
// every code path on small shapes.
#pragma once
#include <cstdint>

namespace l4q::detail {

// Layers with at most this many weights (out x in) sum their LoRA gradients directly, every
// row; larger ones use unmasked rank-r GEMMs minus clip corrections (src/nn/l4q_linear.cpp).
// Default 65536.
int64_t& lora_direct_max_elements();

}  // namespace l4q::detail
