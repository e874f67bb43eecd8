// A quantized weight in the l4q packed export layout, in memory: unsigned codes packed at their
// bit width, one trained step and offset per group. It is what an `l4q` export stores per
// linear layer and what PackedLinear multiplies by.
//
//   W[o, i] = s[o, g] * (q[o, i] + Qn) + b[o, g],   g = i / group_size,  Qn = -2^(bits-1)
//
// computed exactly as training computes W_q (qmath::dequantize: a multiply, then an add), so
// dequantize() equals MergedWeight::dequantize() bit for bit. s is stored clamped
// (qmath::clamp_step), b is the trained LSQ+ offset of the signed grid (not the unsigned
// minimum b + s*Qn, whose rounding would lose the exact W_q).
//
// Codes of a row, by bits (blocks of 32 codes along the input, kernels/common/packed_format.h):
//   2  u2 blocks (8 bytes / 32 codes)    3  u3 blocks (12 bytes)    4  u4 blocks (16 bytes)
//   8  u8: one byte per code, code j of a row in byte j (32 bytes / 32 codes)
// A row whose in_features is not a multiple of 32 is padded to whole blocks with zero codes
// (stories260K's down_proj: in 172 -> 6 blocks = 192 codes); the padding is never read as a
// weight (matmuls treat x beyond in_features as zero).
//
// Group sizes: any divisor of in_features (group_size == in_features for per-channel).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "l4q/quant/merged_weight.h"

namespace l4q {

struct PackedWeight {
  int bits = 4;                // 2, 3, 4 or 8
  int64_t out = 0, in = 0;     // W is [out, in]
  int64_t group_size = 0;      // resolved: divides in
  at::Tensor qweight;          // uint8 [out, packed_row_bytes(bits, in)]
  at::Tensor scales;           // fp32 [out, groups], clamped step s
  at::Tensor offsets;          // fp32 [out, groups], offset b
  at::Tensor mins;             // fp32 [out, groups], b + s*Qn: what the fused matmul folds in

  int64_t groups() const { return in / group_size; }
  // W_q [out, in] fp32, bit for bit MergedWeight::dequantize() of the weight it was packed from.
  at::Tensor dequantize() const;
  // Rows [r0, r0 + n) of W_q into dst (fp32, row-major [n, in], row stride `ld` floats).
  void dequantize_rows(int64_t r0, int64_t n, float* dst, int64_t ld) const;
  // The signed codes and the steps/offsets (a MergedWeight whose dequantize() is ours).
  MergedWeight to_merged() const;
};

// Bit widths the layout stores (2, 3, 4, 8).
bool packed_bits_supported(int bits);
// Blocks of 32 codes per row (in rounded up) and bytes per packed row.
int64_t packed_blocks_per_row(int64_t in);
int64_t packed_row_bytes(int bits, int64_t in);
// "u2", "u3", "u4", "u8".
std::string packed_type_name(int bits);

// Packs a merged weight (w_int int8 [out, in], s and b [out, groups] fp32 or fp64 holding
// fp32 values). Throws l4q::Error naming `where` for unsupported bits, codes outside
// [Qn, Qp], steps or offsets that are not fp32-exact, or inconsistent shapes.
PackedWeight pack_weight(const MergedWeight& m, const std::string& where);

// Wraps stored tensors (as read from a file) after checking their dtypes and shapes against
// bits/out/in/group_size, and that steps are finite and >= the minimum step and offsets finite.
// The tensors are used in place (not copied). Throws l4q::Error naming `where` and the tensor.
PackedWeight make_packed_weight(int bits, int64_t out, int64_t in, int64_t group_size,
                                at::Tensor qweight, at::Tensor scales, at::Tensor offsets,
                                const std::string& where);

}  // namespace l4q
