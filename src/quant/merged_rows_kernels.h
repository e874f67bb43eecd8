// The loops behind cpu::merged_rows, cpu::merged_quantize_rows and
// cpu::merged_quantize_backward_rows (merged_rows.h), shared by the translation units that
// compile them for each instruction set (private to src/quant/):
//   - the generic templates (any T; merged_rows.cpp compiles them for the baseline, and
//     merged_rows_avx2.cpp for AVX2 + FMA as the fp64 variants),
//   - the AVX2 + FMA pieces for fp32 (merged_rows_avx2.cpp; the AVX-512 loops use them for
//     tails shorter than their tiles),
//   - the per-instruction-set entry points that merged_rows.cpp dispatches to.
//
// Every variant performs exactly the generic code's operations per element, in the same order:
// the rank sum with FMA from k = 0 up, then a multiply and an add; IEEE division; each element of
// a group into the same lane (its offset in the group mod 8) of the same 8-lane partial sums,
// reduced in lane order. So all of them give the same bits
// (LoraRegimes.EveryInstructionSetGivesTheSameBits).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/quant_math.h"
#include "quant/merged_rows.h"

// x86-64 builds compile AVX2 + FMA and AVX-512 variants of the fp32 loops and pick one by CPU at
// run time (merged_rows.cpp). The loop bodies are always inlined into each variant so the whole
// nest gets the variant's instruction set. (Not target_clones: its "arch=" clones dispatch on
// the CPU model, not on the features it supports.)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define L4Q_HAVE_X86_VARIANTS 1
#define L4Q_AVX2 __attribute__((target("avx2,fma")))
#define L4Q_AVX512 __attribute__((target("avx2,fma,avx512f,avx512vl,avx512dq")))
#else
#define L4Q_HAVE_X86_VARIANTS 0
#endif
#define L4Q_INLINE __attribute__((always_inline)) inline

namespace l4q::cpu::kernels {

// Elements processed together: one AVX2 register of floats. The fixed-size inner loops below
// are what the vectoriser turns into single vector instructions.
constexpr int kV = 8;

// A group's kV lane sums of the backward pass reduced in lane order into *ds and *db: the one
// order every variant uses.
template <typename T>
L4Q_INLINE void store_group_sums(const T* acc_s, const T* acc_b, T* ds, T* db) {
  T ts = 0, tb = 0;
  for (int l = 0; l < kV; ++l) {
    ts += acc_s[l];
    tb += acc_b[l];
  }
  *ds = ts;
  *db = tb;
}

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
                                          int64_t gs, int bits, T* dst, int32_t* clipped) {
  const T qn = T(qmath::grid_min(bits)), qp = T(qmath::grid_max(bits));
  const int64_t groups = in / gs;
  for (int64_t i = 0; i < rows; ++i) {
    const T* w0 = W0 + i * in;
    const T* Bi = B + i * r;
    T* d = dst + i * in;
    int32_t n_clipped = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const int64_t j1 = (g + 1) * gs;
      int64_t j = g * gs;
      for (; j + kV <= j1; j += kV) {
        T w[kV];
        merged_block(w0, A, Bi, scale, r, in, j, w);
        for (int l = 0; l < kV; ++l) {
          const auto e = qmath::quantize(w[l], sg, bg, qn, qp);
          n_clipped += !e.in;
          d[j + l] = qmath::dequantize(e.w_int, sg, bg);
        }
      }
      for (; j < j1; ++j) {
        const auto e = qmath::quantize(merged_elem(w0, A, Bi, scale, r, in, j), sg, bg, qn, qp);
        n_clipped += !e.in;
        d[j] = qmath::dequantize(e.w_int, sg, bg);
      }
    }
    if (clipped) clipped[i] = n_clipped;
  }
}

// The LoRA corrections of one row (merged_rows.h). For each selected element j, in ascending
// order, with G value g:  accB[k] = fma(g, At[j][k], accB[k])  and  dAt[j][k] = fma(bs[k], g,
// dAt[j][k]), k < r. A is read transposed (At: [in, rp], rp >= r a multiple of 8, zero padded)
// so that one element's r values lie in one or two cache lines, as do its dA_clip values.
template <typename T>
struct RowCorrections {
  const T* At;
  int64_t r, rp;
  T* accB;      // [rp], or nullptr: no dB
  const T* bs;  // [rp]: this row of B, negated for a direct row, zero padded
  T* dAt;       // [in, rp], or nullptr: no dA
};

