// The AVX-512 variants of the fp32 row loops (merged_rows_kernels.h); fp64 uses the AVX2 ones.
//
// Why: the AVX2 loops spend most of their time in the rank-r sum, r FMAs and r loads of A per
// 8 elements, re-reading A for every row. Here a tile is R rows x kZV registers of 16 floats
// (32 elements per row): each load of A serves R rows and each FMA 16 elements. On the 7B MLP
// shapes at two threads, caches warm, this takes the forward pass from 0.57 to 0.34 ns per
// weight element (a plain copy of W0 costs 0.25) and the backward pass from 0.89 to 0.61
// (docs/benchmarks.md). The forward uses 4-row tiles; the backward, which also holds two
// partial sums per row, 2-row tiles (4 rows measured slower there). Rows walk their full
// width: blocking by column spans measured no faster.
//
// A 16-bit W0 (merged_rows.h) is read by the same loops, each register widened to fp32 as it is
// loaded (load16), when the groups are whole tiles (no tails: the AVX2 pieces read fp32 only).
//
// Same bits as every other variant: the per-element operations are the AVX2 ones on 16 lanes,
// and the backward's group sums keep their 8 lanes (a register of 16 products is added to the
// 8-lane sums as its low half, then its high half: the order of the 8-lane loop). Group ends
// shorter than a tile go through the AVX2 pieces.
#include "quant/merged_rows_kernels.h"

#include <memory>
#include <type_traits>
#include <vector>

