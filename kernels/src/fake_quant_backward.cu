// Fused fake-quant backward.
//
//   dX = dY W_q                          quantized GEMM with the weight read transposed
//                                        (launch_fake_quant_gemm<T, true>, fake_quant_forward.cu)
//   G  = dY^T X  [out, in]               never stored: one CTA owns a BO x BI tile of G, sums it
//                                        over all tokens in registers, then in its epilogue
//   M, w, w_int                          recomputes the merged weight and quantization of the tile,
//   ds, db (group sums), M*G             and accumulates
//   dA += s_l B[rows]^T (M*G)            (s_l = lora_scale) into global memory with fp32 atomics.
//   dB[rows] += s_l (M*G) A[:, cols]^T
//
// Tile of G per CTA: BO = 64 output rows x BI = 128 input columns, tokens in steps of BT = 32,
// 8 warps as 2 x 4, warp tile 32 x 32 (2 x 2 WMMA accumulators):
//
//   tokens -->                 dY^T tile [BO][BT] (col-major view of dY[t, o])
//   +------+      G tile  +=   ...        x  X tile [BT][BI]
//   |dY^T  |  x  |X|
//   +------+
//
// Epilogue, all in shared memory (aliasing the staging buffers):
//   E1  G accumulators -> Gs [BO][BI] fp32;  A[:, cols] -> Af, B[rows, :] -> Bf as fp32;
//       per-row table of (s, 1/s, b) for the groups of the tile's columns
//   E2  BA = Bf Af (3xTF32: exact for bf16 factors) -> Wf
//   E3  one warp per row: W = W0 + s_l BA, quantize, ds/db contributions reduced per group
//       (warp shuffle when a 32-column chunk lies in one group, per-lane atomics otherwise),
//       Gs <- M*G, optional dW <- M*G
//   E4  P = (M*G) Af^T [BO][rank] (3xTF32) -> atomics into dB
//   E5  P = Bf^T (M*G) [rank][BI] (3xTF32) -> atomics into dA
//
// ds and db are sums of fp32 atomics, in an order that varies between runs when a group spans
// more than one CTA (group_size > BI, or groups straddling tile edges); dA and dB always are.
#include <utility>

#include "fake_quant.cuh"

namespace l4q::kernels {
namespace detail {
namespace {

constexpr int kBO = 64, kBI = 128, kBT = 32, kWM = 2, kWN = 4;
constexpr int kNT = 32 * kWM * kWN;
constexpr int kLdG = kBI + 4;  // fp32 tiles Gs, Wf, Af

template <typename T>
struct GradSmem {
  static constexpr int kLdY = kBO + kPad<T>, kLdX = kBI + kPad<T>;
  // Main loop.
  Stages<T> dy;  // [BT][kLdY]
  Stages<T> x;   // [BT][kLdX]
  // Epilogue (aliases the main loop).
  float* g;      // [BO][kLdG]   G, then M*G
  float* wf;     // [BO][kLdG]   BA, then the partial products of dB and dA
  float* af;     // [rank_pad][kLdG]
  float* bf;     // [BO][rank_pad + 4]
  float* s;      // [BO][kTableGroups]  clamp_step(s)
  float* inv_s;  // [BO][kTableGroups]
  float* b;      // [BO][kTableGroups]