template <typename T>
L4Q_INLINE void correct_elem(const RowCorrections<T>& c, int64_t j, T g) {
  if (c.accB) {
    const T* a = c.At + j * c.rp;
    for (int64_t k = 0; k < c.r; ++k) c.accB[k] = std::fma(g, a[k], c.accB[k]);
  }
  if (c.dAt) {
    T* d = c.dAt + j * c.rp;
    for (int64_t k = 0; k < c.r; ++k) d[k] = std::fma(c.bs[k], g, d[k]);
  }
}

// Sets up a row's corrections: accB zeroed, bs = B row (negated when direct), both padded.
template <typename T>
L4Q_INLINE RowCorrections<T> row_corrections(const T* At, const T* Bi, int64_t r, int64_t rp,
                                             bool dir, T* accB, T* bs, T* dAt) {
  for (int64_t k = 0; k < rp; ++k) {
    if (accB) accB[k] = 0;
    bs[k] = k < r ? (dir ? -Bi[k] : Bi[k]) : T(0);
  }
  return {At, r, rp, accB, bs, dAt};
}

template <typename T>
L4Q_INLINE void merged_quantize_backward_rows_impl(const T* W0, const T* A, const T* At,
                                                   int64_t rp, const T* B, T scale, int64_t r,
                                                   const T* s, const T* b, int64_t rows,
                                                   int64_t in, int64_t gs, int bits, T* dst, T* G,
                                                   bool mask_G, T* ds, T* db, T* dB_clip,
                                                   T* dAt_clip, const uint8_t* direct) {
  const T qn = T(qmath::grid_min(bits)), qp = T(qmath::grid_max(bits));
  const int64_t groups = in / gs;
  const bool want_dB = dB_clip != nullptr && r > 0;
  const bool want_dA = dAt_clip != nullptr && r > 0;
  std::vector<T> accB(static_cast<size_t>(rp)), bs(static_cast<size_t>(rp));
  for (int64_t i = 0; i < rows; ++i) {
    const T* w0 = W0 + i * in;
    const T* Bi = B + i * r;
    T* d = dst + i * in;
    T* gr = G + i * in;
    // A direct row sums M * G itself; the others sum the clipped elements (1 - M) * G.
    const bool dir = direct != nullptr && direct[i] != 0;
    const auto corr = row_corrections(At, Bi, r, rp, dir, want_dB ? accB.data() : nullptr,
                                      bs.data(), want_dA ? dAt_clip : nullptr);
    const bool any_corr = want_dB || want_dA;
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const int64_t j1 = (g + 1) * gs;
      T acc_s[kV] = {}, acc_b[kV] = {};
      int64_t j = g * gs;
      for (; j + kV <= j1; j += kV) {
        T w[kV], gv[kV];
        bool sel[kV];
        merged_block(w0, A, Bi, scale, r, in, j, w);
        for (int l = 0; l < kV; ++l) {
          const auto e = qmath::quantize(w[l], sg, bg, qn, qp);
          const T gj = gr[j + l];
          acc_s[l] += gj * qmath::step_grad(e);
          acc_b[l] += gj * qmath::offset_grad(e);
          gv[l] = gj;
          sel[l] = e.in == dir;
          if (mask_G) gr[j + l] = e.in ? gj : T(0);
          d[j + l] = qmath::dequantize(e.w_int, sg, bg);
        }
        if (any_corr)
          for (int l = 0; l < kV; ++l)
            if (sel[l]) correct_elem(corr, j + l, gv[l]);
      }
      for (; j < j1; ++j) {
        const T w = merged_elem(w0, A, Bi, scale, r, in, j);
        const auto e = qmath::quantize(w, sg, bg, qn, qp);
        const T gj = gr[j];
        acc_s[0] += gj * qmath::step_grad(e);
        acc_b[0] += gj * qmath::offset_grad(e);
        if (mask_G) gr[j] = e.in ? gj : T(0);
        d[j] = qmath::dequantize(e.w_int, sg, bg);
        if (any_corr && e.in == dir) correct_elem(corr, j, gj);
      }
      store_group_sums(acc_s, acc_b, ds + i * groups + g, db + i * groups + g);
    }
    if (want_dB)
      for (int64_t k = 0; k < r; ++k) dB_clip[i * r + k] = dir ? -accB[k] : accB[k];
  }
}