#if L4Q_HAVE_X86_VARIANTS
// GCC 12's _mm512_castps512_ps256 and _mm512_extractf32x8_ps pass an undefined register as the
// (unused) merge source, which -Wmaybe-uninitialized reports wherever they are inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace l4q::cpu::kernels {
namespace {

constexpr int kZV = 2;                  // 16-float registers per row in a tile
constexpr int64_t kZTile = 16 * kZV;    // elements per row in a tile
constexpr int kForwardRows = 4;         // rows per forward tile
constexpr int kBackwardRows = 2;        // rows per backward tile

// 16 values of W0 as fp32, from fp32 or from a 16-bit storage type (merged_rows.h; exact).
L4Q_AVX512 L4Q_INLINE __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
L4Q_AVX512 L4Q_INLINE __m512 load16(const Bf16* p) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
L4Q_AVX512 L4Q_INLINE __m512 load16(const F16* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// acc[q][v] = W_comb of row q (w0 + q * in, B + q * r) for elements [j + 16v, j + 16v + 16).
template <int R, typename W>
L4Q_AVX512 L4Q_INLINE void merged_tile_z(const W* w0, const float* A, const float* B,
                                         float scale, int64_t r, int64_t in, int64_t j,
                                         __m512 (*acc)[kZV]) {
  for (int q = 0; q < R; ++q)
    for (int v = 0; v < kZV; ++v) acc[q][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < r; ++k) {
    const float* a = A + k * in + j;
    __m512 av[kZV];
    for (int v = 0; v < kZV; ++v) av[v] = _mm512_loadu_ps(a + 16 * v);
    for (int q = 0; q < R; ++q) {
      const __m512 bk = _mm512_set1_ps(B[q * r + k]);
      for (int v = 0; v < kZV; ++v) acc[q][v] = _mm512_fmadd_ps(bk, av[v], acc[q][v]);
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  for (int q = 0; q < R; ++q)
    for (int v = 0; v < kZV; ++v)
      acc[q][v] = _mm512_add_ps(load16(w0 + q * in + j + 16 * v),
                                _mm512_mul_ps(sc, acc[q][v]));
}

// qmath::quantize on 16 lanes (quantize8 of merged_rows_kernels.h).
struct Quant16 {
  __m512 w, w_c, w_int;
  __mmask16 in;
};

L4Q_AVX512 L4Q_INLINE Quant16 quantize16(__m512 W, __m512 s, __m512 b, __m512 qn, __m512 qp) {
  Quant16 e;
  e.w = _mm512_div_ps(_mm512_sub_ps(W, b), s);
  const __mmask16 lo = _mm512_cmp_ps_mask(e.w, qn, _CMP_LT_OQ);
  const __mmask16 hi = _mm512_cmp_ps_mask(e.w, qp, _CMP_GT_OQ);
  e.in = _mm512_cmp_ps_mask(e.w, qn, _CMP_GE_OQ) & _mm512_cmp_ps_mask(e.w, qp, _CMP_LE_OQ);
  // w < qn ? qn : (w > qp ? qp : w); a NaN stays NaN.
  e.w_c = _mm512_mask_blend_ps(lo, _mm512_mask_blend_ps(hi, e.w, qp), qn);
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  e.w_int = _mm512_sub_ps(_mm512_add_ps(e.w_c, magic), magic);
  return e;
}

// Group sums of 8 lanes plus 16 products: the low half, then the high half.
L4Q_AVX512 L4Q_INLINE __m256 add_halves(__m256 acc, __m512 p) {
  acc = _mm256_add_ps(acc, _mm512_castps512_ps256(p));
  return _mm256_add_ps(acc, _mm512_extractf32x8_ps(p, 1));
}

// Forward: R rows from row pointers w0, B, s, b, d (row strides in, r, groups, in).
// W != float only when the groups are whole tiles (gs % kZTile == 0): no tails.
template <int R, typename W>
L4Q_AVX512 L4Q_INLINE void quantize_rows_z(const W* w0, const float* A, const float* B,
                                           float scale, int64_t r, const float* s, const float* b,
                                           int64_t in, int64_t gs, int bits, float* d,
                                           int32_t* clipped) {
  const __m512 qn = _mm512_set1_ps(float(qmath::grid_min(bits)));
  const __m512 qp = _mm512_set1_ps(float(qmath::grid_max(bits)));
  const int64_t groups = in / gs;
  int n_clipped[R] = {};
  for (int64_t g = 0; g < groups; ++g) {
    float sg[R], bg[R];
    for (int q = 0; q < R; ++q) {
      sg[q] = qmath::clamp_step(s[q * groups + g]);
      bg[q] = b[q * groups + g];
    }
    const int64_t j1 = (g + 1) * gs;
    int64_t j = g * gs;
    for (; j + kZTile <= j1; j += kZTile) {
      __m512 w[R][kZV];
      merged_tile_z<R>(w0, A, B, scale, r, in, j, w);
      for (int q = 0; q < R; ++q) {
        const __m512 sv = _mm512_set1_ps(sg[q]), bv = _mm512_set1_ps(bg[q]);
        for (int v = 0; v < kZV; ++v) {
          const Quant16 e = quantize16(w[q][v], sv, bv, qn, qp);
          n_clipped[q] += 16 - __builtin_popcount(static_cast<unsigned>(e.in));
          _mm512_storeu_ps(d + q * in + j + 16 * v,
                           _mm512_add_ps(_mm512_mul_ps(e.w_int, sv), bv));
        }
      }
    }
    if constexpr (std::is_same_v<W, float>)
      for (int q = 0; q < R; ++q)
        n_clipped[q] += quantize_tail_avx2(w0 + q * in, A, B + q * r, scale, r, in, j, j1,
                                           sg[q], bg[q], bits, d + q * in);
  }
  if (clipped)
    for (int q = 0; q < R; ++q) clipped[q] = n_clipped[q];
}

// Backward: one tile of R rows (rows[q]; w0: row 0 of W0, as W); acc_s, acc_b: each row's
// 8-lane group sums.
template <int R, typename W>
L4Q_AVX512 L4Q_INLINE void backward_tile_z(const BackwardRow* rows, const W* w0, const float* A,
                                           float scale,
                                           int64_t r, int64_t in, int64_t j, const float* sg,
                                           const float* bg, __m512 qn, __m512 qp, bool mask_G,
                                           __m256* acc_s, __m256* acc_b) {
  __m512 w[R][kZV];
  // Rows of a tile are consecutive: row q's pointers are row 0's plus q strides.
  merged_tile_z<R>(w0, A, rows[0].Bi, scale, r, in, j, w);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int q = 0; q < R; ++q) {
    const BackwardRow& row = rows[q];
    const __m512 sv = _mm512_set1_ps(sg[q]), bv = _mm512_set1_ps(bg[q]);
    for (int v = 0; v < kZV; ++v) {
      const int64_t jv = j + 16 * v;
      const Quant16 e = quantize16(w[q][v], sv, bv, qn, qp);
      const __m512 gj = _mm512_loadu_ps(row.gr + jv);
      // step_grad = in ? w_int - w : w_c;  offset_grad = in ? 0 : 1
      const __m512 sgrad = _mm512_mask_blend_ps(e.in, e.w_c, _mm512_sub_ps(e.w_int, e.w));
      const __m512 ograd = _mm512_maskz_mov_ps(static_cast<__mmask16>(~e.in), one);
      acc_s[q] = add_halves(acc_s[q], _mm512_mul_ps(gj, sgrad));
      acc_b[q] = add_halves(acc_b[q], _mm512_mul_ps(gj, ograd));
      if (row.list) {  // the selected lanes, packed first, without a branch (as the AVX2 tile)
        const __mmask16 sel = row.dir ? e.in : static_cast<__mmask16>(~e.in);
        SelectedList& l = *row.list;
        _mm512_storeu_ps(l.g + l.n, _mm512_maskz_compress_ps(sel, gj));
        _mm512_storeu_si512(l.j + l.n, _mm512_maskz_compress_epi32(
                                           sel, _mm512_add_epi32(iota, _mm512_set1_epi32(
                                                                           static_cast<int32_t>(jv)))));
        l.n += __builtin_popcount(static_cast<unsigned>(sel));
      }
      if (mask_G) _mm512_storeu_ps(row.gr + jv, _mm512_maskz_mov_ps(e.in, gj));
      _mm512_storeu_ps(row.d + jv, _mm512_add_ps(_mm512_mul_ps(e.w_int, sv), bv));
    }
  }
}

// Backward over R consecutive rows (rows[q]; their s, b, ds, db rows at q * groups; w0: row 0
// of W0). W != float only when the groups are whole tiles: finish_group_avx2, which reads W0
// as fp32 (rows[q].w0), then has no elements left and only stores the group sums.
template <int R, typename W>
L4Q_AVX512 L4Q_INLINE void backward_rows_z(const BackwardRow* rows, const W* w0, const float* A,
                                           float scale,
                                           int64_t r, const float* s, const float* b, int64_t in,
                                           int64_t gs, int bits, bool mask_G, float* ds,
                                           float* db) {
  const __m512 qn = _mm512_set1_ps(float(qmath::grid_min(bits)));
  const __m512 qp = _mm512_set1_ps(float(qmath::grid_max(bits)));
  const int64_t groups = in / gs;
  for (int64_t g = 0; g < groups; ++g) {
    float sg[R], bg[R];
    __m256 acc_s[R], acc_b[R];
    for (int q = 0; q < R; ++q) {
      sg[q] = qmath::clamp_step(s[q * groups + g]);
      bg[q] = b[q * groups + g];
      acc_s[q] = acc_b[q] = _mm256_setzero_ps();
    }
    const int64_t j1 = (g + 1) * gs;
    int64_t j = g * gs;
    for (; j + kZTile <= j1; j += kZTile)
      backward_tile_z<R>(rows, w0, A, scale, r, in, j, sg, bg, qn, qp, mask_G, acc_s, acc_b);
    for (int q = 0; q < R; ++q)
      finish_group_avx2(rows[q], A, scale, r, in, j, j1, sg[q], bg[q], bits, mask_G, acc_s[q],
                        acc_b[q], ds + q * groups + g, db + q * groups + g);
  }
}

}  // namespace

namespace {

template <typename W>
L4Q_AVX512 void quantize_rows_avx512(const W* W0, const float* A, const float* B, float scale,
                                     int64_t r, const float* s, const float* b, int64_t rows,
                                     int64_t in, int64_t gs, int bits, float* dst,
                                     int32_t* clipped) {
  const int64_t groups = in / gs;
  int64_t i = 0;
  for (; i + kForwardRows <= rows; i += kForwardRows)
    quantize_rows_z<kForwardRows>(W0 + i * in, A, B + i * r, scale, r, s + i * groups,
                                  b + i * groups, in, gs, bits, dst + i * in,
                                  clipped ? clipped + i : nullptr);
  for (; i < rows; ++i)
    quantize_rows_z<1>(W0 + i * in, A, B + i * r, scale, r, s + i * groups, b + i * groups, in,
                       gs, bits, dst + i * in, clipped ? clipped + i : nullptr);
}

template <typename W>
L4Q_AVX512 void backward_rows_avx512(const W* W0, const float* A, const float* At, int64_t rp,
                                     const float* B, float scale, int64_t r, const float* s,
                                     const float* b, int64_t rows, int64_t in, int64_t gs,
                                     int bits, float* dst, float* G, bool mask_G, float* ds,
                                     float* db, float* dB_clip, float* dAt_clip,
                                     const uint8_t* direct) {
  const int64_t groups = in / gs;
  const bool want_dB = dB_clip != nullptr && r > 0;
  const bool want_dA = dAt_clip != nullptr && r > 0;
  const bool any_corr = want_dB || want_dA;
  std::vector<float> accB(static_cast<size_t>(rp)), bs(static_cast<size_t>(rp));
  // Not zeroed: callers with 16-bit W0 call this for a few rows at a time.
  const size_t list_len = any_corr ? static_cast<size_t>(in + kListSlack) : 0;
  const std::unique_ptr<float[]> list_g(new float[kBackwardRows * list_len]);
  const std::unique_ptr<int32_t[]> list_j(new int32_t[kBackwardRows * list_len]);
  auto run = [&](auto rows_tag, int64_t i) L4Q_AVX512 {
    constexpr int R = decltype(rows_tag)::value;
    SelectedList lists[R];
    BackwardRow row[R];
    for (int q = 0; q < R; ++q) {
      lists[q] = {list_g.get() + q * list_len, list_j.get() + q * list_len};
      const int64_t iq = i + q;
      const float* w0_f32 = nullptr;  // only read by tails, which 16-bit callers do not have
      if constexpr (std::is_same_v<W, float>) w0_f32 = W0 + iq * in;
      row[q] = {w0_f32, B + iq * r, dst + iq * in, G + iq * in,
                direct != nullptr && direct[iq] != 0, any_corr ? &lists[q] : nullptr};
    }
    backward_rows_z<R>(row, W0 + i * in, A, scale, r, s + i * groups, b + i * groups, in, gs,
                       bits, mask_G, ds + i * groups, db + i * groups);
    // Row order, each row's elements in ascending order: the generic code's order of the sums.
    if (any_corr)
      for (int q = 0; q < R; ++q)
        apply_corrections_avx2(row[q], At, r, rp, accB.data(), bs.data(),
                               want_dA ? dAt_clip : nullptr,
                               want_dB ? dB_clip + (i + q) * r : nullptr);
  };
  int64_t i = 0;
  for (; i + kBackwardRows <= rows; i += kBackwardRows)
    run(std::integral_constant<int, kBackwardRows>{}, i);
  for (; i < rows; ++i) run(std::integral_constant<int, 1>{}, i);
}

}  // namespace

// 16-bit W0 read directly (merged_rows.h): only for groups that are whole tiles.
bool avx512_reads_16bit(int64_t gs) { return gs % kZTile == 0; }

// The fp32 loops, and the same loops reading a 16-bit W0.
#define L4Q_AVX512_ROWS(W)                                                                     \
  L4Q_AVX512 void merged_quantize_rows_avx512(const W* W0, const float* A, const float* B,      \
                                              float scale, int64_t r, const float* s,          \
                                              const float* b, int64_t rows, int64_t in,        \
                                              int64_t gs, int bits, float* dst,                \
                                              int32_t* clipped) {                               \
    quantize_rows_avx512(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, clipped);          \
  }                                                                                             \
  L4Q_AVX512 void merged_quantize_backward_rows_avx512(                                         \
      const W* W0, const float* A, const float* At, int64_t rp, const float* B, float scale,    \
      int64_t r, const float* s, const float* b, int64_t rows, int64_t in, int64_t gs,         \
      int bits, float* dst, float* G, bool mask_G, float* ds, float* db, float* dB_clip,       \
      float* dAt_clip, const uint8_t* direct) {                                                 \
    backward_rows_avx512(W0, A, At, rp, B, scale, r, s, b, rows, in, gs, bits, dst, G, mask_G,  \
                         ds, db, dB_clip, dAt_clip, direct);                                    \
  }
L4Q_AVX512_ROWS(float)
L4Q_AVX512_ROWS(Bf16)
L4Q_AVX512_ROWS(F16)
#undef L4Q_AVX512_ROWS

// Loops where AVX-512 brings nothing measured (merge()'s W_comb) and fp64 (tests): AVX2.
void merged_rows_avx512(const float* W0, const float* A, const float* B, float scale, int64_t r,
                        int64_t rows, int64_t in, float* dst) {
  merged_rows_avx2(W0, A, B, scale, r, rows, in, dst);
}
void merged_rows_avx512(const double* W0, const double* A, const double* B, double scale,
                        int64_t r, int64_t rows, int64_t in, double* dst) {
  merged_rows_avx2(W0, A, B, scale, r, rows, in, dst);
}
void merged_quantize_rows_avx512(const double* W0, const double* A, const double* B,
                                 double scale, int64_t r, const double* s, const double* b,
                                 int64_t rows, int64_t in, int64_t gs, int bits, double* dst,
                                 int32_t* clipped) {
  merged_quantize_rows_avx2(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, clipped);
}
void merged_quantize_backward_rows_avx512(const double* W0, const double* A, const double* At,
                                          int64_t rp, const double* B, double scale, int64_t r,
                                          const double* s, const double* b, int64_t rows,
                                          int64_t in, int64_t gs, int bits, double* dst,
                                          double* G, bool mask_G, double* ds, double* db,
                                          double* dB_clip, double* dAt_clip,
                                          const uint8_t* direct) {
  merged_quantize_backward_rows_avx2(W0, A, At, rp, B, scale, r, s, b, rows, in, gs, bits, dst,
                                     G, mask_G, ds, db, dB_clip, dAt_clip, direct);
}

}  // namespace l4q::cpu::kernels
#pragma GCC diagnostic pop
#endif
