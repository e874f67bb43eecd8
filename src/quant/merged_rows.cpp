#include "quant/merged_rows.h"

#include <cmath>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/quant_math.h"

// Each entry point is compiled twice, for AVX2 + FMA and for the baseline, and picks one by
// CPU at run time. The bodies below are always inlined into each variant so the whole loop
// nest gets the variant's instruction set. (Not target_clones: its "arch=" clones dispatch on
// the CPU model, not on the features it supports.)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define L4Q_HAVE_AVX2_VARIANT 1
#define L4Q_AVX2 __attribute__((target("avx2,fma")))
#else
#define L4Q_HAVE_AVX2_VARIANT 0
#endif
#define L4Q_INLINE __attribute__((always_inline)) inline

namespace l4q::cpu {
namespace {

// Elements processed together: one AVX2 register of floats. The fixed-size inner loops below
// are what the vectoriser turns into single vector instructions.
constexpr int kV = 8;

// W_comb for elements [j, j + kV) of row i: W0 + scale * sum_k B[k] A[k, j].
template <typename T>
L4Q_INLINE void merged_block(const T* w0, const T* A, const T* Bi, T scale, int64_t r,
                             int64_t in, int64_t j, T* out) {
  T acc[kV] = {};
  for (int64_t k = 0; k < r; ++k) {
    const T bk = Bi[k];
    const T* a = A + k * in + j;
    for (int l = 0; l < kV; ++l) acc[l] = std::fma(bk, a[l], acc[l]);
  }
  for (int l = 0; l < kV; ++l) out[l] = w0[j + l] + scale * acc[l];
}

// The same for one element (row tails shorter than kV): the same operations in the same order.
template <typename T>
L4Q_INLINE T merged_elem(const T* w0, const T* A, const T* Bi, T scale, int64_t r, int64_t in,
                         int64_t j) {
  T acc = 0;
  for (int64_t k = 0; k < r; ++k) acc = std::fma(Bi[k], A[k * in + j], acc);
  return w0[j] + scale * acc;
}

template <typename T>
L4Q_INLINE void merged_rows_impl(const T* W0, const T* A, const T* B, T scale, int64_t r,
                                 int64_t rows, int64_t in, T* dst) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* w0 = W0 + i * in;
    const T* Bi = B + i * r;
    T* d = dst + i * in;
    int64_t j = 0;
    for (; j + kV <= in; j += kV) merged_block(w0, A, Bi, scale, r, in, j, d + j);
    for (; j < in; ++j) d[j] = merged_elem(w0, A, Bi, scale, r, in, j);
  }
}

template <typename T>
L4Q_INLINE void merged_quantize_rows_impl(const T* W0, const T* A, const T* B, T scale, int64_t r,
                                          const T* s, const T* b, int64_t rows, int64_t in,
                                          int64_t gs, int bits, T* dst) {
  const T qn = T(qmath::grid_min(bits)), qp = T(qmath::grid_max(bits));
  const int64_t groups = in / gs;
  for (int64_t i = 0; i < rows; ++i) {
    const T* w0 = W0 + i * in;
    const T* Bi = B + i * r;
    T* d = dst + i * in;
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const int64_t j1 = (g + 1) * gs;
      int64_t j = g * gs;
      for (; j + kV <= j1; j += kV) {
        T w[kV];
        merged_block(w0, A, Bi, scale, r, in, j, w);
        for (int l = 0; l < kV; ++l)
          d[j + l] = qmath::dequantize(qmath::quantize(w[l], sg, bg, qn, qp).w_int, sg, bg);
      }
      for (; j < j1; ++j) {
        const T w = merged_elem(w0, A, Bi, scale, r, in, j);
        d[j] = qmath::dequantize(qmath::quantize(w, sg, bg, qn, qp).w_int, sg, bg);
      }
    }
  }
}