#if L4Q_HAVE_X86_VARIANTS
// ---------------------------------------------------------------------------------------
// AVX2 + FMA pieces for fp32, written with intrinsics (GCC does not vectorise the loops above:
// the rank sum is a chain of dependent FMAs per element and the quantizer has branches).
// ---------------------------------------------------------------------------------------
// Vectors per AVX2 tile: the rank sum is latency-bound per element (r dependent FMAs), so 8
// vectors (64 elements) keep 8 independent chains in flight.
constexpr int kNV = 8;

// acc[v] = W_comb for elements [j + 8v, j + 8v + 8), v < NV.
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

// Returns how many of the tile's elements are clipped.
template <int NV>
L4Q_AVX2 L4Q_INLINE int quantize_tile_avx2(const float* w0, const float* A, const float* Bi,
                                           float scale, int64_t r, int64_t in, int64_t j,
                                           __m256 s, __m256 b, __m256 qn, __m256 qp, float* d) {
  __m256 w[NV];
  merged_tile_avx2<NV>(w0, A, Bi, scale, r, in, j, w);
  int n_in = 0;
  for (int v = 0; v < NV; ++v) {
    const Quant8 e = quantize8(w[v], s, b, qn, qp);
    n_in += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(e.in)));
    _mm256_storeu_ps(d + j + 8 * v, dequantize8(e.w_int, s, b));
  }
  return 8 * NV - n_in;
}

// correct_elem on 8 values of k at a time (the same fma per k).
L4Q_AVX2 L4Q_INLINE void correct_elem_avx2(const RowCorrections<float>& c, int64_t j, float g) {
  const __m256 gv = _mm256_set1_ps(g);
  if (c.accB) {
    const float* a = c.At + j * c.rp;
    for (int64_t q = 0; q < c.rp; q += 8)
      _mm256_storeu_ps(c.accB + q, _mm256_fmadd_ps(gv, _mm256_loadu_ps(a + q),
                                                   _mm256_loadu_ps(c.accB + q)));
  }
  if (c.dAt) {
    float* d = c.dAt + j * c.rp;
    for (int64_t q = 0; q < c.rp; q += 8)
      _mm256_storeu_ps(d + q, _mm256_fmadd_ps(_mm256_loadu_ps(c.bs + q), gv, _mm256_loadu_ps(d + q)));
  }
}

// Selected elements are appended to a per-row list (index, G value) without a branch per
// lane: kCompress[mask] packs the set lanes of an 8-lane mask first. The corrections then run
// over the list at the end of the row, in ascending element order, as a tight loop (per-lane
// branches in the tile loop mispredicted often enough to cost ~90 cycles per clipped element).
struct CompressTable {
  alignas(32) int32_t idx[256][8];
  constexpr CompressTable() : idx{} {
    for (int m = 0; m < 256; ++m) {
      int n = 0;
      for (int l = 0; l < 8; ++l)
        if (m >> l & 1) idx[m][n++] = l;
    }
  }
};
inline constexpr CompressTable kCompress{};

// A row's selected elements. The vector stores write whole registers past n: the arrays hold
// in + kListSlack entries.
struct SelectedList {
  float* g;
  int32_t* j;
  int64_t n = 0;
};
constexpr int64_t kListSlack = 16;

