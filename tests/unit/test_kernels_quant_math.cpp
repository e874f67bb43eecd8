// Element math that the CUDA kernels use in place of the CPU path's formulas, checked on the
// CPU: the reciprocal division (bit-identical to a / s), quantize_recip (bit-identical to
// quantize) and the bf16 rounding of common/bf16.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "common/bf16.h"
#include "common/quant_math.h"

namespace l4q {
namespace {

uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// A step size with a random mantissa and exponent in [2^-27, 2^20).
float random_step(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> e(-27, 19);
  std::uniform_real_distribution<float> m(1.0f, 2.0f);
  return std::ldexp(m(rng), e(rng));
}

void expect_same_quotient(float a, float s, int64_t& checked) {
  const float q = a / s;
  const float r = qmath::div_rn_by_recip(a, s, qmath::recip_step(s));
  ASSERT_EQ(bits_of(q), bits_of(r)) << std::hexfloat << "a " << a << " s " << s << " a/s " << q
                                    << " got " << r;
  ++checked;
}

TEST(KernelsQuantMath, ReciprocalDivisionIsCorrectlyRounded) {
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<uint32_t> any(0, 0xffffffffu);
  std::uniform_int_distribution<int> k(-300, 300);
  std::uniform_real_distribution<float> u(-1000.f, 1000.f);
  int64_t checked = 0;
  for (int it = 0; it < 300000; ++it) {
    const float s = random_step(rng);
    // Arbitrary bit patterns (including subnormals, huge values and zeros).
    const float a = from_bits(any(rng));
    if (std::isfinite(a)) expect_same_quotient(a, s, checked);
    // Exact ties a = (k + 1/2) s and their neighbours: where a 1-ulp error would change w_int.
    const float tie = (static_cast<float>(k(rng)) + 0.5f) * s;
    expect_same_quotient(tie, s, checked);
    expect_same_quotient(std::nextafter(tie, 1e30f), s, checked);
    expect_same_quotient(std::nextafter(tie, -1e30f), s, checked);
    // Ordinary weights.
    expect_same_quotient(u(rng) * s, s, checked);
    expect_same_quotient(u(rng) * 1e-3f, s, checked);
  }
  // The clamp of the step itself and tiny numerators (the guarded fallback).
  expect_same_quotient(1.0f, qmath::kMinStep, checked);
  expect_same_quotient(0x1p-70f, 0.5f, checked);
  expect_same_quotient(-0.0f, 0.25f, checked);
  expect_same_quotient(0.0f, 0.25f, checked);
  EXPECT_GT(checked, 1500000);
}

TEST(KernelsQuantMath, QuantizeRecipEqualsQuantize) {
  std::mt19937_64 rng(99);
  std::normal_distribution<float> n(0.f, 1.f);
  for (int bits : {2, 3, 4, 8}) {
    const float qn = static_cast<float>(qmath::grid_min(bits)),
                qp = static_cast<float>(qmath::grid_max(bits));
    for (int it = 0; it < 100000; ++it) {
      const float s = qmath::clamp_step(std::abs(n(rng)) * 0.05f);
      const float b = n(rng) * 0.01f;
      // Half of the weights on exact ties of the grid, the rest anywhere (also far outside).
      const float W = it % 2 ? b + (std::round(n(rng) * 4) + 0.5f) * s : n(rng) * 0.3f;
      const auto e = qmath::quantize(W, s, b, qn, qp);
      const auto f = qmath::quantize_recip(W, s, qmath::recip_step(s), b, qn, qp);
      ASSERT_EQ(bits_of(e.w), bits_of(f.w)) << W << " " << s << " " << b;
      ASSERT_EQ(bits_of(e.w_int), bits_of(f.w_int));
      ASSERT_EQ(bits_of(e.w_c), bits_of(f.w_c));
      ASSERT_EQ(e.in, f.in);
    }
  }
  // NaN weights stay out of the gate on both paths.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(qmath::quantize_recip(nan, 0.5f, 2.0f, 0.f, -8.f, 7.f).in);
}

TEST(KernelsQuantMath, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16::from_float(1.0f), 0x3F80);
  EXPECT_EQ(bf16::from_float(-2.0f), 0xC000);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16::from_float(1.0f + 0x1p-8f), 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(bf16::from_float(1.0f + 3 * 0x1p-8f), 0x3F82);
  EXPECT_EQ(bf16::from_float(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);  // just above the tie
  EXPECT_EQ(bf16::to_float(0x3F81), 1.0f + 0x1p-7f);
  EXPECT_TRUE(std::isnan(bf16::round(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isinf(bf16::round(std::numeric_limits<float>::infinity())));
  // Large finite values round to infinity only past the largest bf16.
  EXPECT_TRUE(std::isinf(bf16::round(std::numeric_limits<float>::max())));
  // Every bf16 value is a fixed point.
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float x = bf16::to_float(static_cast<uint16_t>(h));
    if (std::isnan(x)) continue;
    ASSERT_EQ(bf16::from_float(x), h);
  }
}

}  // namespace
}  // namespace l4q