template <typename T>
L4Q_INLINE void merged_quantize_backward_rows_impl(const T* W0, const T* A, const T* B, T scale,
                                                   int64_t r, const T* s, const T* b,
                                                   int64_t rows, int64_t in, int64_t gs, int bits,
                                                   T* dst, T* G, T* ds, T* db, T* dB) {
  const T qn = T(qmath::grid_min(bits)), qp = T(qmath::grid_max(bits));
  const int64_t groups = in / gs;
  const bool want_dB = dB != nullptr && r > 0;
  // Partial sums of dB[i, k] in kV lanes, so the j loop vectorises without reassociation.
  std::vector<T> part(want_dB ? static_cast<size_t>(r * kV) : 0);
  for (int64_t i = 0; i < rows; ++i) {
    const T* w0 = W0 + i * in;
    const T* Bi = B + i * r;
    T* d = dst + i * in;
    T* gr = G + i * in;
    for (auto& v : part) v = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const int64_t j1 = (g + 1) * gs;
      T acc_s[kV] = {}, acc_b[kV] = {};
      int64_t j = g * gs;
      for (; j + kV <= j1; j += kV) {
        T w[kV], gm[kV];
        merged_block(w0, A, Bi, scale, r, in, j, w);
        for (int l = 0; l < kV; ++l) {
          const auto e = qmath::quantize(w[l], sg, bg, qn, qp);
          const T gj = gr[j + l];
          acc_s[l] += gj * qmath::step_grad(e);
          acc_b[l] += gj * qmath::offset_grad(e);
          gm[l] = e.in ? gj : T(0);
          gr[j + l] = gm[l];
          d[j + l] = qmath::dequantize(e.w_int, sg, bg);
        }
        if (want_dB)
          for (int64_t k = 0; k < r; ++k) {
            const T* a = A + k * in + j;
            T* p = part.data() + k * kV;
            for (int l = 0; l < kV; ++l) p[l] = std::fma(gm[l], a[l], p[l]);
          }
      }
      for (; j < j1; ++j) {
        const T w = merged_elem(w0, A, Bi, scale, r, in, j);
        const auto e = qmath::quantize(w, sg, bg, qn, qp);
        const T gj = gr[j];
        acc_s[0] += gj * qmath::step_grad(e);
        acc_b[0] += gj * qmath::offset_grad(e);
        const T gm = e.in ? gj : T(0);
        gr[j] = gm;
        d[j] = qmath::dequantize(e.w_int, sg, bg);
        if (want_dB)
          for (int64_t k = 0; k < r; ++k) part[k * kV] = std::fma(gm, A[k * in + j], part[k * kV]);
      }
      T ts = 0, tb = 0;
      for (int l = 0; l < kV; ++l) {
        ts += acc_s[l];
        tb += acc_b[l];
      }
      ds[i * groups + g] = ts;
      db[i * groups + g] = tb;
    }
    if (want_dB)
      for (int64_t k = 0; k < r; ++k) {
        T t = 0;
        for (int l = 0; l < kV; ++l) t += part[k * kV + l];
        dB[i * r + k] = scale * t;
      }
  }
}


bool cpu_has_avx2_fma() {
#if L4Q_HAVE_AVX2_VARIANT
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

// ---------------------------------------------------------------------------------------
// AVX2 + FMA variants for fp32, written with intrinsics (GCC does not vectorise the loops
// above: the rank sum is a chain of dependent FMAs per element and the quantizer has
// branches). They perform exactly the scalar code's operations per element, in the same order
// (the rank sum with FMA, then a multiply and an add; IEEE division; the same lane of the same
// partial sum for every element), so both variants give the same bits.
//
// Throughput: the rank sum is latency-bound per element (r dependent FMAs), so tiles of up
// to kNV vectors (64 elements) keep kNV independent chains in flight.
// ---------------------------------------------------------------------------------------
#if L4Q_HAVE_AVX2_VARIANT
constexpr int kNV = 8;

// acc[v] = W_comb for elements [j + 8v, j + 8v + 8), v < nv.
template <int NV>
L4Q_AVX2 L4Q_INLINE void merged_tile_avx2(const float* w0, const float* A, const float* Bi,
                                          float scale, int64_t r, int64_t in, int64_t j,
                                          __m256* acc) {
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < r; ++k) {
    const __m256 bk = _mm256_set1_ps(Bi[k]);
    const float* a = A + k * in + j;
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(bk, _mm256_loadu_ps(a + 8 * v), acc[v]);
  }
  const __m256 sc = _mm256_set1_ps(scale);
  for (int v = 0; v < NV; ++v)
    acc[v] = _mm256_add_ps(_mm256_loadu_ps(w0 + j + 8 * v), _mm256_mul_ps(sc, acc[v]));
}

// qmath::quantize on 8 lanes: w, w_int and the mask `in`.
struct Quant8 {
  __m256 w, w_c, w_int, in;
};