// One tile of the backward pass; acc_s, acc_b: the group's lane sums. The selected elements
// (clipped ones, or in a direct row (dir) unclipped ones) go to list when it is given.
template <int NV>
L4Q_AVX2 L4Q_INLINE void backward_tile_avx2(const float* w0, const float* A, const float* Bi,
                                            float scale, int64_t r, int64_t in, int64_t j,
                                            __m256 s, __m256 b, __m256 qn, __m256 qp, float* d,
                                            float* gr, bool mask_G, bool dir, __m256& acc_s,
                                            __m256& acc_b, SelectedList* list) {
  __m256 w[NV];
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
    if (list) {
      const unsigned in_bits = static_cast<unsigned>(_mm256_movemask_ps(e.in));
      const unsigned sel = dir ? in_bits : (~in_bits & 0xFFu);
      // No branch on sel: at a few percent clipped, a sixth of the vectors have a selected
      // lane, and the branch mispredicted on them.
      const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.idx[sel]));
      const int64_t n = list->n;
      _mm256_storeu_ps(list->g + n, _mm256_permutevar8x32_ps(gj, perm));
      _mm256_storeu_si256(
          reinterpret_cast<__m256i*>(list->j + n),
          _mm256_add_epi32(perm, _mm256_set1_epi32(static_cast<int32_t>(j + 8 * v))));
      list->n = n + __builtin_popcount(sel);
    }
    if (mask_G) _mm256_storeu_ps(gr + j + 8 * v, _mm256_and_ps(e.in, gj));
    _mm256_storeu_ps(d + j + 8 * v, dequantize8(e.w_int, s, b));
  }
}

// Row elements [j, c1) of one group after the wide tiles: 8-lane tiles, then one element at a
// time. Returns how many are clipped.
L4Q_AVX2 L4Q_INLINE int quantize_tail_avx2(const float* w0, const float* A, const float* Bi,
                                           float scale, int64_t r, int64_t in, int64_t j,
                                           int64_t c1, float sg, float bg, int bits, float* d) {
  const float qnf = float(qmath::grid_min(bits)), qpf = float(qmath::grid_max(bits));
  const __m256 qn = _mm256_set1_ps(qnf), qp = _mm256_set1_ps(qpf);
  const __m256 sv = _mm256_set1_ps(sg), bv = _mm256_set1_ps(bg);
  int n_clipped = 0;
  for (; j + 8 <= c1; j += 8)
    n_clipped += quantize_tile_avx2<1>(w0, A, Bi, scale, r, in, j, sv, bv, qn, qp, d);
  for (; j < c1; ++j) {
    const auto e = qmath::quantize(merged_elem(w0, A, Bi, scale, r, in, j), sg, bg, qnf, qpf);
    n_clipped += !e.in;
    d[j] = qmath::dequantize(e.w_int, sg, bg);
  }
  return n_clipped;
}

// One row of the backward pass from element j to the end of group g after the wide tiles
// (8-lane tiles, then single elements into lane 0, as the generic code), then the group's lane
// sums reduced in lane order into *ds and *db.
struct BackwardRow {
  const float* w0;
  const float* Bi;
  float* d;
  float* gr;
  bool dir;
  SelectedList* list;  // nullptr: no corrections
};

L4Q_AVX2 L4Q_INLINE void finish_group_avx2(const BackwardRow& row, const float* A, float scale,
                                           int64_t r, int64_t in, int64_t j, int64_t j1,
                                           float sg, float bg, int bits, bool mask_G,
                                           __m256 acc_s, __m256 acc_b, float* ds, float* db) {
  const float qnf = float(qmath::grid_min(bits)), qpf = float(qmath::grid_max(bits));
  const __m256 qn = _mm256_set1_ps(qnf), qp = _mm256_set1_ps(qpf);
  const __m256 sv = _mm256_set1_ps(sg), bv = _mm256_set1_ps(bg);
  for (; j + 8 <= j1; j += 8)
    backward_tile_avx2<1>(row.w0, A, row.Bi, scale, r, in, j, sv, bv, qn, qp, row.d, row.gr,
                          mask_G, row.dir, acc_s, acc_b, row.list);
  float ls[kV], lb[kV];
  _mm256_storeu_ps(ls, acc_s);
  _mm256_storeu_ps(lb, acc_b);
  for (; j < j1; ++j) {  // the generic code's tail: lane 0
    const float w = merged_elem(row.w0, A, row.Bi, scale, r, in, j);
    const auto e = qmath::quantize(w, sg, bg, qnf, qpf);
    const float gj = row.gr[j];
    ls[0] += gj * qmath::step_grad(e);
    lb[0] += gj * qmath::offset_grad(e);
    if (mask_G) row.gr[j] = e.in ? gj : 0.0f;
    row.d[j] = qmath::dequantize(e.w_int, sg, bg);
    if (row.list && e.in == row.dir) {
      row.list->g[row.list->n] = gj;
      row.list->j[row.list->n++] = static_cast<int32_t>(j);
    }
  }
  store_group_sums(ls, lb, ds, db);
}

