// Matrix products on packed low-bit weights (PackedWeight) on the CPU, without a float copy of
// the weight.
//
//   Y [rows, out] = X [rows, in] W^T,   W[o, i] = s[o, g] * (q[o, i] + Qn) + b[o, g]
//
// Decode (few rows): the fused kernel reads the packed codes and folds step and offset out of
// the group sums,
//   y[o] = sum_g ( s[o, g] * sum_{i in g} q[o, i] x[i]  +  m[o, g] * sum_{i in g} x[i] ),
//   m = b + s*Qn,
// so per weight it only unpacks a code and does one multiply-add (AVX2: 8 at a time). The
// rounding differs from multiplying by the dequantized W (relative error ~1e-6 in fp32).
// Prefill (many rows): tiles of kPackedTileRows weight rows are dequantized exactly (the bits
// of training's W_q) into a small buffer and multiplied with at::mm; never the whole matrix.
//
// Threads: at::parallel_for over output rows (fused) or over the rows of a tile (dequantize).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "l4q/infer/packed_weight.h"

namespace l4q {

enum class PackedKernel {
  Auto,    // AVX2 when the CPU has it (checked at run time), else scalar
  Scalar,  // the portable reference loop
  Avx2,    // throws l4q::Error when the CPU or the build lacks AVX2
};

// Rows of X up to which packed_matmul uses the fused kernel.
inline constexpr int64_t kPackedFusedMaxRows = 4;
// Weight rows per dequantized tile on the GEMM path.
inline constexpr int64_t kPackedTileRows = 256;

// Whether this build has the AVX2 kernel and the CPU runs it.
bool packed_avx2_available();

// Whether the fused kernel can run `w`: each block of 32 codes lies in one group
// (group_size a multiple of 32, or one group per row).
bool packed_fused_supported(const PackedWeight& w);

// The fused kernel: x fp32 row-major [rows, in], y fp32 row-major [rows, out], any rows >= 1
// (it re-reads the weight once per 4 rows). Throws l4q::Error when !packed_fused_supported(w).
void packed_matmul_fused(const PackedWeight& w, const float* x, int64_t rows, float* y,
                         PackedKernel kernel = PackedKernel::Auto);

// x [..., in] fp32 -> [..., out] fp32: fused for up to kPackedFusedMaxRows rows (when
// supported), dequantized tiles + at::mm otherwise. Throws l4q::Error for a wrong shape/dtype.
at::Tensor packed_matmul(const PackedWeight& w, const at::Tensor& x,
                         PackedKernel kernel = PackedKernel::Auto);

}  // namespace l4q
