// Emulator stand-in for <cuda_bf16.h>: the conversions the kernels use, on raw bf16 bits
// (round to nearest even, as __float2bfloat16_rn).
#pragma once
#include <cstdint>

#include "common/bf16.h"

struct __nv_bfloat16 {
  uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16_rn(float x) { return {l4q::bf16::from_float(x)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return l4q::bf16::to_float(h.bits); }