// The corrections of one row from its list of selected elements (merged_rows.h), in ascending
// element order; dB_clip_row: the row's r values, or nullptr. accB, bs: scratch of rp floats.
L4Q_AVX2 L4Q_INLINE void apply_corrections_avx2(const BackwardRow& row, const float* At,
                                                int64_t r, int64_t rp, float* accB, float* bs,
                                                float* dAt_clip, float* dB_clip_row) {
  const auto corr = row_corrections(At, row.Bi, r, rp, row.dir, dB_clip_row ? accB : nullptr,
                                    bs, dAt_clip);
  for (int64_t t = 0; t < row.list->n; ++t) correct_elem_avx2(corr, row.list->j[t], row.list->g[t]);
  if (dB_clip_row)
    for (int64_t k = 0; k < r; ++k) dB_clip_row[k] = row.dir ? -accB[k] : accB[k];
}

// ---------------------------------------------------------------------------------------
// Entry points per instruction set (the signatures of merged_rows.h).
// ---------------------------------------------------------------------------------------
#define L4Q_ROWS_VARIANT_DECLS(T, suffix)                                                      \
  void merged_rows_##suffix(const T* W0, const T* A, const T* B, T scale, int64_t r,           \
                            int64_t rows, int64_t in, T* dst);                                 \
  void merged_quantize_rows_##suffix(const T* W0, const T* A, const T* B, T scale, int64_t r,  \
                                     const T* s, const T* b, int64_t rows, int64_t in,         \
                                     int64_t gs, int bits, T* dst, int32_t* clipped);          \
  void merged_quantize_backward_rows_##suffix(                                                 \
      const T* W0, const T* A, const T* At, int64_t rp, const T* B, T scale, int64_t r,        \
      const T* s, const T* b, int64_t rows, int64_t in, int64_t gs, int bits, T* dst, T* G,    \
      bool mask_G, T* ds, T* db, T* dB_clip, T* dAt_clip, const uint8_t* direct);
L4Q_ROWS_VARIANT_DECLS(float, avx2)
L4Q_ROWS_VARIANT_DECLS(double, avx2)
L4Q_ROWS_VARIANT_DECLS(float, avx512)
L4Q_ROWS_VARIANT_DECLS(double, avx512)
#undef L4Q_ROWS_VARIANT_DECLS

// The AVX-512 loops read a 16-bit W0 directly (widening each register as they load it) when
// avx512_reads_16bit(gs): groups of whole tiles, so no tail goes to the fp32-only AVX2 pieces.
bool avx512_reads_16bit(int64_t gs);
#define L4Q_ROWS_16BIT_AVX512_DECLS(W)                                                         \
  void merged_quantize_rows_avx512(const W* W0, const float* A, const float* B, float scale,   \
                                   int64_t r, const float* s, const float* b, int64_t rows,    \
                                   int64_t in, int64_t gs, int bits, float* dst,               \
                                   int32_t* clipped);                                          \
  void merged_quantize_backward_rows_avx512(                                                   \
      const W* W0, const float* A, const float* At, int64_t rp, const float* B, float scale,   \
      int64_t r, const float* s, const float* b, int64_t rows, int64_t in, int64_t gs,        \
      int bits, float* dst, float* G, bool mask_G, float* ds, float* db, float* dB_clip,      \
      float* dAt_clip, const uint8_t* direct);
L4Q_ROWS_16BIT_AVX512_DECLS(Bf16)
L4Q_ROWS_16BIT_AVX512_DECLS(F16)
#undef L4Q_ROWS_16BIT_AVX512_DECLS
#endif

}  // namespace l4q::cpu::kernels
