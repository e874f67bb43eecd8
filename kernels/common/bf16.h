// bfloat16 as raw bits, for code that must agree with the GPU's conversions without including
// cuda_bf16.h (the CPU references, the unit tests, the checkers' host side).
//
// bf16 is the upper half of an IEEE binary32. float -> bf16 rounds to nearest, ties to even
// (what __float2bfloat16_rn does); NaN stays NaN (quietened); bf16 -> float is exact.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/quant_math.h"  // L4Q_HD

namespace l4q::bf16 {

L4Q_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

L4Q_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

L4Q_HD uint16_t from_float(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0)
    return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

L4Q_HD float to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// x rounded to the nearest bf16 value, as a float.
L4Q_HD float round(float x) { return to_float(from_float(x)); }

}  // namespace l4q::bf16
