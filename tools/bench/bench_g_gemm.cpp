// The weight-gradient GEMM of the L4Q backward, G = dY^T X (K = tokens), per row block as
// l4q_linear computes it, with OpenBLAS (at::mm_out, the library's path) against a plain
// AVX-512 kernel of our own, in the same run. Each block's G is compared with OpenBLAS's before
// anything is timed. The kernel is not in the library: with the backward pass fused behind it
// (docs/experiments/tiled-weight-grad.patch) the step was no faster: the pass still waits on
// W0 and W_q in memory (docs/benchmarks.md, fifth session).
//
//   bench_g_gemm [--tokens 512] [--reps 5] [--threads 0] [--block-cols 512]
//
// Kernel: a 6 x 64 tile of G in 24 zmm accumulators; per token one broadcast of dY per row and
// four loads of X, the whole K in one pass (no zero fill of G, one store per element). X is
// packed once per call into 64-column panels [in/64][K][64]; the rows of dY^T per 6-row tile
// into [K][6]; --block-cols columns of panels at a time, so those panels stay in L2 while every
// tile passes over them. Layers: LLaMA-7B's MLP projections in the library's automatic row
// blocks (4 x 2752 rows of the 11008 x 4096 one, 4 x 1024 of the 4096 x 11008 one).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "l4q/runtime.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_KERNEL 1
#define AVX512 __attribute__((target("avx512f")))
#else
#define HAVE_KERNEL 0
#endif

namespace {

#if HAVE_KERNEL
constexpr int64_t kMR = 6, kNR = 64;

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

// C[0..6, 0..64) = sum_t Ap[t][r] * Bp[t][c], each element an FMA chain in token order.
AVX512 void tile_6x64(int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc) {
  __m512 c[kMR][4];
  for (auto& row : c)
    for (auto& v : row) v = _mm512_setzero_ps();
  for (int64_t t = 0; t < K; ++t) {
    const float* b = Bp + t * kNR;
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16),
                 b2 = _mm512_load_ps(b + 32), b3 = _mm512_load_ps(b + 48);
    // Fully unrolled, or the accumulators go through memory (GCC at -O2 does not unroll this).
#pragma GCC unroll 6
    for (int r = 0; r < kMR; ++r) {
      const __m512 a = _mm512_set1_ps(Ap[t * kMR + r]);
      c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
      c[r][2] = _mm512_fmadd_ps(a, b2, c[r][2]);
      c[r][3] = _mm512_fmadd_ps(a, b3, c[r][3]);
    }
  }
  for (int r = 0; r < kMR; ++r)
    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(C + r * ldc + q * 16, c[r][q]);
}

// G [rows, in] = dY[:, r0:r0+rows]^T X, X [K, in] and dY [K, out] row-major.
// Xp: X packed into panels (pack_x); Ap: room for ceil(rows / 6) tiles of [K][6].
void g_block(const float* dY, int64_t out, int64_t r0, int64_t rows, const float* Xp,
             int64_t K, int64_t in, int64_t block_cols, float* Ap, float* G) {
  const int64_t tiles = (rows + kMR - 1) / kMR;
  // The last tile overlaps the one before when rows % 6 != 0 (same values written twice).
  auto tile_row = [&](int64_t tile) { return std::min(tile * kMR, rows - kMR); };
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t tile = t0; tile < t1; ++tile) {
      float* a = Ap + tile * K * kMR;
      const int64_t i0 = r0 + tile_row(tile);
      for (int64_t t = 0; t < K; ++t)
        for (int64_t r = 0; r < kMR; ++r) a[t * kMR + r] = dY[t * out + i0 + r];
    }
  });
  for (int64_t c0 = 0; c0 < in; c0 += block_cols) {
    const int64_t p0 = c0 / kNR, p1 = std::min(in, c0 + block_cols) / kNR;
    at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t tile = t0; tile < t1; ++tile)
        for (int64_t p = p0; p < p1; ++p)
          tile_6x64(K, Ap + tile * K * kMR, Xp + p * K * kNR, G + tile_row(tile) * in + p * kNR, in);
    });
  }
}

