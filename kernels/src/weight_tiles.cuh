// Producers of weight tiles for quantized_gemm.cuh: each turns stored weights into one R x C
// tile of the effective weight, in the activation dtype, in shared memory, right before the
// tensor cores consume it. Nothing they produce is ever written to global memory.
//
//   FakeQuantTile   W_q = dequantize(quantize(W0 + lora_scale * B A; s, b))   (training)
//   PackedTile      W   = step * q + min from packed blocks                  (inference)
//
// Interface used by the GEMM (all members called by every thread of the block):
//   Params                         kernel argument
//   kRows, kCols                   tile shape: kRows output features (rows of W) x kCols input
//                                  features (columns of W); the tile lands in Ws as [kRows][kLd]
//   static layout(SmemCarver&, p)  carves the producer's shared memory (sizes on the host)
//   init(n_origin)                 issues cp.async copies of the parts that do not depend on k
//   stage(kt, buf)                 issues cp.async copies of the raw data of k-tile kt
//   produce(kt, buf, Ws)           raw data of k-tile kt (visible after the caller's barrier)
//                                  -> finished tile in Ws; may contain barriers of its own
#pragma once
#include "common/packed_format.h"
#include "common/quant_math.h"
#include "device_common.cuh"

namespace l4q::kernels::detail {

// ---------------------------------------------------------------------------------------
// Fake quantization
// ---------------------------------------------------------------------------------------

struct FakeQuantParams {
  const void* W0;
  const void* A;  // null: no LoRA
  const void* B;
  const float* s;
  const float* b;
  int64_t out, in, rank, group_size, groups;
  int rank_pad;  // rank rounded up to a multiple of 16 (the MMA K of the merge), 0 without LoRA
  int bits;
  float lora_scale;
};

// Groups one tile row may span and still be served from the per-tile table of (s, 1/s, b);
// tiles spanning more (group_size < 32 or so) take the per-element division path.
constexpr int kTableGroups = 4;

// kTrans = false: the tile is W_q[n0 : n0+R, kt*C : kt*C+C]   (forward: the GEMM's N is `out`)
// kTrans = true:  the tile is W_q[kt*R : kt*R+R, n0 : n0+C]   (dX: the GEMM's N is `in`)
//
// Per tile: the LoRA product B[rows, :] A[:, cols] on the tensor cores (K = rank_pad) into an
// fp32 scratch tile; then per element W = W0 + lora_scale * BA, w = (W - b) / s by the
// reciprocal of the group's step (qmath::quantize_recip: bit-identical to the division),
// clamp, round half to even, W_q = w_int * s + b, converted to T.
//
// The part of the LoRA factors that depends only on the CTA (B rows for the forward, A columns
// for dX) is copied once in init(); the part that moves with k is staged with W0.
template <typename T, bool kTrans, int NT, int R, int C>
struct FakeQuantTile {
  static constexpr int kRows = R, kCols = C;
  static constexpr int kLd = C + kPad<T>;  // W0 stage, Ws, A tiles
  static constexpr int kLdF = C + 4;       // fp32 scratch of the LoRA product
  using Params = FakeQuantParams;
  static_assert(NT % C == 0 && R % (NT / C) == 0, "element pass: whole rows per thread sweep");
  static_assert(R % 16 == 0 && C % 16 == 0, "WMMA tiles");

  struct Smem {
    Stages<T> w0;        // [R][kLd]
    Stages<T> lora_k;    // per k-tile: A[:, cols] as [rank_pad][kLd] (fwd), B[rows, :] as [R][ldB] (dX)
    T* lora_c;           // per CTA:    B[rows, :] as [R][ldB] (fwd), A[:, cols] as [rank_pad][kLd] (dX)
    float* ba;           // [R][kLdF]
    Stages<float> s;     // [R][kTableGroups] raw s, then clamp_step(s) in place
    Stages<float> b;     // [R][kTableGroups]
    float* inv_s;        // [R][kTableGroups]
  };

  static __host__ __device__ Smem layout(SmemCarver& c, const Params& p) {
    Smem m;
    const int rp = p.rank_pad, ldB = rp + kPad<T>;
    const size_t a_elems = static_cast<size_t>(rp) * kLd, b_elems = static_cast<size_t>(R) * ldB;
    m.w0 = c.take_stages<T>(static_cast<size_t>(R) * kLd);
    m.lora_k = c.take_stages<T>(kTrans ? b_elems : a_elems);
    m.lora_c = c.take<T>(kTrans ? a_elems : b_elems);
    m.ba = c.take<float>(rp > 0 ? static_cast<size_t>(R) * kLdF : 0);
    m.s = c.take_stages<float>(R * kTableGroups);
    m.b = c.take_stages<float>(R * kTableGroups);
    m.inv_s = c.take<float>(R * kTableGroups);
    return m;
  }

  const Params& p;
  Smem sm;
  int64_t n_origin = 0;
  bool vec_w0, vec_a, vec_b;

