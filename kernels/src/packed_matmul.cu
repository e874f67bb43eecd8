// Packed low-bit matmul for inference (layout: common/packed_format.h).
//
// GEMV (decode, tokens <= kMaxGemvTokens): memory bound, the weight is read exactly once.
//   CTA = 8 warps x 4 rows = 32 output rows. A lane walks the row's blocks with stride 32, so a
//   warp reads 32 consecutive blocks of each of its 4 rows per step (4 x 512 contiguous bytes for
//   u4): 16-byte loads, 4 independent loads in flight per lane. Per block and row
//       y += step * sum_j x_j q_j + min * sum_j x_j
//   with sum_j x_j computed once per CTA into shared memory, so a code costs a decode and one
//   FMA per token. Codes become floats through the exponent trick (2^23 + q, minus 2^23: exact),
//   not through the slow integer-to-float conversion. Working on 4 rows per warp reuses each
//   loaded x block four times (x traffic would otherwise exceed the weight traffic 4 to 8x).
//   Batches of 2..8 tokens run in launches of 4 tokens (the weight is then read once per 4).
//
// GEMM (prefill): quantized_gemm.cuh with the PackedTile producer (bf16 tensor cores).
#include <type_traits>

#include "device_common.cuh"
#include "quantized_gemm.cuh"
#include "weight_tiles.cuh"

namespace l4q::kernels {
namespace detail {
namespace {

constexpr int kGemvWarps = 8, kGemvRowsPerWarp = 4;
constexpr int kGemvRows = kGemvWarps * kGemvRowsPerWarp;
constexpr int kGemvThreads = 32 * kGemvWarps;

template <class Fmt>
__device__ __forceinline__ void load_block(const uint8_t* src, typename Fmt::Block& dst) {
  constexpr int kBytes = sizeof(typename Fmt::Block);
  if constexpr (kBytes == 16) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(src));
    memcpy(&dst, &v, 16);
  } else if constexpr (kBytes == 8) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(src));
    memcpy(&dst, &v, 8);
  } else {
    static_assert(kBytes % 4 == 0, "blocks are read in 4-byte words");
    uint32_t v[kBytes / 4];
#pragma unroll
    for (int k = 0; k < kBytes / 4; ++k) v[k] = __ldg(reinterpret_cast<const uint32_t*>(src) + k);
    memcpy(&dst, v, kBytes);
  }
}

// 32 consecutive activations (16-byte aligned) as floats.
__device__ __forceinline__ void load_x32(const float* p, float (&x)[32]) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p) + k);
    x[4 * k] = v.x;
    x[4 * k + 1] = v.y;
    x[4 * k + 2] = v.z;
    x[4 * k + 3] = v.w;
  }
}
__device__ __forceinline__ void load_x32(const bf16_t* p, float (&x)[32]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + k);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int h = 0; h < 4; ++h) {  // little-endian: element 2h is the low half
      x[8 * k + 2 * h] = __uint_as_float(w[h] << 16);
      x[8 * k + 2 * h + 1] = __uint_as_float(w[h] & 0xffff0000u);
    }
  }
}

// q < 2^23 as a float without I2F: the bits of 2^23 + q, minus 2^23 (both steps exact).
__device__ __forceinline__ float code_to_float(uint32_t q) {
  return __uint_as_float(0x4B000000u | q) - 8388608.0f;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) v += __shfl_xor_sync(0xffffffffu, v, k);
  return v;
}

