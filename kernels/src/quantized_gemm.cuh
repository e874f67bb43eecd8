// C [M, N] = X [M, K] * Wop [K, N] where the weight operand is produced tile by tile in shared
// memory by a producer from weight_tiles.cuh and never exists in global memory:
//   forward and packed GEMM:  Wop(k, n) = W(n, k)   (tile = W rows n0.., columns k0..)
//   dX:                       Wop(k, n) = W(k, n)   (tile = W rows k0.., columns n0..)
//
// Work split (bf16: BM = BN = 128, BK = 32, 8 warps as 2 x 4, warp tile 64 x 32):
//
//        K -->                                    N -->
//   M  +--------+  X tile [BM][BK]       +-----+-----+-----+-----+
//   |  |  Xs    |  cp.async, 2 stages    | w0  | w1  | w2  | w3  |  warps (wm, wn), each
//   v  +--------+                        +-----+-----+-----+-----+  FM x FN = 4 x 2 WMMA
//                                        | w4  | w5  | w6  | w7  |  16x16 accumulators
//      W tile [BN][BK] (or [BK][BN]):    +-----+-----+-----+-----+
//      raw data cp.async'ed one k-tile ahead, then produce() merges/quantizes/unpacks it into
//      Ws right before the MMAs of that k-tile.
//
// Per k-tile: wait for stage kt; barrier; produce(kt) -> Ws; barrier; MMAs on Xs[kt%2] and Ws;
// barrier. Stage kt+1 is in flight during produce and MMA of kt.
// Why these sizes: 128 x 128 fp32 accumulators are 64 registers per thread, the largest that
// leaves room for fragments without spilling; BK = 32 keeps the per-k-tile producer work at
// 16 elements per thread. fp32 (3xTF32, three MMAs per step) uses 64 x 64 tiles and 4 warps,
// so the shared memory of the rank-64 worst case stays under the 163 KiB of an sm_80 block.
// See docs/kernels.md for why the per-CTA quantization bounds this kernel's speed.
#pragma once
#include "device_common.cuh"
#include "weight_tiles.cuh"

namespace l4q::kernels::detail {

template <typename T>
struct GemmTile;
template <>
struct GemmTile<bf16_t> {
  static constexpr int BM = 128, BN = 128, BK = 32, WM = 2, WN = 4;
};
template <>
struct GemmTile<float> {
  static constexpr int BM = 64, BN = 64, BK = 32, WM = 2, WN = 2;
};

template <typename T, bool kTrans>
struct GemmConfig {
  using Tile = GemmTile<T>;
  static constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK;
  static constexpr int WM = Tile::WM, WN = Tile::WN, NT = 32 * WM * WN;
  static constexpr int WTM = BM / WM, WTN = BN / WN, FM = WTM / 16, FN = WTN / 16;
  static constexpr int kLdX = BK + kPad<T>;
  static constexpr int kLdC = BN + 4;
  // Producer tile: rows are output features of W, columns input features.
  static constexpr int kTileRows = kTrans ? BK : BN;
  static constexpr int kTileCols = kTrans ? BN : BK;
  static_assert(BK % WarpMma<T>::kK == 0, "K step");
};

template <typename T, bool kTrans, class Producer>
struct QuantizedGemm {
  using Cfg = GemmConfig<T, kTrans>;
  static_assert(Producer::kRows == Cfg::kTileRows && Producer::kCols == Cfg::kTileCols,
                "producer tile must match the GEMM tile");
  static constexpr int kLdW = Producer::kCols + kPad<T>;

