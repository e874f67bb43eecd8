// x W^T for a weight W [out, in], with one-row inputs (decoding steps) sent to a GEMV.
// OpenBLAS's GEMM packs (copies) the whole of W before multiplying even when x has one row,
// so decoding paid a full extra pass over every weight per token; a GEMV streams W once.
// Measured on SmolLM2-135M decode: docs/models.md.
#pragma once

#include <ATen/ATen.h>

namespace l4q::detail {

inline at::Tensor matmul_weight_t(const at::Tensor& x, const at::Tensor& W) {
  const int64_t in = W.size(1);
  if (x.dim() >= 1 && x.numel() == in && x.size(-1) == in) {
    auto sizes = x.sizes().vec();
    sizes.back() = W.size(0);
    return at::mv(W, x.reshape({in})).reshape(sizes);
  }
  return at::matmul(x, W.t());
}

}  // namespace l4q::detail
