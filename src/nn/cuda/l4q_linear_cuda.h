// CUDA path of the L4Q linear op: thin ATen glue over the raw-pointer kernels of
// kernels/include/l4q/kernels.h (private to src/). Compiled only when the LibTorch in use has
// CUDA (kernels/CMakeLists.txt then defines L4Q_WITH_CUDA_KERNELS for the l4q target).
//
// Called from L4QLinearFunction (src/nn/l4q_linear.cpp) for CUDA tensors, with the tensors it
// already holds: x2 [N, in], W0 [out, in], A [rank, in] and B [out, rank] (empty when there is
// no LoRA), s and b [out, in / group_size]. Activations and W0, A, B: float32 or bfloat16 (all
// the same dtype); s and b: any floating dtype (used as fp32); rank <= 64. Anything else throws
// l4q::Error naming the tensor. The kernels never store W_q, the mask or G = dY^T X.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace l4q::cuda {

// Y [N, out] = x2 W_q^T (no bias), in x2's dtype.
at::Tensor l4q_linear_forward(const at::Tensor& x2, const at::Tensor& W0, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& s, const at::Tensor& b,
                              int bits, int64_t group_size, double lora_scale);

struct L4QLinearGrads {
  at::Tensor dX;  // [N, in], x2's dtype            (defined if need_x)
  at::Tensor dW;  // [out, in], W0's dtype: M*G      (defined if need_w: full QAT)
  at::Tensor dA;  // [rank, in], A's dtype           (defined if need_lora)
  at::Tensor dB;  // [out, rank], B's dtype          (defined if need_lora)
  at::Tensor ds;  // [out, groups], s's dtype, already multiplied by grad_scale
  at::Tensor db;  // [out, groups], b's dtype, already multiplied by grad_scale
};

// Gradients of l4q_linear_forward for the upstream gradient dY [N, out] (bias excluded).
L4QLinearGrads l4q_linear_backward(const at::Tensor& dY, const at::Tensor& x2,
                                   const at::Tensor& W0, const at::Tensor& A, const at::Tensor& B,
                                   const at::Tensor& s, const at::Tensor& b, int bits,
                                   int64_t group_size, double lora_scale, double grad_scale,
                                   bool need_x, bool need_w, bool need_lora);

}  // namespace l4q::cuda