L4Q_AVX2 L4Q_INLINE Quant8 quantize8(__m256 W, __m256 s, __m256 b, __m256 qn, __m256 qp) {
  Quant8 e;
  e.w = _mm256_div_ps(_mm256_sub_ps(W, b), s);
  const __m256 lo = _mm256_cmp_ps(e.w, qn, _CMP_LT_OQ), hi = _mm256_cmp_ps(e.w, qp, _CMP_GT_OQ);
  e.in = _mm256_and_ps(_mm256_cmp_ps(e.w, qn, _CMP_GE_OQ), _mm256_cmp_ps(e.w, qp, _CMP_LE_OQ));
  // w < qn ? qn : (w > qp ? qp : w); a NaN stays NaN, as in the scalar code.
  e.w_c = _mm256_blendv_ps(_mm256_blendv_ps(e.w, qp, hi), qn, lo);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  e.w_int = _mm256_sub_ps(_mm256_add_ps(e.w_c, magic), magic);
  return e;
}

L4Q_AVX2 L4Q_INLINE __m256 dequantize8(__m256 w_int, __m256 s, __m256 b) {
  return _mm256_add_ps(_mm256_mul_ps(w_int, s), b);
}

template <int NV>
L4Q_AVX2 L4Q_INLINE void quantize_tile_avx2(const float* w0, const float* A, const float* Bi,
                                            float scale, int64_t r, int64_t in, int64_t j,
                                            __m256 s, __m256 b, __m256 qn, __m256 qp, float* d) {
  __m256 w[NV];
  merged_tile_avx2<NV>(w0, A, Bi, scale, r, in, j, w);
  for (int v = 0; v < NV; ++v)
    _mm256_storeu_ps(d + j + 8 * v, dequantize8(quantize8(w[v], s, b, qn, qp).w_int, s, b));
}

L4Q_AVX2 void merged_rows_avx2(const float* W0, const float* A, const float* B, float scale,
                               int64_t r, int64_t rows, int64_t in, float* dst) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* w0 = W0 + i * in;
    const float* Bi = B + i * r;
    float* d = dst + i * in;
    int64_t j = 0;
    __m256 w[kNV];
    for (; j + 8 * kNV <= in; j += 8 * kNV) {
      merged_tile_avx2<kNV>(w0, A, Bi, scale, r, in, j, w);
      for (int v = 0; v < kNV; ++v) _mm256_storeu_ps(d + j + 8 * v, w[v]);
    }
    for (; j + 8 <= in; j += 8) {
      merged_tile_avx2<1>(w0, A, Bi, scale, r, in, j, w);
      _mm256_storeu_ps(d + j, w[0]);
    }
    for (; j < in; ++j) d[j] = merged_elem(w0, A, Bi, scale, r, in, j);
  }
}

L4Q_AVX2 void merged_quantize_rows_avx2(const float* W0, const float* A, const float* B,
                                        float scale, int64_t r, const float* s, const float* b,
                                        int64_t rows, int64_t in, int64_t gs, int bits,
                                        float* dst) {
  const float qnf = float(qmath::grid_min(bits)), qpf = float(qmath::grid_max(bits));
  const __m256 qn = _mm256_set1_ps(qnf), qp = _mm256_set1_ps(qpf);
  const int64_t groups = in / gs;
  for (int64_t i = 0; i < rows; ++i) {
    const float* w0 = W0 + i * in;
    const float* Bi = B + i * r;
    float* d = dst + i * in;
    for (int64_t g = 0; g < groups; ++g) {
      const float sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const __m256 sv = _mm256_set1_ps(sg), bv = _mm256_set1_ps(bg);
      const int64_t j1 = (g + 1) * gs;
      int64_t j = g * gs;
      for (; j + 8 * kNV <= j1; j += 8 * kNV)
        quantize_tile_avx2<kNV>(w0, A, Bi, scale, r, in, j, sv, bv, qn, qp, d);
      for (; j + 8 <= j1; j += 8) quantize_tile_avx2<1>(w0, A, Bi, scale, r, in, j, sv, bv, qn, qp, d);
      for (; j < j1; ++j) {
        const float w = merged_elem(w0, A, Bi, scale, r, in, j);
        d[j] = qmath::dequantize(qmath::quantize(w, sg, bg, qnf, qpf).w_int, sg, bg);
      }
    }
  }
}

