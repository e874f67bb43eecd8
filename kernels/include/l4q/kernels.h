// Raw-pointer launchers of the l4q CUDA kernels. No torch types: the ATen glue lives in
// src/nn/cuda/ and is compiled only against a CUDA-enabled LibTorch. docs/kernels.md has the
// roofline, the tiling and the precision of each kernel.
//
// Conventions for every launcher:
//  - matrices are row-major and contiguous (leading dimension = number of columns) in device
//    memory; shapes are given by the int64 fields; any shape works, tile multiples or not;
//  - work is enqueued on `stream` and never synchronised;
//  - the return value is the first failure: an argument check (cudaErrorInvalidValue, with the
//    violated condition in Status::what), or the error of a launch (cudaGetLastError() is read
//    after every launch);
//  - outputs are written with "=" (each launcher zeroes what it accumulates into).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/packed_format.h"

namespace l4q::kernels {

enum class DType : int {
  F32 = 0,
  BF16 = 1,  // __nv_bfloat16 / raw uint16 bf16 bits
};

struct Status {
  cudaError_t code = cudaSuccess;
  const char* what = "";  // static string: the failed check, or the launch that failed
  bool ok() const { return code == cudaSuccess; }
};

// ---------------------------------------------------------------------------------------
// Fused fake-quant matmul of an L4Q layer
// ---------------------------------------------------------------------------------------

// Rank limit of the fused kernels: A and B tiles of up to this rank live in shared memory.
inline constexpr int64_t kMaxFusedRank = 64;

// W_q = dequantize(quantize(W0 + lora_scale * B A; s, b)), per element as in
// common/quant_math.h. The fused kernels never store W_q, the mask or G.
struct FakeQuantWeight {
  DType dtype = DType::BF16;  // of W0, A, B and of the activations (X, Y, dY, dX)
  const void* W0 = nullptr;   // [out, in]
  const void* A = nullptr;    // [rank, in]; null together with B and rank 0: no LoRA
  const void* B = nullptr;    // [out, rank]
  const float* s = nullptr;   // [out, in / group_size] fp32 step; clamped to >= kMinStep on use
  const float* b = nullptr;   // [out, in / group_size] fp32 offset
  int64_t out = 0, in = 0, rank = 0, group_size = 0;  // group_size divides in
  int bits = 4;              // 2..8: grid [-2^(bits-1), 2^(bits-1) - 1]
  float lora_scale = 1.0f;   // alpha / r
};

// Y [tokens, out] = X [tokens, in] W_q^T. X and Y in w.dtype, fp32 accumulation (tensor cores:
// bf16 MMA for bf16, 3xTF32 for fp32).
Status fake_quant_matmul_forward(const FakeQuantWeight& w, const void* X, void* Y,
                                 int64_t tokens, cudaStream_t stream);

// Gradients of the layer (straight-through estimator); a null pointer skips that output.
struct FakeQuantGrads {
  void* dX = nullptr;   // [tokens, in] w.dtype: dY W_q
  float* dA = nullptr;  // [rank, in]: lora_scale * B^T (M*G)
  float* dB = nullptr;  // [out, rank]: lora_scale * (M*G) A^T
  float* ds = nullptr;  // [out, groups]: grad_scale * sum_group G * (M ? w_int - w : clamp(w))
  float* db = nullptr;  // [out, groups]: grad_scale * sum_group G * (1 - M)
  float* dW = nullptr;  // [out, in]: M*G, for full QAT only (this one is out x in by nature)
};

// G = dY^T X is accumulated tile by tile in registers and consumed in place; dA, dB, ds, db
// are summed across tiles with fp32 atomics (so their last bits vary from run to run).
Status fake_quant_matmul_backward(const FakeQuantWeight& w, const void* X, const void* dY,
                                  int64_t tokens, float grad_scale, const FakeQuantGrads& grads,
                                  cudaStream_t stream);

// Unfused: W_q [out, in] (w.dtype) written to memory. The checkers' baseline (quantize, then
// cuBLAS), and a GPU merge().
Status fake_quant_weight(const FakeQuantWeight& w, void* Wq, cudaStream_t stream);

// ---------------------------------------------------------------------------------------
// Packed low-bit matmul (inference), layout in common/packed_format.h
// ---------------------------------------------------------------------------------------

struct PackedWeight {
  packed::PackedType type = packed::PackedType::U4;
  const void* blocks = nullptr;  // [out, in / 32] blocks, 16-byte aligned base
  const float* step = nullptr;   // [out, in / group_size]
  const float* min = nullptr;    // [out, in / group_size]
  int64_t out = 0, in = 0, group_size = 0;
};

// Decode batch limit of the GEMV.
inline constexpr int64_t kMaxGemvTokens = 8;

// y [tokens, out] = x [tokens, in] W^T for tokens <= kMaxGemvTokens (decode). x, y in dtype
// (F32 or BF16), x 16-byte aligned; fp32 accumulation on CUDA cores, weight read once.
Status packed_gemv(const PackedWeight& w, DType dtype, const void* x, void* y, int64_t tokens,
                   cudaStream_t stream);

// Y [tokens, out] = X [tokens, in] W^T for any tokens (prefill). BF16 only: the weight tile is
// dequantized to bf16 in shared memory and multiplied on the tensor cores.
Status packed_gemm(const PackedWeight& w, DType dtype, const void* X, void* Y, int64_t tokens,
                   cudaStream_t stream);

// packed_gemv for tokens <= kMaxGemvTokens, else packed_gemm.
Status packed_matmul(const PackedWeight& w, DType dtype, const void* X, void* Y, int64_t tokens,
                     cudaStream_t stream);

const char* to_string(DType t);

}  // namespace l4q::kernels
