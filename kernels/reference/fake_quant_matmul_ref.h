// CPU reference of the fused fake-quant matmul (forward and backward) of an L4Q layer.
//
// Deliberately plain loops over full matrices: this is the specification the CUDA kernels are
// checked against (kernels/tests, kernels/dev) and that is itself checked against the ATen path
// of the layer in CI (tests/unit/test_kernels_reference.cpp). It uses the element math of
// common/quant_math.h, like both of them, and accumulates in double.
//
// Layout: row-major, contiguous. X [tokens, in], W0 [out, in], A [rank, in], B [out, rank],
// s and b [out, in / group_size], Y and dY [tokens, out].
//
//   Wc  = W0 + lora_scale * B A                  (merged weight; rank 0 means no LoRA)
//   W_q = dequantize(quantize(Wc; s, b))          per element, s clamped to >= kMinStep
//   Y   = X W_q^T
//   G   = dY^T X,  M = [Qn <= w <= Qp]
//   dX  = dY W_q
//   dA  = lora_scale * B^T (M*G),   dB = lora_scale * (M*G) A^T
//   ds  = grad_scale * sum_group G * (M ? w_int - w : clamp(w))
//   db  = grad_scale * sum_group G * (1 - M)
//
// Operand precision: the GPU feeds W_q to the tensor cores in the activation dtype. With
// `round_wq_bf16` the reference rounds W_q to bf16 before the two products that use it
// (Y and dX), which is what the bf16 kernels compute; everything else is exact in T.
#pragma once
#include <cstdint>
#include <vector>

#include "common/bf16.h"
#include "common/quant_math.h"

namespace l4q::kernels::ref {

struct FakeQuantProblem {
  int64_t tokens = 0, out = 0, in = 0, rank = 0, group_size = 0;
  int bits = 4;
  double lora_scale = 1.0;
  double grad_scale = 1.0;
  bool round_wq_bf16 = false;

  int64_t groups() const { return in / group_size; }
};

// Wc [out, in] = W0 + lora_scale * B A, the rank sum in double, one rounding to T.
template <typename T>
std::vector<T> merged_weight(const FakeQuantProblem& p, const T* W0, const T* A, const T* B) {
  std::vector<T> Wc(static_cast<size_t>(p.out * p.in));
  for (int64_t o = 0; o < p.out; ++o)
    for (int64_t i = 0; i < p.in; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < p.rank; ++k)
        acc += static_cast<double>(B[o * p.rank + k]) * static_cast<double>(A[k * p.in + i]);
      Wc[o * p.in + i] = static_cast<T>(static_cast<double>(W0[o * p.in + i]) + p.lora_scale * acc);
    }
  return Wc;
}

// Everything the backward needs about one element of the quantized weight.
template <typename T>
struct QuantizedWeight {
  std::vector<T> Wq;         // [out, in] dequantized, rounded to bf16 if round_wq_bf16
  std::vector<T> step_grad;  // [out, in] M ? w_int - w : clamp(w)
  std::vector<uint8_t> mask; // [out, in] M
  std::vector<int8_t> codes; // [out, in] w_int (bits <= 8)
};

template <typename T>
QuantizedWeight<T> quantize_weight(const FakeQuantProblem& p, const T* Wc, const T* s, const T* b) {
  const T qn = T(qmath::grid_min(p.bits)), qp = T(qmath::grid_max(p.bits));
  const int64_t n = p.out * p.in, groups = p.groups();
  QuantizedWeight<T> q;
  q.Wq.resize(n);
  q.step_grad.resize(n);
  q.mask.resize(n);
  q.codes.resize(n);
  for (int64_t o = 0; o < p.out; ++o)
    for (int64_t i = 0; i < p.in; ++i) {
      const int64_t g = o * groups + i / p.group_size, k = o * p.in + i;
      const T sg = qmath::clamp_step(s[g]), bg = b[g];
      const auto e = qmath::quantize(Wc[k], sg, bg, qn, qp);
      T wq = qmath::dequantize(e.w_int, sg, bg);
      if (p.round_wq_bf16) wq = static_cast<T>(bf16::round(static_cast<float>(wq)));
      q.Wq[k] = wq;
      q.step_grad[k] = qmath::step_grad(e);
      q.mask[k] = e.in ? 1 : 0;
      q.codes[k] = static_cast<int8_t>(e.w_int);
    }
  return q;
}