// One tile of the backward pass; acc_s, acc_b: the group's lane sums; part: dB lane sums [r][8].
template <int NV>
L4Q_AVX2 L4Q_INLINE void backward_tile_avx2(const float* w0, const float* A, const float* Bi,
                                            float scale, int64_t r, int64_t in, int64_t j,
                                            __m256 s, __m256 b, __m256 qn, __m256 qp, float* d,
                                            float* gr, __m256& acc_s, __m256& acc_b, float* part) {
  __m256 w[NV], gm[NV];
  merged_tile_avx2<NV>(w0, A, Bi, scale, r, in, j, w);
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int v = 0; v < NV; ++v) {
    const Quant8 e = quantize8(w[v], s, b, qn, qp);
    const __m256 gj = _mm256_loadu_ps(gr + j + 8 * v);
    // step_grad = in ? w_int - w : w_c;  offset_grad = in ? 0 : 1
    const __m256 sgrad = _mm256_blendv_ps(e.w_c, _mm256_sub_ps(e.w_int, e.w), e.in);
    const __m256 ograd = _mm256_andnot_ps(e.in, one);
    acc_s = _mm256_add_ps(acc_s, _mm256_mul_ps(gj, sgrad));
    acc_b = _mm256_add_ps(acc_b, _mm256_mul_ps(gj, ograd));
    gm[v] = _mm256_and_ps(e.in, gj);
    _mm256_storeu_ps(gr + j + 8 * v, gm[v]);
    _mm256_storeu_ps(d + j + 8 * v, dequantize8(e.w_int, s, b));
  }
  if (part)
    for (int64_t k = 0; k < r; ++k) {
      const float* a = A + k * in + j;
      __m256 p = _mm256_loadu_ps(part + 8 * k);
      for (int v = 0; v < NV; ++v) p = _mm256_fmadd_ps(gm[v], _mm256_loadu_ps(a + 8 * v), p);
      _mm256_storeu_ps(part + 8 * k, p);
    }
}

L4Q_AVX2 void merged_quantize_backward_rows_avx2(const float* W0, const float* A, const float* B,
                                                 float scale, int64_t r, const float* s,
                                                 const float* b, int64_t rows, int64_t in,
                                                 int64_t gs, int bits, float* dst, float* G,
                                                 float* ds, float* db, float* dB) {
  const float qnf = float(qmath::grid_min(bits)), qpf = float(qmath::grid_max(bits));
  const __m256 qn = _mm256_set1_ps(qnf), qp = _mm256_set1_ps(qpf);
  const int64_t groups = in / gs;
  const bool want_dB = dB != nullptr && r > 0;
  std::vector<float> part_buf(want_dB ? static_cast<size_t>(r * kV) : 0);
  float* part = want_dB ? part_buf.data() : nullptr;
  for (int64_t i = 0; i < rows; ++i) {
    const float* w0 = W0 + i * in;
    const float* Bi = B + i * r;
    float* d = dst + i * in;
    float* gr = G + i * in;
    for (auto& v : part_buf) v = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const float sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const __m256 sv = _mm256_set1_ps(sg), bv = _mm256_set1_ps(bg);
      const int64_t j1 = (g + 1) * gs;
      __m256 acc_s = _mm256_setzero_ps(), acc_b = _mm256_setzero_ps();
      int64_t j = g * gs;
      for (; j + 8 * kNV <= j1; j += 8 * kNV)
        backward_tile_avx2<kNV>(w0, A, Bi, scale, r, in, j, sv, bv, qn, qp, d, gr, acc_s, acc_b,
                                part);
      for (; j + 8 <= j1; j += 8)
        backward_tile_avx2<1>(w0, A, Bi, scale, r, in, j, sv, bv, qn, qp, d, gr, acc_s, acc_b,
                              part);
      float ls[kV], lb[kV];
      _mm256_storeu_ps(ls, acc_s);
      _mm256_storeu_ps(lb, acc_b);
      for (; j < j1; ++j) {  // the scalar code's tail: lane 0
        const float w = merged_elem(w0, A, Bi, scale, r, in, j);
        const auto e = qmath::quantize(w, sg, bg, qnf, qpf);
        const float gj = gr[j];
        ls[0] += gj * qmath::step_grad(e);
        lb[0] += gj * qmath::offset_grad(e);
        const float gm = e.in ? gj : 0.0f;
        gr[j] = gm;
        d[j] = qmath::dequantize(e.w_int, sg, bg);
        if (want_dB)
          for (int64_t k = 0; k < r; ++k) part[k * kV] = std::fma(gm, A[k * in + j], part[k * kV]);
      }
      float ts = 0, tb = 0;
      for (int l = 0; l < kV; ++l) {
        ts += ls[l];
        tb += lb[l];
      }
      ds[i * groups + g] = ts;
      db[i * groups + g] = tb;
    }
    if (want_dB)
      for (int64_t k = 0; k < r; ++k) {
        float t = 0;
        for (int l = 0; l < kV; ++l) t += part[k * kV + l];
        dB[i * r + k] = scale * t;
      }
  }
}