// Up to kTok tokens per launch (1 for decode; 4 for small batches, launched once per 4 tokens):
// a compile-time count keeps the accumulators in registers.
template <class Fmt, typename T, int kTok>
__global__ void __launch_bounds__(kGemvThreads)
    packed_gemv_kernel(const __grid_constant__ PackedParams p, const T* __restrict__ x,
                       T* __restrict__ y, int tokens) {
  using Block = typename Fmt::Block;
  L4Q_DYNAMIC_SMEM(float, xsum);  // [tokens][nblk]: sum of each 32-block of x
  const int64_t nblk = p.in / packed::kBlockSize;
  for (int64_t idx = threadIdx.x; idx < tokens * nblk; idx += kGemvThreads) {
    const int64_t t = idx / nblk, k = idx % nblk;
    float xs[32];
    load_x32(x + t * p.in + k * packed::kBlockSize, xs);
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 32; ++j) s += xs[j];
    xsum[idx] = s;
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kGemvRows + warp * kGemvRowsPerWarp;
  const int64_t blocks_per_group = p.group_size / packed::kBlockSize;
  float acc[kGemvRowsPerWarp][kTok];
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < kTok; ++t) acc[r][t] = 0.0f;

  for (int64_t k = lane; k < nblk; k += 32) {
    Block blk[kGemvRowsPerWarp];
    float sv[kGemvRowsPerWarp], mv[kGemvRowsPerWarp];
    const int64_t g = k / blocks_per_group;
#pragma unroll
    for (int r = 0; r < kGemvRowsPerWarp; ++r) {
      const int64_t o = row0 + r;
      if (o < p.out) {
        load_block<Fmt>(p.blocks + (o * nblk + k) * sizeof(Block), blk[r]);
        sv[r] = __ldg(p.step + o * p.groups + g);
        mv[r] = __ldg(p.min + o * p.groups + g);
      } else {
        memset(&blk[r], 0, sizeof(Block));
        sv[r] = mv[r] = 0.0f;
      }
    }
#pragma unroll
    for (int t = 0; t < kTok; ++t) {
      if (t >= tokens) break;
      float xs[32];
      load_x32(x + t * p.in + k * packed::kBlockSize, xs);
      const float sx = xsum[t * nblk + k];
#pragma unroll
      for (int r = 0; r < kGemvRowsPerWarp; ++r) {
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) dot = __fmaf_rn(xs[j], code_to_float(Fmt::get(blk[r], j)), dot);
        acc[r][t] = __fmaf_rn(sv[r], dot, __fmaf_rn(mv[r], sx, acc[r][t]));
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < kTok; ++t) {
      if (t >= tokens) break;
      const float v = warp_sum(acc[r][t]);
      const int64_t o = row0 + r;
      if (lane == 0 && o < p.out) y[t * p.out + o] = from_f32<T>(v);
    }
}

// Calls f(Format{}) for the format of t (the one dispatch point from the runtime type to the
// template parameter).
template <class F>
Status with_format(packed::PackedType t, F&& f) {
  switch (t) {
    case packed::PackedType::U2:
      return f(packed::FormatU2{});
    case packed::PackedType::U3:
      return f(packed::FormatU3{});
    case packed::PackedType::U4:
      return f(packed::FormatU4{});
  }
  return invalid("PackedWeight.type: unknown packed type");
}

Status check_packed(const PackedWeight& w, const char* shape_error) {
  if (!packed::is_valid(w.type)) return invalid("PackedWeight.type: unknown packed type");
  if (!w.blocks || !w.step || !w.min)
    return invalid("PackedWeight: blocks, step and min must be non-null");
  if (reinterpret_cast<uintptr_t>(w.blocks) % 16 != 0)
    return invalid("PackedWeight.blocks: expected a 16-byte aligned address");
  if (w.out < 1 || w.out >= (int64_t{1} << 31) || w.in >= (int64_t{1} << 31))
    return invalid("PackedWeight: out must be in [1, 2^31) and in below 2^31");
  if (packed::check_packed_shape(w.in, w.group_size)) return invalid(shape_error);
  return {};
}

PackedParams packed_params(const PackedWeight& w) {
  return {static_cast<const uint8_t*>(w.blocks), w.step, w.min, w.out, w.in, w.group_size,
          w.in / w.group_size};
}

}  // namespace
}  // namespace detail

