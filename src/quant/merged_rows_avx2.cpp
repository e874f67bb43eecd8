// The AVX2 + FMA variants of the row loops (merged_rows_kernels.h): fp32 with intrinsics, fp64
// as the generic code compiled for AVX2.
//
// Each element reads r values of A (64 bytes per element at r = 16): walked row by row, A
// (r x in, 256 KiB for in = 4096) streams from L2 for every row. So the forward loop walks rows
// in blocks of kRowBlock and, within a block, column spans of kSpan elements of one
// quantization group, every row of the block in turn: A's span (r x kSpan, 16 KiB) stays in L1
// for kRowBlock rows (for_spans). The backward loop stays row by row: it also streams G, and
// measured slower when blocked.
#include "quant/merged_rows_kernels.h"

#include <algorithm>
#include <memory>
#include <vector>

#if L4Q_HAVE_X86_VARIANTS
namespace l4q::cpu::kernels {
namespace {

constexpr int64_t kRowBlock = 8;
constexpr int64_t kSpan = 256;  // a multiple of 8 * kNV: only a group's last span has tails
static_assert(kSpan % (8 * kNV) == 0, "spans hold whole tiles");

// Calls f(i, i0, g, c0, c1) for row i's elements [c0, c1) of group g, in row blocks
// [i0, i0 + kRowBlock), each block's rows taking turns span by span. A span never crosses a
// group; c0 == g * gs starts the group for that row, c1 == (g + 1) * gs ends it.
template <typename F>
L4Q_INLINE void for_spans(int64_t rows, int64_t in, int64_t gs, F&& f) {
  const int64_t groups = in / gs;
  for (int64_t i0 = 0; i0 < rows; i0 += kRowBlock) {
    const int64_t i1 = std::min(rows, i0 + kRowBlock);
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t c0 = g * gs; c0 < (g + 1) * gs; c0 += kSpan) {
        const int64_t c1 = std::min((g + 1) * gs, c0 + kSpan);
        for (int64_t i = i0; i < i1; ++i) f(i, i0, g, c0, c1);
      }
  }
}


}  // namespace

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
                                        float* dst, int32_t* clipped) {
  const __m256 qn = _mm256_set1_ps(float(qmath::grid_min(bits)));
  const __m256 qp = _mm256_set1_ps(float(qmath::grid_max(bits)));
  const int64_t groups = in / gs;
  if (clipped)
    for (int64_t i = 0; i < rows; ++i) clipped[i] = 0;
  for_spans(rows, in, gs, [&](int64_t i, int64_t, int64_t g, int64_t c0, int64_t c1) L4Q_AVX2 {
    const float* w0 = W0 + i * in;
    const float* Bi = B + i * r;
    float* d = dst + i * in;
    const float sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
    const __m256 sv = _mm256_set1_ps(sg), bv = _mm256_set1_ps(bg);
    int64_t j = c0;
    int n_clipped = 0;
    for (; j + 8 * kNV <= c1; j += 8 * kNV)
      n_clipped += quantize_tile_avx2<kNV>(w0, A, Bi, scale, r, in, j, sv, bv, qn, qp, d);
    n_clipped += quantize_tail_avx2(w0, A, Bi, scale, r, in, j, c1, sg, bg, bits, d);
    if (clipped) clipped[i] += n_clipped;
  });
}

L4Q_AVX2 void merged_quantize_backward_rows_avx2(const float* W0, const float* A,
                                                 const float* At, int64_t rp, const float* B,
                                                 float scale, int64_t r, const float* s,
                                                 const float* b, int64_t rows, int64_t in,
                                                 int64_t gs, int bits, float* dst, float* G,
                                                 bool mask_G, float* ds, float* db,
                                                 float* dB_clip, float* dAt_clip,
                                                 const uint8_t* direct) {
  const __m256 qn = _mm256_set1_ps(float(qmath::grid_min(bits)));
  const __m256 qp = _mm256_set1_ps(float(qmath::grid_max(bits)));
  const int64_t groups = in / gs;
  const bool want_dB = dB_clip != nullptr && r > 0;
  const bool want_dA = dAt_clip != nullptr && r > 0;
  const bool any_corr = want_dB || want_dA;
  std::vector<float> accB(static_cast<size_t>(rp)), bs(static_cast<size_t>(rp));
  // Not zeroed: callers with 16-bit W0 call this for a few rows at a time.
  const size_t list_len = any_corr ? static_cast<size_t>(in + kListSlack) : 0;
  const std::unique_ptr<float[]> list_g(new float[list_len]);
  const std::unique_ptr<int32_t[]> list_j(new int32_t[list_len]);
  for (int64_t i = 0; i < rows; ++i) {
    SelectedList sl{list_g.get(), list_j.get()};
    const BackwardRow row{W0 + i * in, B + i * r, dst + i * in, G + i * in,
                          direct != nullptr && direct[i] != 0, any_corr ? &sl : nullptr};
    for (int64_t g = 0; g < groups; ++g) {
      const float sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const __m256 sv = _mm256_set1_ps(sg), bv = _mm256_set1_ps(bg);
      const int64_t j1 = (g + 1) * gs;
      __m256 acc_s = _mm256_setzero_ps(), acc_b = _mm256_setzero_ps();
      int64_t j = g * gs;
      for (; j + 8 * kNV <= j1; j += 8 * kNV)
        backward_tile_avx2<kNV>(row.w0, A, row.Bi, scale, r, in, j, sv, bv, qn, qp, row.d, row.gr,
                                mask_G, row.dir, acc_s, acc_b, row.list);
      finish_group_avx2(row, A, scale, r, in, j, j1, sg, bg, bits, mask_G, acc_s, acc_b,
                        ds + i * groups + g, db + i * groups + g);
    }
    if (any_corr)
      apply_corrections_avx2(row, At, r, rp, accB.data(), bs.data(), want_dA ? dAt_clip : nullptr,
                             want_dB ? dB_clip + i * r : nullptr);
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
                                        double* dst, int32_t* clipped) {
  merged_quantize_rows_impl(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, clipped);
}
L4Q_AVX2 void merged_quantize_backward_rows_avx2(const double* W0, const double* A,
                                                 const double* At, int64_t rp, const double* B,
                                                 double scale, int64_t r, const double* s,
                                                 const double* b, int64_t rows, int64_t in,
                                                 int64_t gs, int bits, double* dst, double* G,
                                                 bool mask_G, double* ds, double* db,
                                                 double* dB_clip, double* dAt_clip,
                                                 const uint8_t* direct) {
  merged_quantize_backward_rows_impl(W0, A, At, rp, B, scale, r, s, b, rows, in, gs, bits, dst, G,
                                     mask_G, ds, db, dB_clip, dAt_clip, direct);
}

}  // namespace l4q::cpu::kernels
#endif