  __device__ FakeQuantTile(const Params& params, SmemCarver& c) : p(params), sm(layout(c, params)) {
    vec_w0 = rows_16b_aligned(static_cast<const T*>(p.W0), p.in);
    vec_a = p.rank_pad > 0 && rows_16b_aligned(static_cast<const T*>(p.A), p.in);
    vec_b = p.rank_pad > 0 && rows_16b_aligned(static_cast<const T*>(p.B), p.rank);
  }

  __device__ int64_t row0(int kt) const { return kTrans ? static_cast<int64_t>(kt) * R : n_origin; }
  __device__ int64_t col0(int kt) const { return kTrans ? n_origin : static_cast<int64_t>(kt) * C; }

  __device__ void copy_a(T* dst, int64_t i0) const {  // A[0:rank_pad, i0:i0+C]
    copy_tile<T, NT>(dst, kLd, static_cast<const T*>(p.A), p.in, 0, i0, p.rank, p.in, p.rank_pad,
                     C, vec_a);
  }
  __device__ void copy_b(T* dst, int64_t o0) const {  // B[o0:o0+R, 0:rank_pad]
    copy_tile<T, NT>(dst, p.rank_pad + kPad<T>, static_cast<const T*>(p.B), p.rank, o0, 0, p.out,
                     p.rank, R, p.rank_pad, vec_b);
  }

  __device__ void init(int64_t n0) {
    n_origin = n0;
    if (p.rank_pad == 0) return;
    if (kTrans)
      copy_a(sm.lora_c, n0);
    else
      copy_b(sm.lora_c, n0);
  }

  // First group of the tile's columns and how many groups they span.
  __device__ void tile_groups(int64_t i0, int64_t& g_first, int& g_count) const {
    const int64_t i_end = (i0 + C < p.in ? i0 + C : p.in) - 1;
    g_first = i0 / p.group_size;
    g_count = static_cast<int>(i_end / p.group_size - g_first + 1);
  }

  __device__ void stage(int kt, int buf) {
    const int64_t o0 = row0(kt), i0 = col0(kt);
    copy_tile<T, NT>(sm.w0[buf], kLd, static_cast<const T*>(p.W0), p.in, o0, i0, p.out, p.in, R,
                     C, vec_w0);
    if (p.rank_pad > 0) {
      if (kTrans)
        copy_b(sm.lora_k[buf], o0);
      else
        copy_a(sm.lora_k[buf], i0);
    }
    int64_t g_first;
    int g_count;
    tile_groups(i0, g_first, g_count);
    if (g_count > kTableGroups) return;  // per-element path, reads s and b itself
    for (int idx = threadIdx.x; idx < R * kTableGroups; idx += NT) {
      const int r = idx / kTableGroups, j = idx % kTableGroups;
      const int64_t o = o0 + r;
      const bool ok = o < p.out && j < g_count;
      const int64_t g = ok ? o * p.groups + g_first + j : 0;
      __pipeline_memcpy_async(sm.s[buf] + idx, p.s + g, 4, ok ? 0 : 4);
      __pipeline_memcpy_async(sm.b[buf] + idx, p.b + g, 4, ok ? 0 : 4);
    }
  }

  __device__ void produce(int kt, int buf, T* Ws) {
    const int64_t o0 = row0(kt), i0 = col0(kt);
    int64_t g_first;
    int g_count;
    tile_groups(i0, g_first, g_count);
    const bool table = g_count <= kTableGroups;

    // 1. BA on the tensor cores, and the per-tile step table.
    if (p.rank_pad > 0) {
      using Mma = WarpMma<T>;
      const T* Bt = kTrans ? sm.lora_k[buf] : sm.lora_c;  // [R][ldB]
      const T* At = kTrans ? sm.lora_c : sm.lora_k[buf];  // [rank_pad][kLd]
      const int ldB = p.rank_pad + kPad<T>;
      constexpr int kFrags = (R / 16) * (C / 16);
      const int warp = threadIdx.x / 32;
      for (int f = warp; f < kFrags; f += NT / 32) {
        const int fr = f / (C / 16), fc = f % (C / 16);
        typename Mma::Acc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < p.rank_pad; k += Mma::kK)
          Mma::template step<wmma::row_major, wmma::row_major>(acc, Bt + fr * 16 * ldB + k, ldB,
                                                               At + k * kLd + fc * 16, kLd);
        wmma::store_matrix_sync(sm.ba + fr * 16 * kLdF + fc * 16, acc, kLdF, wmma::mem_row_major);
      }
    }
    if (table)
      for (int idx = threadIdx.x; idx < R * kTableGroups; idx += NT) {
        const float s = qmath::clamp_step(sm.s[buf][idx]);
        sm.s[buf][idx] = s;
        sm.inv_s[idx] = qmath::recip_step(s);
      }
    __syncthreads();

