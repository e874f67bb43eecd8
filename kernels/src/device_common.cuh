// Device helpers shared by the kernel families: element types, asynchronous tile copies and the
// warp-level tensor-core step. Private to kernels/src.
#pragma once
#include <cuda_bf16.h>
#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "common/quant_math.h"
#include "l4q/kernels.h"

namespace l4q::kernels::detail {

namespace wmma = nvcuda::wmma;
using bf16_t = __nv_bfloat16;

// ---------------------------------------------------------------------------------------
// Element types
// ---------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_f32<bf16_t>(bf16_t v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16_t from_f32<bf16_t>(float v) {
  return __float2bfloat16_rn(v);
}

// Shared-memory rows are padded by 16 bytes: keeps every row 16-byte aligned for cp.async and
// WMMA (ldm a multiple of 16 bytes) and shifts consecutive rows by four banks.
template <typename T>
constexpr int kPad = 16 / static_cast<int>(sizeof(T));

__host__ __device__ constexpr size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Two buffers of a pipeline stage, addressed by arithmetic (an array of two pointers indexed by
// a run-time stage number would live in local memory).
template <typename T>
struct Stages {
  T* base;
  size_t stride;  // elements, a multiple of 128 bytes
  __host__ __device__ T* operator[](int k) const { return base + k * stride; }
};

// A bump allocator over the dynamic shared memory (and, with base == nullptr, its size).
// Every piece starts on a 128-byte boundary.
struct SmemCarver {
  unsigned char* base;
  size_t offset = 0;
  template <typename T>
  __host__ __device__ T* take(size_t count) {
    offset = align_up(offset, 128);
    T* p = base ? reinterpret_cast<T*>(base + offset) : nullptr;
    offset += count * sizeof(T);
    return p;
  }
  template <typename T>
  __host__ __device__ Stages<T> take_stages(size_t count) {
    const size_t stride = align_up(count * sizeof(T), 128) / sizeof(T);
    return {take<T>(2 * stride), stride};
  }
};

// ---------------------------------------------------------------------------------------
// Tile copies, global -> shared
// ---------------------------------------------------------------------------------------

// True when every row of a row-major matrix starts on a 16-byte boundary.
template <typename T>
__device__ __forceinline__ bool rows_16b_aligned(const T* g, int64_t ld) {
  return (reinterpret_cast<uintptr_t>(g) % 16 == 0) && ((ld * sizeof(T)) % 16 == 0);
}

// Copies the tile_rows x tile_cols block of a row-major global matrix g (ld_g columns, rows x
// cols valid) whose top-left corner is (row0, col0) into shared memory (ld_s elements per row),
// writing zeros wherever the block leaves the matrix. With 16-byte aligned rows (vec) the copy
// is asynchronous: cp.async pieces of 16 bytes, partial pieces zero-filled by the hardware; the
// caller commits and waits. Otherwise it is a synchronous element loop. tile_cols must be a
// multiple of 16 bytes. Called by all NT threads of the block; pass compile-time tile sizes
// (the function is inlined, so the index arithmetic folds).
template <typename T, int NT>
__device__ __forceinline__ void copy_tile(T* smem, int ld_s, const T* g, int64_t ld_g,
                                          int64_t row0, int64_t col0, int64_t rows, int64_t cols,
                                          int tile_rows, int tile_cols, bool vec) {
  constexpr int V = 16 / sizeof(T);
  if (vec) {
    const int per_row = tile_cols / V;
    for (int idx = threadIdx.x; idx < tile_rows * per_row; idx += NT) {
      const int r = idx / per_row, c = (idx % per_row) * V;
      const int64_t gr = row0 + r, gc = col0 + c;
      int valid = 0;
      if (gr < rows && gc < cols) valid = cols - gc < V ? static_cast<int>(cols - gc) : V;
      // A fully masked piece still names a valid, aligned source; it reads zero bytes.
      const T* src = valid > 0 ? g + gr * ld_g + gc : g;
      __pipeline_memcpy_async(smem + r * ld_s + c, src, 16, (V - valid) * sizeof(T));
    }
  } else {
    for (int idx = threadIdx.x; idx < tile_rows * tile_cols; idx += NT) {
      const int r = idx / tile_cols, c = idx % tile_cols;
      const int64_t gr = row0 + r, gc = col0 + c;
      smem[r * ld_s + c] = (gr < rows && gc < cols) ? g[gr * ld_g + gc] : from_f32<T>(0.0f);
    }
  }
}

// ---------------------------------------------------------------------------------------
// One K-step of a 16x16 warp tile on the tensor cores: acc += a (16 x K) * b (K x 16).
//   bf16:  one bf16 MMA, K = 16.
//   fp32:  3xTF32, K = 8: each operand is split into a TF32 head and a TF32 tail and three
//          products are summed (tail*head, head*tail, head*head), which recovers fp32 accuracy
//          (about 2^-21 relative per product) at three times the TF32 cost. bf16 values are
//          exact TF32 heads (tail 0), so bf16 data through this path is multiplied exactly.
// LA / LB are wmma::row_major or wmma::col_major; pointers 32-byte aligned, ld multiple of 8
// elements (bf16) or 4 (fp32).
// ---------------------------------------------------------------------------------------
template <typename T>
struct WarpMma;

template <>
struct WarpMma<bf16_t> {
  static constexpr int kK = 16;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
  template <typename LA, typename LB>
  static __device__ __forceinline__ void step(Acc& acc, const bf16_t* a, unsigned lda,
                                              const bf16_t* b, unsigned ldb) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16_t, LA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16_t, LB> fb;
    wmma::load_matrix_sync(fa, a, lda);
    wmma::load_matrix_sync(fb, b, ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
};

template <>
struct WarpMma<float> {
  static constexpr int kK = 8;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
  template <typename Frag>
  static __device__ __forceinline__ void split(Frag& head, Frag& tail) {
#pragma unroll
    for (int i = 0; i < head.num_elements; ++i) {
      const float v = head.x[i];
      const float h = wmma::__float_to_tf32(v);
      head.x[i] = h;
      tail.x[i] = wmma::__float_to_tf32(v - h);
    }
  }
  template <typename LA, typename LB>
  static __device__ __forceinline__ void step(Acc& acc, const float* a, unsigned lda,
                                              const float* b, unsigned ldb) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> a_hi, a_lo;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> b_hi, b_lo;
    wmma::load_matrix_sync(a_hi, a, lda);
    wmma::load_matrix_sync(b_hi, b, ldb);
    split(a_hi, a_lo);
    split(b_hi, b_lo);
    wmma::mma_sync(acc, a_lo, b_hi, acc);
    wmma::mma_sync(acc, a_hi, b_lo, acc);
    wmma::mma_sync(acc, a_hi, b_hi, acc);
  }
};

// ---------------------------------------------------------------------------------------
// Launch plumbing
//
// The two constructs that only nvcc parses, the launch and the dynamic shared memory, are
// written once here. kernels/emulator compiles these sources with a host compiler and a SIMT
// emulator (L4Q_KERNEL_EMULATOR) so that the kernel tests also run without a GPU.
// ---------------------------------------------------------------------------------------
#if defined(L4Q_KERNEL_EMULATOR)
#define L4Q_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::l4q_emu::dynamic_smem())
#else
#define L4Q_DYNAMIC_SMEM(type, name) extern __shared__ __align__(128) type name[]
#endif

template <typename... P, typename... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   A&&... args) {
#if defined(L4Q_KERNEL_EMULATOR)
  ::l4q_emu::launch(kernel, grid, block, smem, stream, std::forward<A>(args)...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#endif
}

inline Status invalid(const char* what) { return {cudaErrorInvalidValue, what}; }

// After a launch: the launch error, if any, tagged with `what`.
inline Status launched(const char* what) {
  const cudaError_t e = cudaGetLastError();
  return {e, e == cudaSuccess ? "" : what};
}

// Opts a kernel into more than 48 KiB of dynamic shared memory.
template <typename Kernel>
Status allow_smem(Kernel kernel, size_t bytes, const char* what) {
  if (bytes <= 48 * 1024) return {};
  const cudaError_t e =
      cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  return {e, e == cudaSuccess ? "" : what};
}

}  // namespace l4q::kernels::detail
