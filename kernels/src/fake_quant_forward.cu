// Fused fake-quant forward Y = X Q(W0 + lora_scale B A)^T, the dX GEMM of the backward (same
// producer, weight read transposed), and the unfused quantize-to-memory kernel that serves as
// the checkers' baseline.
#include "fake_quant.cuh"
#include "quantized_gemm.cuh"

namespace l4q::kernels {
namespace detail {

Status check_fake_quant_weight(const FakeQuantWeight& w) {
  if (w.dtype != DType::F32 && w.dtype != DType::BF16)
    return invalid("FakeQuantWeight.dtype: expected F32 or BF16");
  if (!w.W0 || !w.s || !w.b) return invalid("FakeQuantWeight: W0, s and b must be non-null");
  if (w.out < 1 || w.in < 1) return invalid("FakeQuantWeight: out and in must be >= 1");
  if (w.out >= (int64_t{1} << 31) || w.in >= (int64_t{1} << 31))
    return invalid("FakeQuantWeight: out and in must be < 2^31");
  if (w.group_size < 1 || w.in % w.group_size != 0)
    return invalid("FakeQuantWeight.group_size: expected a positive divisor of in");
  if (w.bits < 2 || w.bits > 8) return invalid("FakeQuantWeight.bits: expected 2..8");
  const bool lora = w.A != nullptr;
  if (lora != (w.B != nullptr) || lora != (w.rank > 0))
    return invalid("FakeQuantWeight: A, B and rank: expected all set (LoRA) or null/0");
  if (w.rank > kMaxFusedRank)
    return invalid("FakeQuantWeight.rank: the fused kernels support rank <= 64");
  return {};
}

FakeQuantParams fake_quant_params(const FakeQuantWeight& w) {
  FakeQuantParams p;
  p.W0 = w.W0;
  p.A = w.A;
  p.B = w.B;
  p.s = w.s;
  p.b = w.b;
  p.out = w.out;
  p.in = w.in;
  p.rank = w.rank;
  p.group_size = w.group_size;
  p.groups = w.in / w.group_size;
  p.rank_pad = static_cast<int>(ceil_div(w.rank, 16) * 16);
  p.bits = w.bits;
  p.lora_scale = w.lora_scale;
  return p;
}

template <typename T, bool kTrans>
Status launch_fake_quant_gemm(const FakeQuantParams& p, const T* X, T* C, int64_t M,
                              cudaStream_t stream) {
  using Cfg = GemmConfig<T, kTrans>;
  using Producer = FakeQuantTile<T, kTrans, Cfg::NT, Cfg::kTileRows, Cfg::kTileCols>;
  const int64_t N = kTrans ? p.in : p.out, K = kTrans ? p.out : p.in;
  return launch_quantized_gemm<T, kTrans, Producer>(
      X, C, M, N, K, p, stream,
      kTrans ? "fake_quant_matmul_backward: dX kernel" : "fake_quant_matmul_forward: kernel");
}

template Status launch_fake_quant_gemm<float, false>(const FakeQuantParams&, const float*, float*,
                                                     int64_t, cudaStream_t);
template Status launch_fake_quant_gemm<float, true>(const FakeQuantParams&, const float*, float*,
                                                    int64_t, cudaStream_t);
template Status launch_fake_quant_gemm<bf16_t, false>(const FakeQuantParams&, const bf16_t*,
                                                      bf16_t*, int64_t, cudaStream_t);
template Status launch_fake_quant_gemm<bf16_t, true>(const FakeQuantParams&, const bf16_t*,
                                                     bf16_t*, int64_t, cudaStream_t);

// One thread per element of W_q: the rank sum on CUDA cores, the division as on the CPU.
// Memory bound (reads W0, writes W_q); see docs/kernels.md section 2.1.
template <typename T>
__global__ void __launch_bounds__(256)
    fake_quant_weight_kernel(const __grid_constant__ FakeQuantParams p, T* __restrict__ Wq) {
  const T* W0 = static_cast<const T*>(p.W0);
  const T* A = static_cast<const T*>(p.A);
  const T* B = static_cast<const T*>(p.B);
  const float qn = static_cast<float>(qmath::grid_min(p.bits));
  const float qp = static_cast<float>(qmath::grid_max(p.bits));
  const int64_t n = p.out * p.in;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = k / p.in, i = k % p.in;
    float acc = 0.0f;
    for (int64_t j = 0; j < p.rank; ++j) acc = __fmaf_rn(to_f32(B[o * p.rank + j]), to_f32(A[j * p.in + i]), acc);
    const float w = __fmaf_rn(p.lora_scale, acc, to_f32(W0[k]));
    const int64_t g = o * p.groups + i / p.group_size;
    const float s = qmath::clamp_step(p.s[g]), b = p.b[g];
    const auto e = qmath::quantize(w, s, b, qn, qp);
    Wq[k] = from_f32<T>(qmath::dequantize(e.w_int, s, b));
  }
}

}  // namespace detail

const char* to_string(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::BF16:
      return "bf16";
  }
  return "?";
}

Status fake_quant_matmul_forward(const FakeQuantWeight& w, const void* X, void* Y,
                                 int64_t tokens, cudaStream_t stream) {
  using namespace detail;
  Status st = check_fake_quant_weight(w);
  if (!st.ok()) return st;
  if (tokens < 0 || tokens >= (int64_t{1} << 31))
    return invalid("fake_quant_matmul_forward: tokens must be in [0, 2^31)");
  if (tokens == 0) return {};
  if (!X || !Y) return invalid("fake_quant_matmul_forward: X and Y must be non-null");
  const FakeQuantParams p = fake_quant_params(w);
  if (w.dtype == DType::BF16)
    return launch_fake_quant_gemm<bf16_t, false>(p, static_cast<const bf16_t*>(X),
                                                 static_cast<bf16_t*>(Y), tokens, stream);
  return launch_fake_quant_gemm<float, false>(p, static_cast<const float*>(X),
                                              static_cast<float*>(Y), tokens, stream);
}

Status fake_quant_weight(const FakeQuantWeight& w, void* Wq, cudaStream_t stream) {
  using namespace detail;
  Status st = check_fake_quant_weight(w);
  if (!st.ok()) return st;
  if (!Wq) return invalid("fake_quant_weight: Wq must be non-null");
  const FakeQuantParams p = fake_quant_params(w);
  const int64_t n = w.out * w.in;
  const unsigned blocks = static_cast<unsigned>(ceil_div(n, 256) < 65536 ? ceil_div(n, 256) : 65536);
  if (w.dtype == DType::BF16)
    launch_kernel(fake_quant_weight_kernel<bf16_t>, dim3(blocks), dim3(256), 0, stream, p,
                  static_cast<bf16_t*>(Wq));
  else
    launch_kernel(fake_quant_weight_kernel<float>, dim3(blocks), dim3(256), 0, stream, p,
                  static_cast<float*>(Wq));
  return launched("fake_quant_weight: kernel");
}

}  // namespace l4q::kernels
