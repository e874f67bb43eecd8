#include "nn/cuda/l4q_linear_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "l4q/error.h"
#include "l4q/kernels.h"

namespace l4q::cuda {

namespace {

constexpr const char* kOp = "l4q_linear";

kernels::DType kernel_dtype(const at::Tensor& t, const char* name) {
  if (t.scalar_type() == at::kFloat) return kernels::DType::F32;
  if (t.scalar_type() == at::kBFloat16) return kernels::DType::BF16;
  fail("[", kOp, "] tensor '", name, "': the CUDA path takes float32 or bfloat16, got ",
       c10::toString(t.scalar_type()));
}

void expect_like(const at::Tensor& t, const at::Tensor& x, const char* name) {
  if (!t.is_cuda() || t.device() != x.device())
    fail("[", kOp, "] tensor '", name, "': expected a tensor on ", x.device(), ", got ",
         t.device());
  if (t.scalar_type() != x.scalar_type())
    fail("[", kOp, "] tensor '", name, "': expected dtype ", c10::toString(x.scalar_type()),
         ", got ", c10::toString(t.scalar_type()));
}

void check(const kernels::Status& st) {
  if (!st.ok())
    fail("[", kOp, "] CUDA kernel failed: ", cudaGetErrorName(st.code), " (", st.what, ")");
}

// Contiguous operands the kernels read, kept alive for the duration of the call.
struct Operands {
  at::Tensor W0, A, B, s, b;
  kernels::FakeQuantWeight w;
};

Operands operands(const at::Tensor& x2, const at::Tensor& W0, const at::Tensor& A,
                  const at::Tensor& B, const at::Tensor& s, const at::Tensor& b, int bits,
                  int64_t group_size, double lora_scale) {
  Operands o;
  const auto dt = kernel_dtype(x2, "x");
  expect_like(W0, x2, "W0");
  const bool lora = A.numel() > 0;
  if (lora) {
    expect_like(A, x2, "A");
    expect_like(B, x2, "B");
    if (A.size(0) > kernels::kMaxFusedRank)
      fail("[", kOp, "] tensor 'A': the CUDA kernels support rank <= ", kernels::kMaxFusedRank,
           ", got ", A.size(0));
  }
  o.W0 = W0.contiguous();
  o.A = lora ? A.contiguous() : A;
  o.B = lora ? B.contiguous() : B;
  o.s = s.to(x2.device(), at::kFloat).contiguous();
  o.b = b.to(x2.device(), at::kFloat).contiguous();
  o.w.dtype = dt;
  o.w.W0 = o.W0.data_ptr();
  o.w.A = lora ? o.A.data_ptr() : nullptr;
  o.w.B = lora ? o.B.data_ptr() : nullptr;
  o.w.s = o.s.data_ptr<float>();
  o.w.b = o.b.data_ptr<float>();
  o.w.out = W0.size(0);
  o.w.in = W0.size(1);
  o.w.rank = lora ? A.size(0) : 0;
  o.w.group_size = group_size;
  o.w.bits = bits;
  o.w.lora_scale = static_cast<float>(lora_scale);
  return o;
}

}  // namespace

at::Tensor l4q_linear_forward(const at::Tensor& x2, const at::Tensor& W0, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& s, const at::Tensor& b,
                              int bits, int64_t group_size, double lora_scale) {
  const c10::cuda::CUDAGuard guard(x2.device());
  const auto o = operands(x2, W0, A, B, s, b, bits, group_size, lora_scale);
  const auto x = x2.contiguous();
  auto Y = at::empty({x.size(0), o.w.out}, x.options());
  check(kernels::fake_quant_matmul_forward(o.w, x.data_ptr(), Y.data_ptr(), x.size(0),
                                           at::cuda::getCurrentCUDAStream()));
  return Y;
}

L4QLinearGrads l4q_linear_backward(const at::Tensor& dY, const at::Tensor& x2,
                                   const at::Tensor& W0, const at::Tensor& A, const at::Tensor& B,
                                   const at::Tensor& s, const at::Tensor& b, int bits,
                                   int64_t group_size, double lora_scale, double grad_scale,
                                   bool need_x, bool need_w, bool need_lora) {
  const c10::cuda::CUDAGuard guard(x2.device());
  const auto o = operands(x2, W0, A, B, s, b, bits, group_size, lora_scale);
  const auto x = x2.contiguous();
  const auto g = dY.to(x.scalar_type()).contiguous();
  expect_like(g, x, "dY");
  need_lora = need_lora && o.w.rank > 0;
  const auto f32 = x.options().dtype(at::kFloat);
  const int64_t groups = o.w.in / group_size;
  L4QLinearGrads r;
  at::Tensor dA, dB, dW;
  if (need_x) r.dX = at::empty_like(x);
  if (need_lora) {
    dA = at::empty({o.w.rank, o.w.in}, f32);
    dB = at::empty({o.w.out, o.w.rank}, f32);
  }
  if (need_w) dW = at::empty({o.w.out, o.w.in}, f32);
  auto ds = at::empty({o.w.out, groups}, f32), db = at::empty({o.w.out, groups}, f32);
  kernels::FakeQuantGrads out;
  out.dX = need_x ? r.dX.data_ptr() : nullptr;
  out.dA = need_lora ? dA.data_ptr<float>() : nullptr;
  out.dB = need_lora ? dB.data_ptr<float>() : nullptr;
  out.ds = ds.data_ptr<float>();
  out.db = db.data_ptr<float>();
  out.dW = need_w ? dW.data_ptr<float>() : nullptr;
  check(kernels::fake_quant_matmul_backward(o.w, x.data_ptr(), g.data_ptr(), x.size(0),
                                            static_cast<float>(grad_scale), out,
                                            at::cuda::getCurrentCUDAStream()));
  if (need_lora) {
    r.dA = dA.to(A.scalar_type());
    r.dB = dB.to(B.scalar_type());
  }
  if (need_w) r.dW = dW.to(W0.scalar_type());
  r.ds = ds.to(s.scalar_type());
  r.db = db.to(b.scalar_type());
  return r;
}

}  // namespace l4q::cuda
