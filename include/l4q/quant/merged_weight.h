// The deployable form of a quantized weight: integer codes plus per-group step and offset.
#pragma once
#include <ATen/core/Tensor.h>

#include "l4q/quant/grid.h"

namespace l4q {

// The deployable form of a quantized weight: W = w_int * s + b per group.
struct MergedWeight {
  at::Tensor w_int;  // int8 [out, in], signed codes in [Qn, Qp]
  at::Tensor s;      // [out, groups]
  at::Tensor b;      // [out, groups]
  QuantGrid grid;    // group_size resolved (never -1)

  // w_int * s + b, computed with the same element math as the forward pass: bit for bit the
  // W_q that l4q_linear used.
  at::Tensor dequantize() const;
  // Unsigned view for export: q = w_int - Qn in [0, 2^bits - 1] (uint8), m = b + s*Qn.
  at::Tensor unsigned_codes() const;
  at::Tensor min_offset() const;
};

// Quantizes a weight with given s, b exactly as the forward pass does (no autograd).
MergedWeight quantize_weight(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                             const QuantGrid& grid);

}  // namespace l4q