  struct Smem {
    Stages<T> x;  // [BM][kLdX]
    T* w;         // [kTileRows][kLdW]
  };
  static __host__ __device__ Smem layout(SmemCarver& c) {
    Smem m;
    m.x = c.take_stages<T>(static_cast<size_t>(Cfg::BM) * Cfg::kLdX);
    m.w = c.take<T>(static_cast<size_t>(Cfg::kTileRows) * kLdW);
    return m;
  }
  static size_t smem_bytes(const typename Producer::Params& p) {
    SmemCarver c{nullptr};
    layout(c);
    Producer::layout(c, p);
    const size_t epilogue = static_cast<size_t>(Cfg::BM) * Cfg::kLdC * sizeof(float);
    return c.offset > epilogue ? c.offset : epilogue;
  }
};

// X [M, K], C [M, N], both T, row-major. One CTA per (BM x BN) tile of C.
template <typename T, bool kTrans, class Producer>
__global__ void __launch_bounds__(GemmConfig<T, kTrans>::NT)
    quantized_gemm_kernel(const T* __restrict__ X, T* __restrict__ C, int64_t M, int64_t N,
                          int64_t K, const __grid_constant__ typename Producer::Params p) {
  using Cfg = GemmConfig<T, kTrans>;
  using G = QuantizedGemm<T, kTrans, Producer>;
  using Mma = WarpMma<T>;
  constexpr int NT = Cfg::NT, BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK;
  L4Q_DYNAMIC_SMEM(unsigned char, smem_raw);

  SmemCarver carver{smem_raw};
  const typename G::Smem sm = G::layout(carver);
  Producer prod(p, carver);

  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int KT = static_cast<int>(ceil_div(K, BK));
  const bool x_vec = rows_16b_aligned(X, K);

  const int warp = threadIdx.x / 32;
  const int wm = warp / Cfg::WN, wn = warp % Cfg::WN;

  typename Mma::Acc acc[Cfg::FM][Cfg::FN];
#pragma unroll
  for (int i = 0; i < Cfg::FM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  prod.init(n0);
  copy_tile<T, NT>(sm.x[0], Cfg::kLdX, X, K, m0, 0, M, K, BM, BK, x_vec);
  prod.stage(0, 0);
  __pipeline_commit();

  for (int kt = 0; kt < KT; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < KT) {
      copy_tile<T, NT>(sm.x[buf ^ 1], Cfg::kLdX, X, K, m0, static_cast<int64_t>(kt + 1) * BK, M,
                       K, BM, BK, x_vec);
      prod.stage(kt + 1, buf ^ 1);
      __pipeline_commit();
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();  // stage kt (and the synchronous fallback copies) visible to all
    prod.produce(kt, buf, sm.w);
    __syncthreads();  // Ws complete

    const T* xs = sm.x[buf];
#pragma unroll
    for (int kk = 0; kk < BK; kk += Mma::kK) {
#pragma unroll
      for (int i = 0; i < Cfg::FM; ++i) {
        const T* a = xs + (wm * Cfg::WTM + i * 16) * Cfg::kLdX + kk;
#pragma unroll
        for (int j = 0; j < Cfg::FN; ++j) {
          const int n_off = wn * Cfg::WTN + j * 16;
          if constexpr (kTrans)
            Mma::template step<wmma::row_major, wmma::row_major>(
                acc[i][j], a, Cfg::kLdX, sm.w + kk * G::kLdW + n_off, G::kLdW);
          else
            Mma::template step<wmma::row_major, wmma::col_major>(
                acc[i][j], a, Cfg::kLdX, sm.w + n_off * G::kLdW + kk, G::kLdW);
        }
      }
    }
    __syncthreads();  // buffers of k-tile kt free for stage kt+2 and the next produce
  }

  // Epilogue: accumulators -> shared (reusing the pipeline buffers) -> C with bounds checks.
  float* cs = reinterpret_cast<float*>(smem_raw);
#pragma unroll
  for (int i = 0; i < Cfg::FM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::FN; ++j)
      wmma::store_matrix_sync(cs + (wm * Cfg::WTM + i * 16) * Cfg::kLdC + wn * Cfg::WTN + j * 16,
                              acc[i][j], Cfg::kLdC, wmma::mem_row_major);
  __syncthreads();
  for (int idx = threadIdx.x; idx < BM * BN; idx += NT) {
    const int r = idx / BN, c = idx % BN;
    const int64_t gm = m0 + r, gn = n0 + c;
    if (gm < M && gn < N) C[gm * N + gn] = from_f32<T>(cs[r * Cfg::kLdC + c]);
  }
}

template <typename T, bool kTrans, class Producer>
Status launch_quantized_gemm(const T* X, T* C, int64_t M, int64_t N, int64_t K,
                             const typename Producer::Params& p, cudaStream_t stream,
                             const char* what) {
  using Cfg = GemmConfig<T, kTrans>;
  const size_t smem = QuantizedGemm<T, kTrans, Producer>::smem_bytes(p);
  auto kernel = quantized_gemm_kernel<T, kTrans, Producer>;
  const Status st = allow_smem(kernel, smem, what);
  if (!st.ok()) return st;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, Cfg::BN)),
                  static_cast<unsigned>(ceil_div(M, Cfg::BM)));
  if (ceil_div(M, Cfg::BM) > 65535) return invalid("quantized GEMM: more than 65535 row tiles");
  launch_kernel(kernel, grid, dim3(Cfg::NT), smem, stream, X, C, M, N, K, p);
  return launched(what);
}

}  // namespace l4q::kernels::detail