    // 2. Element pass: thread -> one column, every (NT / C)-th row. The column fixes the group.
    const float qn = static_cast<float>(qmath::grid_min(p.bits));
    const float qp = static_cast<float>(qmath::grid_max(p.bits));
    const int c = threadIdx.x % C;
    const int64_t i = i0 + c;
    const bool col_ok = i < p.in;
    const int64_t g_col = col_ok ? i / p.group_size : 0;
    const int lg = static_cast<int>(g_col - g_first);
    const T* w0 = sm.w0[buf];
#pragma unroll 4
    for (int r = threadIdx.x / C; r < R; r += NT / C) {
      const int64_t o = o0 + r;
      float wq = 0.0f;
      if (col_ok && o < p.out) {
        float w = to_f32(w0[r * kLd + c]);
        if (p.rank_pad > 0) w = __fmaf_rn(p.lora_scale, sm.ba[r * kLdF + c], w);
        float s, b;
        qmath::QuantElem<float> e;
        if (table) {
          const int t = r * kTableGroups + lg;
          s = sm.s[buf][t];
          b = sm.b[buf][t];
          e = qmath::quantize_recip(w, s, sm.inv_s[t], b, qn, qp);
        } else {
          const int64_t g = o * p.groups + g_col;
          s = qmath::clamp_step(__ldg(p.s + g));
          b = __ldg(p.b + g);
          e = qmath::quantize(w, s, b, qn, qp);
        }
        wq = qmath::dequantize(e.w_int, s, b);
      }
      Ws[r * kLd + c] = from_f32<T>(wq);
    }
  }
};

// ---------------------------------------------------------------------------------------
// Packed blocks (inference GEMM): tile W[n0 : n0+R, kt*32 : kt*32+32], one block per row.
// ---------------------------------------------------------------------------------------

struct PackedParams {
  const uint8_t* blocks;  // [out][in / 32] blocks
  const float* step;      // [out][groups]
  const float* min;       // [out][groups]
  int64_t out, in, group_size, groups;
};

template <class Fmt, typename T, int NT, int R>
struct PackedTile {
  static constexpr int kRows = R, kCols = packed::kBlockSize;
  static constexpr int kLd = kCols + kPad<T>;
  static constexpr int kWords = static_cast<int>(sizeof(typename Fmt::Block)) / 4;
  using Params = PackedParams;
  static_assert(sizeof(typename Fmt::Block) % 4 == 0, "blocks are copied in 4-byte words");
  static_assert(NT % kCols == 0 && R % (NT / kCols) == 0, "element pass");

  struct Smem {
    Stages<uint32_t> raw;  // [R][kWords]
    Stages<float> step;    // [R]
    Stages<float> min;     // [R]
  };
  static __host__ __device__ Smem layout(SmemCarver& c, const Params&) {
    Smem m;
    m.raw = c.take_stages<uint32_t>(R * kWords);
    m.step = c.take_stages<float>(R);
    m.min = c.take_stages<float>(R);
    return m;
  }

  const Params& p;
  Smem sm;
  int64_t n_origin = 0;

  __device__ PackedTile(const Params& params, SmemCarver& c) : p(params), sm(layout(c, params)) {}

  __device__ void init(int64_t n0) { n_origin = n0; }

  __device__ void stage(int kt, int buf) {
    const int64_t nblk = p.in / packed::kBlockSize;
    // The tile's 32 columns are one block, and group_size % 32 == 0: one group per row.
    const int64_t g = static_cast<int64_t>(kt) * packed::kBlockSize / p.group_size;
    const auto* words = reinterpret_cast<const uint32_t*>(p.blocks);
    for (int idx = threadIdx.x; idx < R * kWords; idx += NT) {
      const int r = idx / kWords, w = idx % kWords;
      const int64_t o = n_origin + r;
      const bool ok = o < p.out;
      const uint32_t* src = ok ? words + (o * nblk + kt) * kWords + w : words;
      __pipeline_memcpy_async(sm.raw[buf] + idx, src, 4, ok ? 0 : 4);
    }
    for (int r = threadIdx.x; r < R; r += NT) {
      const int64_t o = n_origin + r;
      const bool ok = o < p.out;
      const int64_t gi = ok ? o * p.groups + g : 0;
      __pipeline_memcpy_async(sm.step[buf] + r, p.step + gi, 4, ok ? 0 : 4);
      __pipeline_memcpy_async(sm.min[buf] + r, p.min + gi, 4, ok ? 0 : 4);
    }
  }

  __device__ void produce(int /*kt*/, int buf, T* Ws) {
    const int c = threadIdx.x % kCols;
#pragma unroll 4
    for (int r = threadIdx.x / kCols; r < R; r += NT / kCols) {
      const auto& blk = *reinterpret_cast<const typename Fmt::Block*>(sm.raw[buf] + r * kWords);
      const float q = static_cast<float>(Fmt::get(blk, c));
      const bool ok = n_origin + r < p.out;
      const float w = ok ? qmath::dequantize(q, sm.step[buf][r], sm.min[buf][r]) : 0.0f;
      Ws[r * kLd + c] = from_f32<T>(w);
    }
  }
};

}  // namespace l4q::kernels::detail
