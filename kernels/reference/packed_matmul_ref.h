// CPU reference of the packed low-bit matmul (common/packed_format.h) and of the conversion
// from an L4Q layer's signed codes to the packed form.
//
//   Y [tokens, out] = X [tokens, in] W^T,   W[o, i] = step[o, g] * q[o, i] + min[o, g]
//
// The weight is dequantized with qmath::dequantize (multiply, then add) and, with
// `round_w_bf16`, rounded to bf16: that is what the bf16 GEMM kernel feeds its tensor cores.
// The GEMV kernel never rounds the weight (it folds step and min out of the block sums), so it
// is compared with round_w_bf16 = false. Accumulation is in double.
#pragma once
#include <cstdint>
#include <vector>

#include "common/bf16.h"
#include "common/packed_format.h"
#include "common/quant_math.h"

namespace l4q::kernels::ref {

struct PackedMatrix {
  packed::PackedType type = packed::PackedType::U4;
  int64_t out = 0, in = 0, group_size = 0;
  std::vector<uint8_t> blocks;  // [out, in / 32] blocks
  std::vector<float> step;      // [out, in / group_size]
  std::vector<float> min;       // [out, in / group_size]

  int64_t groups() const { return in / group_size; }
};

// From the signed codes w_int [out, in] in [Qn, Qp] and s, b [out, groups] of an L4Q layer
// (MergedWeight): q = w_int - Qn, step = clamp_step(s), min = b + clamp_step(s) * Qn.
// bits must have a packed format (2, 3, 4) and the shape must pass check_packed_shape.
inline PackedMatrix pack_l4q_weight(int bits, const int8_t* w_int, const float* s, const float* b,
                                    int64_t out, int64_t in, int64_t group_size) {
  PackedMatrix m;
  packed::type_for_bits(bits, m.type);
  m.out = out;
  m.in = in;
  m.group_size = group_size;
  const int qn = qmath::grid_min(bits);
  std::vector<uint8_t> codes(static_cast<size_t>(out * in));
  for (int64_t k = 0; k < out * in; ++k) codes[k] = static_cast<uint8_t>(w_int[k] - qn);
  m.blocks.resize(static_cast<size_t>(out * packed::row_bytes(m.type, in)));
  packed::pack_rows_ref(m.type, codes.data(), out, in, m.blocks.data());
  const int64_t ng = out * (in / group_size);
  m.step.resize(ng);
  m.min.resize(ng);
  for (int64_t g = 0; g < ng; ++g) {
    m.step[g] = qmath::clamp_step(s[g]);
    m.min[g] = packed::min_offset(s[g], b[g], bits);
  }
  return m;
}

// W [out, in] as floats.
inline std::vector<float> dequantize(const PackedMatrix& m, bool round_w_bf16 = false) {
  std::vector<uint8_t> codes(static_cast<size_t>(m.out * m.in));
  packed::unpack_rows_ref(m.type, m.blocks.data(), m.out, m.in, codes.data());
  std::vector<float> W(codes.size());
  const int64_t groups = m.groups();
  for (int64_t o = 0; o < m.out; ++o)
    for (int64_t i = 0; i < m.in; ++i) {
      const int64_t g = o * groups + i / m.group_size;
      float w = qmath::dequantize(static_cast<float>(codes[o * m.in + i]), m.step[g], m.min[g]);
      W[o * m.in + i] = round_w_bf16 ? bf16::round(w) : w;
    }
  return W;
}

// Y [tokens, out] = X [tokens, in] W^T in double.
inline std::vector<double> matmul(const PackedMatrix& m, const float* X, int64_t tokens,
                                  bool round_w_bf16 = false) {
  const auto W = dequantize(m, round_w_bf16);
  std::vector<double> Y(static_cast<size_t>(tokens * m.out));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t o = 0; o < m.out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < m.in; ++i)
        acc += static_cast<double>(X[t * m.in + i]) * static_cast<double>(W[o * m.in + i]);
      Y[t * m.out + o] = acc;
    }
  return Y;
}

}  // namespace l4q::kernels::ref