void pack_x(const float* X, int64_t K, int64_t in, float* Xp) {
  at::parallel_for(0, in / kNR, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t t = 0; t < K; ++t)
        std::memcpy(Xp + (p * K + t) * kNR, X + t * in + p * kNR, kNR * sizeof(float));
  });
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 512, block_cols = 512;
  int reps = 5, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (k == "--tokens") tokens = v;
    else if (k == "--reps") reps = static_cast<int>(v);
    else if (k == "--threads") threads = static_cast<int>(v);
    else if (k == "--block-cols") block_cols = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (tokens < 1 || reps < 1 || block_cols < 64 || block_cols % 64 != 0) {
    std::fprintf(stderr, "--tokens and --reps must be >= 1, --block-cols a positive multiple of 64\n");
    return 2;
  }
  const int nt = l4q::set_num_threads(threads);
#if !HAVE_KERNEL
  (void)nt;
  std::printf("bench_g_gemm: the AVX-512 kernel needs an x86-64 GCC/Clang build; nothing to measure\n");
  return 0;
#else
  if (!__builtin_cpu_supports("avx512f")) {
    std::printf("bench_g_gemm: this CPU has no AVX-512; nothing to measure\n");
    return 0;
  }
  std::printf("G = dY^T X per row block, %lld tokens, %d threads, columns blocked by %lld, "
              "best of %d\n", (long long)tokens, nt, (long long)block_cols, reps);
  std::printf("| layer (out x in, block rows) | OpenBLAS ms | ours ms (X packing included) | ours vs OpenBLAS | max abs diff |\n");
  std::printf("|---|---|---|---|---|\n");
  struct Layer { int64_t out, in, rows; };
  for (const Layer L : {Layer{11008, 4096, 2752}, Layer{4096, 11008, 1024}}) {
    at::manual_seed(0);
    const auto X = at::randn({tokens, L.in}), dY = at::randn({tokens, L.out});
    auto Gref = at::empty({L.rows, L.in}), G = at::empty({L.rows, L.in});
    float* Xp = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * tokens * L.in));
    float* Ap = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * tokens * (L.rows + kMR)));
    double diff = 0;
    for (int64_t r0 = 0; r0 < L.out; r0 += L.rows) {
      at::mm_out(Gref, dY.narrow(1, r0, L.rows).t(), X);
      pack_x(X.data_ptr<float>(), tokens, L.in, Xp);
      g_block(dY.data_ptr<float>(), L.out, r0, L.rows, Xp, tokens, L.in, block_cols, Ap,
              G.data_ptr<float>());
      diff = std::max(diff, (G - Gref).abs().max().item<double>());
    }
    double t_blas = 1e30, t_ours = 1e30;
    for (int rep = 0; rep < reps; ++rep) {
      const double t0 = now_ms();
      for (int64_t r0 = 0; r0 < L.out; r0 += L.rows)
        at::mm_out(Gref, dY.narrow(1, r0, L.rows).t(), X);
      const double t1 = now_ms();
      pack_x(X.data_ptr<float>(), tokens, L.in, Xp);
      for (int64_t r0 = 0; r0 < L.out; r0 += L.rows)
        g_block(dY.data_ptr<float>(), L.out, r0, L.rows, Xp, tokens, L.in, block_cols, Ap,
                G.data_ptr<float>());
      const double t2 = now_ms();
      t_blas = std::min(t_blas, t1 - t0);
      t_ours = std::min(t_ours, t2 - t1);
    }
    std::printf("| %lld x %lld, %lld | %.1f | %.1f | %.3fx | %.2e |\n", (long long)L.out,
                (long long)L.in, (long long)L.rows, t_blas, t_ours, t_ours / t_blas, diff);
    std::free(Xp);
    std::free(Ap);
  }
  return 0;
#endif
}