Status packed_gemv(const PackedWeight& w, DType dtype, const void* x, void* y, int64_t tokens,
                   cudaStream_t stream) {
  using namespace detail;
  Status st = check_packed(
      w, "packed_gemv: in and group_size must be multiples of 32 and group_size must divide in");
  if (!st.ok()) return st;
  if (dtype != DType::F32 && dtype != DType::BF16)
    return invalid("packed_gemv: dtype must be F32 or BF16");
  if (tokens < 0 || tokens > kMaxGemvTokens)
    return invalid("packed_gemv: tokens must be in [0, kMaxGemvTokens]; use packed_gemm");
  if (tokens == 0) return {};
  if (!x || !y) return invalid("packed_gemv: x and y must be non-null");
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0)
    return invalid("packed_gemv: x must be 16-byte aligned");
  const PackedParams p = packed_params(w);
  const int64_t nblk = w.in / packed::kBlockSize;
  const unsigned grid = static_cast<unsigned>(ceil_div(w.out, kGemvRows));
  return with_format(w.type, [&](auto fmt) -> Status {
    using Fmt = decltype(fmt);
    auto run = [&](auto* typed_x, auto* typed_y) -> Status {
      using T = std::remove_const_t<std::remove_pointer_t<decltype(typed_x)>>;
      auto launch = [&](auto kernel, int64_t t0, int64_t n) -> Status {
        const size_t smem = static_cast<size_t>(n) * nblk * sizeof(float);
        const Status a = allow_smem(kernel, smem, "packed_gemv: shared memory opt-in");
        if (!a.ok()) return a;
        launch_kernel(kernel, dim3(grid), dim3(kGemvThreads), smem, stream, p, typed_x + t0 * w.in,
                      typed_y + t0 * w.out, static_cast<int>(n));
        return launched("packed_gemv: kernel");
      };
      if (tokens == 1) return launch(packed_gemv_kernel<Fmt, T, 1>, 0, 1);
      for (int64_t t0 = 0; t0 < tokens; t0 += 4) {
        const Status r = launch(packed_gemv_kernel<Fmt, T, 4>, t0, tokens - t0 < 4 ? tokens - t0 : 4);
        if (!r.ok()) return r;
      }
      return {};
    };
    if (dtype == DType::BF16) return run(static_cast<const bf16_t*>(x), static_cast<bf16_t*>(y));
    return run(static_cast<const float*>(x), static_cast<float*>(y));
  });
}

Status packed_gemm(const PackedWeight& w, DType dtype, const void* X, void* Y, int64_t tokens,
                   cudaStream_t stream) {
  using namespace detail;
  Status st = check_packed(
      w, "packed_gemm: in and group_size must be multiples of 32 and group_size must divide in");
  if (!st.ok()) return st;
  if (dtype != DType::BF16) return invalid("packed_gemm: only BF16 activations are supported");
  if (tokens < 0 || tokens >= (int64_t{1} << 31))
    return invalid("packed_gemm: tokens must be in [0, 2^31)");
  if (tokens == 0) return {};
  if (!X || !Y) return invalid("packed_gemm: X and Y must be non-null");
  const PackedParams p = packed_params(w);
  return with_format(w.type, [&](auto fmt) -> Status {
    using Fmt = decltype(fmt);
    using Cfg = GemmConfig<bf16_t, false>;
    using Producer = PackedTile<Fmt, bf16_t, Cfg::NT, Cfg::BN>;
    return launch_quantized_gemm<bf16_t, false, Producer>(
        static_cast<const bf16_t*>(X), static_cast<bf16_t*>(Y), tokens, w.out, w.in, p, stream,
        "packed_gemm: kernel");
  });
}

Status packed_matmul(const PackedWeight& w, DType dtype, const void* X, void* Y, int64_t tokens,
                     cudaStream_t stream) {
  return tokens <= kMaxGemvTokens ? packed_gemv(w, dtype, X, Y, tokens, stream)
                                  : packed_gemm(w, dtype, X, Y, tokens, stream);
}

}  // namespace l4q::kernels