  static __host__ __device__ GradSmem layout(unsigned char* base, int rank_pad, size_t& bytes) {
    GradSmem m;
    SmemCarver main{base};
    m.dy = main.take_stages<T>(static_cast<size_t>(kBT) * kLdY);
    m.x = main.take_stages<T>(static_cast<size_t>(kBT) * kLdX);
    SmemCarver epi{base};
    m.g = epi.take<float>(static_cast<size_t>(kBO) * kLdG);
    m.wf = epi.take<float>(static_cast<size_t>(kBO) * kLdG);
    m.af = epi.take<float>(static_cast<size_t>(rank_pad) * kLdG);
    m.bf = epi.take<float>(static_cast<size_t>(kBO) * (rank_pad + 4));
    m.s = epi.take<float>(kBO * kTableGroups);
    m.inv_s = epi.take<float>(kBO * kTableGroups);
    m.b = epi.take<float>(kBO * kTableGroups);
    bytes = main.offset > epi.offset ? main.offset : epi.offset;
    return m;
  }
};

struct GradOutputs {
  float* dA;
  float* dB;
  float* ds;
  float* db;
  float* dW;
  float grad_scale;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) v += __shfl_xor_sync(0xffffffffu, v, k);
  return v;
}

// X [tokens, in], dY [tokens, out]. Grid: (ceil(in / BI), ceil(out / BO)).
template <typename T>
__global__ void __launch_bounds__(kNT, 1)
    fake_quant_grad_kernel(const T* __restrict__ X, const T* __restrict__ dY, int64_t tokens,
                           const __grid_constant__ FakeQuantParams p,
                           const __grid_constant__ GradOutputs out) {
  using Mma = WarpMma<T>;
  using Mma32 = WarpMma<float>;
  using Sm = GradSmem<T>;
  L4Q_DYNAMIC_SMEM(unsigned char, smem_raw);
  size_t unused_bytes;
  const Sm sm = Sm::layout(smem_raw, p.rank_pad, unused_bytes);

  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBI;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kBO;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / kWN, wn = warp % kWN;
  const bool vec_x = rows_16b_aligned(X, p.in), vec_dy = rows_16b_aligned(dY, p.out);

  // ---- G tile = sum over tokens of dY[t, rows]^T X[t, cols] ----
  typename Mma::Acc acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  const int TT = static_cast<int>(ceil_div(tokens, kBT));
  auto stage = [&](int tt, int buf) {
    const int64_t t0 = static_cast<int64_t>(tt) * kBT;
    copy_tile<T, kNT>(sm.dy[buf], Sm::kLdY, dY, p.out, t0, o0, tokens, p.out, kBT, kBO, vec_dy);
    copy_tile<T, kNT>(sm.x[buf], Sm::kLdX, X, p.in, t0, i0, tokens, p.in, kBT, kBI, vec_x);
  };
  stage(0, 0);
  __pipeline_commit();
  for (int tt = 0; tt < TT; ++tt) {
    const int buf = tt & 1;
    if (tt + 1 < TT) {
      stage(tt + 1, buf ^ 1);
      __pipeline_commit();
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    const T* dys = sm.dy[buf];
    const T* xs = sm.x[buf];
#pragma unroll
    for (int kk = 0; kk < kBT; kk += Mma::kK)
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
          // A(m = row, k = token) = dY[token][row]: column-major view of the staged dY tile.
          Mma::template step<wmma::col_major, wmma::row_major>(
              acc[i][j], dys + kk * Sm::kLdY + wm * 32 + i * 16, Sm::kLdY,
              xs + kk * Sm::kLdX + wn * 32 + j * 16, Sm::kLdX);
    __syncthreads();
  }

  // ---- E1: G to shared memory; LoRA factors and the step table as fp32 ----
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(sm.g + (wm * 32 + i * 16) * kLdG + wn * 32 + j * 16, acc[i][j], kLdG,
                              wmma::mem_row_major);
  const int rp = p.rank_pad, ldBf = rp + 4;
  if (rp > 0) {
    const T* A = static_cast<const T*>(p.A);
    const T* B = static_cast<const T*>(p.B);
    for (int idx = threadIdx.x; idx < rp * kBI; idx += kNT) {
      const int j = idx / kBI, c = idx % kBI;
      const int64_t i = i0 + c;
      sm.af[j * kLdG + c] = (j < p.rank && i < p.in) ? to_f32(A[j * p.in + i]) : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kBO * rp; idx += kNT) {
      const int r = idx / rp, j = idx % rp;
      const int64_t o = o0 + r;
      sm.bf[r * ldBf + j] = (o < p.out && j < p.rank) ? to_f32(B[o * p.rank + j]) : 0.0f;
    }
  }
  const int64_t i_last = (i0 + kBI < p.in ? i0 + kBI : p.in) - 1;
  const int64_t g_first = i0 / p.group_size;
  const int g_count = static_cast<int>(i_last / p.group_size - g_first + 1);
  const bool table = g_count <= kTableGroups;
  if (table)
    for (int idx = threadIdx.x; idx < kBO * kTableGroups; idx += kNT) {
      const int r = idx / kTableGroups, j = idx % kTableGroups;
      const int64_t o = o0 + r;
      const bool ok = o < p.out && j < g_count;
      const float s = qmath::clamp_step(ok ? p.s[o * p.groups + g_first + j] : 1.0f);
      sm.s[idx] = s;
      sm.inv_s[idx] = qmath::recip_step(s);
      sm.b[idx] = ok ? p.b[o * p.groups + g_first + j] : 0.0f;
    }
  __syncthreads();

  // ---- E2: BA for the tile (fp32 factors, 3xTF32) ----
  if (rp > 0) {
    constexpr int kFrags = (kBO / 16) * (kBI / 16);
    for (int f = warp; f < kFrags; f += kNT / 32) {
      const int fr = f / (kBI / 16), fc = f % (kBI / 16);
      typename Mma32::Acc a2;
      wmma::fill_fragment(a2, 0.0f);
      for (int k = 0; k < rp; k += Mma32::kK)
        Mma32::step<wmma::row_major, wmma::row_major>(a2, sm.bf + fr * 16 * ldBf + k, ldBf,
                                                      sm.af + k * kLdG + fc * 16, kLdG);
      wmma::store_matrix_sync(sm.wf + fr * 16 * kLdG + fc * 16, a2, kLdG, wmma::mem_row_major);
    }
    __syncthreads();
  }

  // ---- E3: element pass, one warp per row ----
  {
    const T* W0 = static_cast<const T*>(p.W0);
    const float qn = static_cast<float>(qmath::grid_min(p.bits));
    const float qp = static_cast<float>(qmath::grid_max(p.bits));
    const bool sums = out.ds != nullptr || out.db != nullptr;
    for (int r = warp; r < kBO; r += kNT / 32) {
      const int64_t o = o0 + r;
      if (o >= p.out) break;  // warp-uniform; rows of G past `out` are zero
      int64_t run_g = -1;     // the group whose sums are pending in run_s, run_b (all lanes)
      float run_s = 0.0f, run_b = 0.0f;
      auto flush = [&]() {
        if (run_g >= 0 && lane == 0) {
          if (out.ds) atomicAdd(out.ds + o * p.groups + run_g, out.grad_scale * run_s);
          if (out.db) atomicAdd(out.db + o * p.groups + run_g, out.grad_scale * run_b);
        }
      };
      for (int c0 = 0; c0 < kBI && i0 + c0 < p.in; c0 += 32) {
        const int c = c0 + lane;
        const int64_t i = i0 + c;
        float cs = 0.0f, cb = 0.0f;
        if (i < p.in) {
          float w = to_f32(W0[o * p.in + i]);
          if (rp > 0) w = __fmaf_rn(p.lora_scale, sm.wf[r * kLdG + c], w);
          const int64_t g = i / p.group_size;
          float s, b;
          qmath::QuantElem<float> e;
          if (table) {
            const int t = r * kTableGroups + static_cast<int>(g - g_first);
            s = sm.s[t];
            b = sm.b[t];
            e = qmath::quantize_recip(w, s, sm.inv_s[t], b, qn, qp);
          } else {
            s = qmath::clamp_step(p.s[o * p.groups + g]);
            b = p.b[o * p.groups + g];
            e = qmath::quantize(w, s, b, qn, qp);
          }
          const float G = sm.g[r * kLdG + c];
          cs = G * qmath::step_grad(e);
          cb = G * qmath::offset_grad(e);
          const float mg = e.in ? G : 0.0f;
          sm.g[r * kLdG + c] = mg;
          if (out.dW) out.dW[o * p.in + i] = mg;
        }
        if (!sums) continue;
        const int64_t c_last = (i0 + c0 + 31 < p.in ? i0 + c0 + 31 : p.in - 1);
        const int64_t g_lo = (i0 + c0) / p.group_size, g_hi = c_last / p.group_size;
        if (g_lo == g_hi) {  // the whole chunk is one group: reduce in registers
          cs = warp_sum(cs);
          cb = warp_sum(cb);
          if (g_lo != run_g) {
            flush();
            run_g = g_lo;
            run_s = run_b = 0.0f;
          }
          run_s += cs;
          run_b += cb;
        } else if (i < p.in) {  // small or straddling groups: per-lane atomics
          const int64_t gi = o * p.groups + i / p.group_size;
          if (out.ds) atomicAdd(out.ds + gi, out.grad_scale * cs);
          if (out.db) atomicAdd(out.db + gi, out.grad_scale * cb);
        }
      }
      flush();
    }
  }
  __syncthreads();

  // ---- E4: dB[rows, :] += s_l (M*G) A[:, cols]^T ----
  if (rp > 0 && out.dB) {
    const int nfr = rp / 16, ldP = rp + 4;
    for (int f = warp; f < (kBO / 16) * nfr; f += kNT / 32) {
      const int fr = f / nfr, fj = f % nfr;
      typename Mma32::Acc a2;
      wmma::fill_fragment(a2, 0.0f);
#pragma unroll 4
      for (int k = 0; k < kBI; k += Mma32::kK)
        // B(k = col, n = j) = Af[j][col]: column-major view of Af.
        Mma32::step<wmma::row_major, wmma::col_major>(a2, sm.g + fr * 16 * kLdG + k, kLdG,
                                                      sm.af + fj * 16 * kLdG + k, kLdG);
      wmma::store_matrix_sync(sm.wf + fr * 16 * ldP + fj * 16, a2, ldP, wmma::mem_row_major);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kBO * p.rank; idx += kNT) {
      const int r = idx / static_cast<int>(p.rank), j = idx % static_cast<int>(p.rank);
      const int64_t o = o0 + r;
      if (o < p.out) atomicAdd(out.dB + o * p.rank + j, p.lora_scale * sm.wf[r * ldP + j]);
    }
    __syncthreads();
  }

  // ---- E5: dA[:, cols] += s_l B[rows, :]^T (M*G) ----
  if (rp > 0 && out.dA) {
    const int nfr = rp / 16;
    for (int f = warp; f < nfr * (kBI / 16); f += kNT / 32) {
      const int fj = f / (kBI / 16), fc = f % (kBI / 16);
      typename Mma32::Acc a2;
      wmma::fill_fragment(a2, 0.0f);
#pragma unroll 4
      for (int k = 0; k < kBO; k += Mma32::kK)
        // A(m = j, k = row) = Bf[row][j]: column-major view of Bf.
        Mma32::step<wmma::col_major, wmma::row_major>(a2, sm.bf + k * ldBf + fj * 16, ldBf,
                                                      sm.g + k * kLdG + fc * 16, kLdG);
      wmma::store_matrix_sync(sm.wf + fj * 16 * kLdG + fc * 16, a2, kLdG, wmma::mem_row_major);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < static_cast<int>(p.rank) * kBI; idx += kNT) {
      const int j = idx / kBI, c = idx % kBI;
      const int64_t i = i0 + c;
      if (i < p.in) atomicAdd(out.dA + j * p.in + i, p.lora_scale * sm.wf[j * kLdG + c]);
    }
  }
}

template <typename T>
Status launch_grad(const FakeQuantParams& p, const T* X, const T* dY, int64_t tokens,
                   const GradOutputs& o, cudaStream_t stream) {
  size_t smem = 0;
  GradSmem<T>::layout(nullptr, p.rank_pad, smem);
  auto kernel = fake_quant_grad_kernel<T>;
  const Status st = allow_smem(kernel, smem, "fake_quant_matmul_backward: shared memory opt-in");
  if (!st.ok()) return st;
  if (ceil_div(p.out, kBO) > 65535) return invalid("fake_quant_matmul_backward: out too large");
  const dim3 grid(static_cast<unsigned>(ceil_div(p.in, kBI)),
                  static_cast<unsigned>(ceil_div(p.out, kBO)));
  launch_kernel(kernel, grid, dim3(kNT), smem, stream, X, dY, tokens, p, o);
  return launched("fake_quant_matmul_backward: weight-gradient kernel");
}

Status zero(void* ptr, int64_t count, cudaStream_t stream) {
  if (!ptr || count == 0) return {};
  const cudaError_t e = cudaMemsetAsync(ptr, 0, static_cast<size_t>(count) * sizeof(float), stream);
  return {e, e == cudaSuccess ? "" : "fake_quant_matmul_backward: cudaMemsetAsync"};
}

}  // namespace
}  // namespace detail

Status fake_quant_matmul_backward(const FakeQuantWeight& w, const void* X, const void* dY,
                                  int64_t tokens, float grad_scale, const FakeQuantGrads& g,
                                  cudaStream_t stream) {
  using namespace detail;
  Status st = check_fake_quant_weight(w);
  if (!st.ok()) return st;
  if (tokens < 0 || tokens >= (int64_t{1} << 31))
    return invalid("fake_quant_matmul_backward: tokens must be in [0, 2^31)");
  if ((g.dA || g.dB) && w.rank == 0)
    return invalid("fake_quant_matmul_backward: dA/dB requested without LoRA (rank 0)");
  const bool weight_grads = g.dA || g.dB || g.ds || g.db || g.dW;
  if (tokens > 0 && (weight_grads || g.dX) && (!X || !dY))
    return invalid("fake_quant_matmul_backward: X and dY must be non-null");
  const int64_t groups = w.in / w.group_size;
  // Everything below accumulates (atomics) into zeroed outputs; dW is only zeroed when there
  // are no tokens (otherwise every element is written).
  for (const auto& z : {std::pair<void*, int64_t>{g.dA, w.rank * w.in},
                        {g.dB, w.out * w.rank},
                        {g.ds, w.out * groups},
                        {g.db, w.out * groups},
                        {tokens == 0 ? g.dW : nullptr, w.out * w.in}}) {
    st = zero(z.first, z.second, stream);
    if (!st.ok()) return st;
  }
  if (tokens == 0) return {};
  const FakeQuantParams p = fake_quant_params(w);
  if (weight_grads) {
    const GradOutputs o{g.dA, g.dB, g.ds, g.db, g.dW, grad_scale};
    st = w.dtype == DType::BF16
             ? launch_grad<bf16_t>(p, static_cast<const bf16_t*>(X),
                                   static_cast<const bf16_t*>(dY), tokens, o, stream)
             : launch_grad<float>(p, static_cast<const float*>(X), static_cast<const float*>(dY),
                                  tokens, o, stream);
    if (!st.ok()) return st;
  }
  if (g.dX) {
    st = w.dtype == DType::BF16
             ? launch_fake_quant_gemm<bf16_t, true>(p, static_cast<const bf16_t*>(dY),
                                                    static_cast<bf16_t*>(g.dX), tokens, stream)
             : launch_fake_quant_gemm<float, true>(p, static_cast<const float*>(dY),
                                                   static_cast<float*>(g.dX), tokens, stream);
    if (!st.ok()) return st;
  }
  return {};
}

}  // namespace l4q::kernels