// fp64 (tests): the generic code compiled for AVX2.
L4Q_AVX2 void merged_rows_avx2(const double* W0, const double* A, const double* B, double scale,
                               int64_t r, int64_t rows, int64_t in, double* dst) {
  merged_rows_impl(W0, A, B, scale, r, rows, in, dst);
}
L4Q_AVX2 void merged_quantize_rows_avx2(const double* W0, const double* A, const double* B,
                                        double scale, int64_t r, const double* s, const double* b,
                                        int64_t rows, int64_t in, int64_t gs, int bits,
                                        double* dst) {
  merged_quantize_rows_impl(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst);
}
L4Q_AVX2 void merged_quantize_backward_rows_avx2(const double* W0, const double* A,
                                                 const double* B, double scale, int64_t r,
                                                 const double* s, const double* b, int64_t rows,
                                                 int64_t in, int64_t gs, int bits, double* dst,
                                                 double* G, double* ds, double* db, double* dB) {
  merged_quantize_backward_rows_impl(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, G, ds,
                                     db, dB);
}
#endif

// The baseline variants: the generic code.
template <typename T>
void merged_rows_base(const T* W0, const T* A, const T* B, T scale, int64_t r, int64_t rows,
                      int64_t in, T* dst) {
  merged_rows_impl(W0, A, B, scale, r, rows, in, dst);
}
template <typename T>
void merged_quantize_rows_base(const T* W0, const T* A, const T* B, T scale, int64_t r,
                               const T* s, const T* b, int64_t rows, int64_t in, int64_t gs,
                               int bits, T* dst) {
  merged_quantize_rows_impl(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst);
}
template <typename T>
void merged_quantize_backward_rows_base(const T* W0, const T* A, const T* B, T scale, int64_t r,
                                        const T* s, const T* b, int64_t rows, int64_t in,
                                        int64_t gs, int bits, T* dst, T* G, T* ds, T* db, T* dB) {
  merged_quantize_backward_rows_impl(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, G, ds, db,
                                     dB);
}

}  // namespace

#if L4Q_HAVE_AVX2_VARIANT
#define L4Q_PICK(name, ...) \
  (cpu_has_avx2_fma() ? name##_avx2(__VA_ARGS__) : name##_base(__VA_ARGS__))
#else
#define L4Q_PICK(name, ...) name##_base(__VA_ARGS__)
#endif

void merged_rows(const float* W0, const float* A, const float* B, float scale, int64_t r, int64_t rows, int64_t in, float* dst) {
  L4Q_PICK(merged_rows, W0, A, B, scale, r, rows, in, dst);
}
void merged_quantize_rows(const float* W0, const float* A, const float* B, float scale, int64_t r, const float* s, const float* b, int64_t rows, int64_t in, int64_t gs, int bits, float* dst) {
  L4Q_PICK(merged_quantize_rows, W0, A, B, scale, r, s, b, rows, in, gs, bits, dst);
}
void merged_quantize_backward_rows(const float* W0, const float* A, const float* B, float scale, int64_t r, const float* s, const float* b, int64_t rows, int64_t in, int64_t gs, int bits, float* dst, float* G, float* ds, float* db, float* dB) {
  L4Q_PICK(merged_quantize_backward_rows, W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, G, ds, db, dB);
}
void merged_rows(const double* W0, const double* A, const double* B, double scale, int64_t r, int64_t rows, int64_t in, double* dst) {
  L4Q_PICK(merged_rows, W0, A, B, scale, r, rows, in, dst);
}
void merged_quantize_rows(const double* W0, const double* A, const double* B, double scale, int64_t r, const double* s, const double* b, int64_t rows, int64_t in, int64_t gs, int bits, double* dst) {
  L4Q_PICK(merged_quantize_rows, W0, A, B, scale, r, s, b, rows, in, gs, bits, dst);
}
void merged_quantize_backward_rows(const double* W0, const double* A, const double* B, double scale, int64_t r, const double* s, const double* b, int64_t rows, int64_t in, int64_t gs, int bits, double* dst, double* G, double* ds, double* db, double* dB) {
  L4Q_PICK(merged_quantize_backward_rows, W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, G, ds, db, dB);
}

}  // namespace l4q::cpu
