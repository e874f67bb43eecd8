// Shared by fake_quant_forward.cu and fake_quant_backward.cu: argument checks, the kernel
// parameters of a FakeQuantWeight, and the quantized GEMM used for Y and for dX.
#pragma once
#include "device_common.cuh"
#include "weight_tiles.cuh"

namespace l4q::kernels::detail {

// cudaSuccess or cudaErrorInvalidValue naming the first violated condition.
Status check_fake_quant_weight(const FakeQuantWeight& w);

FakeQuantParams fake_quant_params(const FakeQuantWeight& w);

// kTrans = false: Y [M = tokens, N = out] = X [tokens, in] W_q^T
// kTrans = true:  dX [M = tokens, N = in] = dY [tokens, out] W_q
// Instantiated in fake_quant_forward.cu for float and bf16_t.
template <typename T, bool kTrans>
Status launch_fake_quant_gemm(const FakeQuantParams& p, const T* X, T* C, int64_t M,
                              cudaStream_t stream);

}  // namespace l4q::kernels::detail
