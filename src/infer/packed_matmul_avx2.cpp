// The AVX2 + FMA fused packed matmul. This file alone is compiled with -mavx2 -mfma (see the
// top CMakeLists.txt); packed_matmul.cpp calls it only after __builtin_cpu_supports("avx2").
//
// Per output row and block of 32 codes: decode the codes into four vectors of 8 floats, then
// one FMA per vector and row of x into a per-group accumulator; at the end of a group the
// accumulator is scaled by the group's step into the row's accumulator (y = s * sum q x, the
// m * sum x term is a scalar dot over groups). The codes are decoded once for up to 4 rows of x.
#include "infer/packed_matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <cstring>

namespace l4q::packed_kernels {

bool avx2_kernel_built() { return true; }

namespace {

// Codes 8c..8c+7 of a block, as floats, for c = 0..3 (the block order of packed_format.h).
template <int Bits>
inline void decode_block(const uint8_t* blk, __m256 c[4]) {
  if constexpr (Bits == 4) {
    // byte j: code j (low nibble), code j + 16 (high nibble). Widening 8 bytes at a time to
    // 32-bit lanes gives both codes of a byte from one widening (mask / shift).
    const __m256i m = _mm256_set1_epi32(0x0F);
    const __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk)));
    const __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 8)));
    c[0] = _mm256_cvtepi32_ps(_mm256_and_si256(b0, m));
    c[1] = _mm256_cvtepi32_ps(_mm256_and_si256(b1, m));
    c[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4));
    c[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4));
  } else if constexpr (Bits == 2 || Bits == 3) {
    // byte j of ql: codes j, j+8, j+16, j+24 in bits 0-1, 2-3, 4-5, 6-7; one widening of the
    // 8 bytes to 32-bit lanes, then a shift and a mask per group of 8 codes.
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk)));
    const __m256i m = _mm256_set1_epi32(0x03);
    __m256i q[4] = {_mm256_and_si256(v, m), _mm256_and_si256(_mm256_srli_epi32(v, 2), m),
                    _mm256_and_si256(_mm256_srli_epi32(v, 4), m), _mm256_srli_epi32(v, 6)};
    if constexpr (Bits == 3) {
      // bit 2 of code 8k + j is bit j of qh[k], i.e. bit 8k + j of the 32-bit word qh
      uint32_t word;
      std::memcpy(&word, blk + 8, 4);
      const __m256i hw = _mm256_set1_epi32(static_cast<int>(word));
      const __m256i four = _mm256_set1_epi32(4);
      // lanes j < 2 of the first 8 codes need a left shift, the others a right shift
      const __m256i h0 = _mm256_srlv_epi32(_mm256_sllv_epi32(hw, _mm256_setr_epi32(2, 1, 0, 0, 0, 0, 0, 0)),
                                           _mm256_setr_epi32(0, 0, 0, 1, 2, 3, 4, 5));
      q[0] = _mm256_or_si256(q[0], _mm256_and_si256(h0, four));
      for (int k = 1; k < 4; ++k) {
        const __m256i sh = _mm256_add_epi32(_mm256_setr_epi32(-2, -1, 0, 1, 2, 3, 4, 5), _mm256_set1_epi32(8 * k));
        q[k] = _mm256_or_si256(q[k], _mm256_and_si256(_mm256_srlv_epi32(hw, sh), four));
      }
    }
    for (int k = 0; k < 4; ++k) c[k] = _mm256_cvtepi32_ps(q[k]);
  } else {  // 8: one byte per code
    for (int k = 0; k < 4; ++k)
      c[k] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 8 * k))));
  }
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

template <int Bits, int R>
void fused_t(const FusedArgs& a, int64_t o0, int64_t o1) {
  constexpr int kBlockBytes = 32 * Bits / 8;
  // Independent FMA chains per row: one chain would wait out the FMA latency at every step.
  // 4 chains in all (K per row) keep the two FMA ports busy without spilling registers.
  constexpr int K = R >= 4 ? 1 : 4 / R;
  const int64_t xstride = a.nblk * 32;
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* row = a.q + o * a.row_bytes;
    const float* s = a.s + o * a.groups;
    const float* m = a.m + o * a.groups;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < a.groups; ++g) {
      __m256 dot[R][K];
      for (int r = 0; r < R; ++r)
        for (int k = 0; k < K; ++k) dot[r][k] = _mm256_setzero_ps();
      const int64_t k0 = g * a.blocks_per_group, k1 = k0 + a.blocks_per_group;
      for (int64_t k = k0; k < k1; ++k) {
        __m256 c[4];
        decode_block<Bits>(row + k * kBlockBytes, c);
        for (int r = 0; r < R; ++r) {
          const float* x = a.x + r * xstride + k * 32;
          for (int q = 0; q < 4; ++q)
            dot[r][q % K] = _mm256_fmadd_ps(c[q], _mm256_loadu_ps(x + 8 * q), dot[r][q % K]);
        }
      }
      const __m256 sg = _mm256_set1_ps(s[g]);
      for (int r = 0; r < R; ++r) {
        __m256 d = dot[r][0];
        for (int k = 1; k < K; ++k) d = _mm256_add_ps(d, dot[r][k]);
        acc[r] = _mm256_fmadd_ps(sg, d, acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const float* xs = a.xsum + r * a.groups;
      float off = 0.f;
      for (int64_t g = 0; g < a.groups; ++g) off += m[g] * xs[g];
      a.y[r * a.out + o] = hsum(acc[r]) + off;
    }
  }
}

template <int Bits>
void fused_bits(const FusedArgs& a, int64_t o0, int64_t o1) {
  switch (a.rows) {
    case 1: return fused_t<Bits, 1>(a, o0, o1);
    case 2: return fused_t<Bits, 2>(a, o0, o1);
    case 3: return fused_t<Bits, 3>(a, o0, o1);
    default: return fused_t<Bits, 4>(a, o0, o1);
  }
}

}  // namespace

void fused_avx2(const FusedArgs& a, int64_t o0, int64_t o1) {
  switch (a.bits) {
    case 2: return fused_bits<2>(a, o0, o1);
    case 3: return fused_bits<3>(a, o0, o1);
    case 4: return fused_bits<4>(a, o0, o1);
    default: return fused_bits<8>(a, o0, o1);
  }
}

}  // namespace l4q::packed_kernels

#else  // no AVX2 in this translation unit (not x86-64, or the flags were not applied)

namespace l4q::packed_kernels {
bool avx2_kernel_built() { return false; }
void fused_avx2(const FusedArgs& a, int64_t o0, int64_t o1) { fused_scalar(a, o0, o1); }
}  // namespace l4q::packed_kernels

#endif
