// Element math of LSQ+ fake quantization, shared by the CPU path (src/) and the CUDA kernels
// (kernels/*.cu). Plain C++ with __host__ __device__ markers: no torch, no std library.
//
//   w     = (W - b) / s                   W: the merged weight W0 + (alpha/r) B A
//   w_c   = clamp(w, Qn, Qp)              Qn = -2^(bits-1), Qp = 2^(bits-1) - 1
//   w_int = round_half_even(w_c)
//   W_q   = w_int * s + b                 (a multiply, then an add: never contracted to FMA,
//                                          so every path that dequantizes gets the same bits)
//   M     = [Qn <= w <= Qp]               the straight-through gate
//   dW_q/dW = M
//   dW_q/ds = M ? (w_int - w) : w_c       LSQ step gradient
//   dW_q/db = 1 - M                       LSQ+ offset gradient
#pragma once

#if defined(__CUDACC__)
#define L4Q_HD __host__ __device__ __forceinline__
#else
#define L4Q_HD inline
#endif

namespace l4q::qmath {

// Smallest step size any path divides by. s is also re-projected to >= kMinStep after every
// optimizer step (see L4QLinear::project_parameters_), so this clamp is a guard, not a feature.
constexpr float kMinStep = 1e-8f;

L4Q_HD int grid_min(int bits) { return -(1 << (bits - 1)); }
L4Q_HD int grid_max(int bits) { return (1 << (bits - 1)) - 1; }

// Round half to even without a libm call, so that the loop vectorises with plain SSE2/AVX
// adds: for |x| < 2^22 (float) adding and subtracting 1.5 * 2^23 leaves the integer nearest
// to x under the default round-to-nearest-even mode. Our inputs are clamped to [-128, 127].
// Compilers may not fold (x + c) - c without -ffast-math, which we never use.
L4Q_HD float round_half_even(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  return (x + magic) - magic;
}
L4Q_HD double round_half_even(double x) {
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  return (x + magic) - magic;
}

// Result of quantizing one element.
template <typename T>
struct QuantElem {
  T w;       // (W - b) / s, unclamped
  T w_c;     // clamp(w, Qn, Qp)
  T w_int;   // round(w_c)
  bool in;   // Qn <= w <= Qp  (false for NaN)
};

template <typename T>
L4Q_HD T clamp_step(T s) { return s > T(kMinStep) ? s : T(kMinStep); }

template <typename T>
L4Q_HD QuantElem<T> quantize(T W, T s, T b, T qn, T qp) {
  QuantElem<T> e;
  e.w = (W - b) / s;
  e.in = (e.w >= qn) && (e.w <= qp);
  e.w_c = e.w < qn ? qn : (e.w > qp ? qp : e.w);
  e.w_int = round_half_even(e.w_c);
  return e;
}

// nvcc contracts a*b+c into an FMA even across statements, so the device path spells the
// rounding out; the host library is built with -ffp-contract=off.
L4Q_HD float dequantize(float w_int, float s, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(w_int, s), b);
#else
  return w_int * s + b;
#endif
}
L4Q_HD double dequantize(double w_int, double s, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(__dmul_rn(w_int, s), b);
#else
  return w_int * s + b;
#endif
}

// ---------------------------------------------------------------------------------------
// Division by a per-group reciprocal (used by the CUDA kernels; the CPU path divides).
//
// An IEEE division costs one MUFU.RCP per element on a GPU (16 lanes per SM-clock, 1/8 of the
// FP32 rate), which alone would take as long as the tensor-core work of the fused matmul (see
// docs/kernels.md). With y = RN(1/s) computed once per group, one Markstein correction step
// gives the correctly rounded quotient from three FP32 operations:
//     q = RN(a*y);  r = a - q*s (exact, by FMA);  q' = RN(q + r*y) = RN(a/s)
// The theorem needs r not to underflow and nothing to overflow; outside the guarded range
// (|a| in [2^-64, 2^64], s in [kMinStep, 2^100]) the function falls back to the division, so
// the result is bit-identical to a / s for every input. tests/unit/test_kernels_quant_math.cpp
// checks that over random inputs, exact ties and near-ties.
// ---------------------------------------------------------------------------------------
L4Q_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}

L4Q_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// RN(1/s) for a step already passed through clamp_step().
L4Q_HD float recip_step(float s) { return 1.0f / s; }

L4Q_HD bool recip_division_exact_range(float a, float s) {
  const float aa = a < 0.0f ? -a : a;
  return aa >= 0x1p-64f && aa <= 0x1p64f && s >= kMinStep && s <= 0x1p100f;
}

// RN(a / s), given y = recip_step(s).
L4Q_HD float div_rn_by_recip(float a, float s, float y) {
  if (!recip_division_exact_range(a, s)) return a / s;
  const float q = mul_rn(a, y);
  const float r = fma_rn(-q, s, a);
  return fma_rn(r, y, q);
}

// quantize() with the division replaced by div_rn_by_recip: bit-identical results.
L4Q_HD QuantElem<float> quantize_recip(float W, float s, float inv_s, float b, float qn,
                                       float qp) {
  QuantElem<float> e;
  e.w = div_rn_by_recip(W - b, s, inv_s);
  e.in = (e.w >= qn) && (e.w <= qp);
  e.w_c = e.w < qn ? qn : (e.w > qp ? qp : e.w);
  e.w_int = round_half_even(e.w_c);
  return e;
}

// Per-element contributions to dL/ds and dL/db, before the group sum and the LSQ scale g.
template <typename T>
L4Q_HD T step_grad(const QuantElem<T>& e) { return e.in ? (e.w_int - e.w) : e.w_c; }
template <typename T>
L4Q_HD T offset_grad(const QuantElem<T>& e) { return e.in ? T(0) : T(1); }

}  // namespace l4q::qmath