// Y [tokens, out] = X W_q^T.
template <typename T>
std::vector<T> forward(const FakeQuantProblem& p, const T* X, const T* W0, const T* A, const T* B,
                       const T* s, const T* b) {
  const auto Wc = merged_weight(p, W0, A, B);
  const auto q = quantize_weight(p, Wc.data(), s, b);
  std::vector<T> Y(static_cast<size_t>(p.tokens * p.out));
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int64_t o = 0; o < p.out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < p.in; ++i)
        acc += static_cast<double>(X[t * p.in + i]) * static_cast<double>(q.Wq[o * p.in + i]);
      Y[t * p.out + o] = static_cast<T>(acc);
    }
  return Y;
}

template <typename T>
struct Grads {
  std::vector<T> dX;  // [tokens, in]
  std::vector<T> dA;  // [rank, in]
  std::vector<T> dB;  // [out, rank]
  std::vector<T> ds;  // [out, groups]
  std::vector<T> db;  // [out, groups]
  std::vector<T> dW;  // [out, in] = M * G
};

template <typename T>
Grads<T> backward(const FakeQuantProblem& p, const T* X, const T* dY, const T* W0, const T* A,
                  const T* B, const T* s, const T* b) {
  const auto Wc = merged_weight(p, W0, A, B);
  const auto q = quantize_weight(p, Wc.data(), s, b);
  const int64_t groups = p.groups();
  Grads<T> g;
  g.dX.assign(static_cast<size_t>(p.tokens * p.in), T(0));
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int64_t i = 0; i < p.in; ++i) {
      double acc = 0;
      for (int64_t o = 0; o < p.out; ++o)
        acc += static_cast<double>(dY[t * p.out + o]) * static_cast<double>(q.Wq[o * p.in + i]);
      g.dX[t * p.in + i] = static_cast<T>(acc);
    }
  // M*G, rounded to T once (the dtype the CPU path and the kernels hold it in).
  g.dW.assign(static_cast<size_t>(p.out * p.in), T(0));
  std::vector<double> dsum(static_cast<size_t>(p.out * groups), 0.0), bsum(dsum.size(), 0.0);
  std::vector<double> col(static_cast<size_t>(p.tokens));
  for (int64_t o = 0; o < p.out; ++o) {
    for (int64_t t = 0; t < p.tokens; ++t) col[t] = static_cast<double>(dY[t * p.out + o]);
    for (int64_t i = 0; i < p.in; ++i) {
      double G = 0;
      for (int64_t t = 0; t < p.tokens; ++t) G += col[t] * static_cast<double>(X[t * p.in + i]);
      const int64_t k = o * p.in + i, gi = o * groups + i / p.group_size;
      const T Gt = static_cast<T>(G);
      dsum[gi] += static_cast<double>(Gt) * static_cast<double>(q.step_grad[k]);
      bsum[gi] += q.mask[k] ? 0.0 : static_cast<double>(Gt);
      g.dW[k] = q.mask[k] ? Gt : T(0);
    }
  }
  // The scale multiplies the finished sum, in T (as the CPU path does).
  g.ds.resize(dsum.size());
  g.db.resize(bsum.size());
  for (size_t k = 0; k < dsum.size(); ++k) {
    g.ds[k] = static_cast<T>(dsum[k]) * static_cast<T>(p.grad_scale);
    g.db[k] = static_cast<T>(bsum[k]) * static_cast<T>(p.grad_scale);
  }
  g.dA.assign(static_cast<size_t>(p.rank * p.in), T(0));
  g.dB.assign(static_cast<size_t>(p.out * p.rank), T(0));
  for (int64_t k = 0; k < p.rank; ++k) {
    for (int64_t i = 0; i < p.in; ++i) {
      double acc = 0;
      for (int64_t o = 0; o < p.out; ++o)
        acc += static_cast<double>(B[o * p.rank + k]) * static_cast<double>(g.dW[o * p.in + i]);
      g.dA[k * p.in + i] = static_cast<T>(p.lora_scale * acc);
    }
    for (int64_t o = 0; o < p.out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < p.in; ++i)
        acc += static_cast<double>(g.dW[o * p.in + i]) * static_cast<double>(A[k * p.in + i]);
      g.dB[o * p.rank + k] = static_cast<T>(p.lora_scale * acc);
    }
  }
  return g;
}

}  // namespace l4q::kernels::ref
