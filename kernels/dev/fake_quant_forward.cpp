// Checker for the fused fake-quant forward Y = X Q(W0 + (alpha/r) B A)^T.
//
//   l4q_check_fake_quant_forward [--tokens 2048 --out 11008 --in 4096 --rank 16 --gs 128
//                                 --bits 4 --reps 20]
//
// 1. Verifies fake_quant_matmul_forward and the unfused fake_quant_weight against the CPU
//    reference (kernels/reference/fake_quant_matmul_ref.h) in fp32 and bf16 on small shapes,
//    ragged ones included; any failure stops the run (exit 1).
// 2. Times, at the given shape, with the L2 flushed before each repetition:
//      cuBLAS GEMM on a ready W_q          the bound the fused kernel is measured against
//      unfused: fake_quant_weight + cuBLAS quantize to memory, then multiply
//      fused                               fake_quant_matmul_forward
//    for bf16 (cuBLAS bf16, fp32 accumulation) and fp32 (cuBLAS TF32 and strict FP32; the fused
//    fp32 kernel is 3xTF32), and cross-checks the fused result against the unfused one at scale.
// Target (docs/kernels.md): bf16 fused >= 80 % of cuBLAS at 2048 x 11008 x 4096 on an H100.
#include <random>

#include "dev_common.h"
#include "reference/fake_quant_matmul_ref.h"

using namespace l4q::kernels;
using namespace l4q::kernels::dev;

namespace {

const char* kTool = "l4q_check_fake_quant_forward";

struct Problem {
  int64_t tokens, out, in, gs, rank;
  int bits;
};

struct Device {
  h::DeviceBuffer X, W0, A, B, s, b;
  FakeQuantWeight w;
};

// Weight side exact in fp32 (see kernels/tests/test_kernels_gpu.cpp), activations random.
Device make(const Problem& c, DType dt, std::mt19937_64& rng, l4q::kernels::ref::FakeQuantProblem* p,
            std::vector<float>* host_x, std::vector<float>* host_w0, std::vector<float>* host_a,
            std::vector<float>* host_b, std::vector<float>* host_s, std::vector<float>* host_off) {
  const int64_t groups = c.in / c.gs;
  auto X = h::as_dtype(h::normal(c.tokens * c.in, 1.f, rng), dt);
  auto W0 = h::dyadic(c.out * c.in, 16, 4, rng);
  auto A = h::dyadic(c.rank * c.in, 8, 3, rng);
  auto B = h::dyadic(c.out * c.rank, 8, 3, rng);
  std::vector<float> s(c.out * groups);
  std::uniform_int_distribution<int> pick(0, 2);
  const float steps[] = {0.125f, 0.0625f, 0.0123f};
  for (auto& x : s) x = steps[pick(rng)];
  auto off = h::dyadic(c.out * groups, 4, 6, rng);
  Device d;
  d.X = h::upload(X, dt);
  d.W0 = h::upload(W0, dt);
  d.s = h::upload(s, DType::F32);
  d.b = h::upload(off, DType::F32);
  d.w.dtype = dt;
  d.w.W0 = d.W0.get();
  if (c.rank) {
    d.A = h::upload(A, dt);
    d.B = h::upload(B, dt);
    d.w.A = d.A.get();
    d.w.B = d.B.get();
  }
  d.w.s = d.s.as<float>();
  d.w.b = d.b.as<float>();
  d.w.out = c.out;
  d.w.in = c.in;
  d.w.rank = c.rank;
  d.w.group_size = c.gs;
  d.w.bits = c.bits;
  d.w.lora_scale = 0.5f;
  if (p) {
    p->tokens = c.tokens;
    p->out = c.out;
    p->in = c.in;
    p->rank = c.rank;
    p->group_size = c.gs;
    p->bits = c.bits;
    p->lora_scale = 0.5;
    p->round_wq_bf16 = dt == DType::BF16;
    *host_x = std::move(X);
    *host_w0 = std::move(W0);
    *host_a = std::move(A);
    *host_b = std::move(B);
    *host_s = std::move(s);
    *host_off = std::move(off);
  }
  return d;
}

void verify() {
  const std::vector<Problem> shapes = {{7, 13, 40, 8, 3, 3},     {130, 129, 96, 32, 16, 4},
                                       {64, 256, 256, 128, 0, 4}, {33, 70, 160, 160, 5, 2},
                                       {200, 64, 512, 256, 64, 8}, {5, 19, 36, 12, 2, 3}};
  Verifier v;
  std::mt19937_64 rng(1);
  for (DType dt : {DType::F32, DType::BF16})
    for (const auto& c : shapes) {
      l4q::kernels::ref::FakeQuantProblem p;
      std::vector<float> X, W0, A, B, s, off;
      auto d = make(c, dt, rng, &p, &X, &W0, &A, &B, &s, &off);
      h::DeviceBuffer Y(c.tokens * c.out * h::dtype_size(dt)), Wq(c.out * c.in * h::dtype_size(dt));
      h::check(fake_quant_matmul_forward(d.w, d.X.get(), Y.get(), c.tokens, nullptr), "forward");
      h::check(fake_quant_weight(d.w, Wq.get(), nullptr), "fake_quant_weight");
      h::check(cudaDeviceSynchronize(), "sync");
      const float* a = c.rank ? A.data() : nullptr;
      const float* b = c.rank ? B.data() : nullptr;
      const auto yr = l4q::kernels::ref::forward<float>(p, X.data(), W0.data(), a, b, s.data(), off.data());
      const auto Wc = l4q::kernels::ref::merged_weight<float>(p, W0.data(), a, b);
      const auto q = l4q::kernels::ref::quantize_weight<float>(p, Wc.data(), s.data(), off.data());
      char what[160];
      std::snprintf(what, sizeof what, "%s forward  T %ld out %ld in %ld gs %ld r %ld %d-bit",
                    to_string(dt), long(c.tokens), long(c.out), long(c.in), long(c.gs),
                    long(c.rank), c.bits);
      v.report(what, h::rel_err(h::download(Y.get(), c.tokens * c.out, dt), yr),
               dt == DType::BF16 ? 1e-2 : 2e-5);
      std::snprintf(what, sizeof what, "%s unfused W_q (bit-exact)  out %ld in %ld", to_string(dt),
                    long(c.out), long(c.in));
      v.report(what, h::rel_err(h::download(Wq.get(), c.out * c.in, dt), q.Wq), 1e-30);
    }
  v.finish(kTool);
}

void time_at(const Problem& c, DType dt, int reps) {
  std::mt19937_64 rng(2);
  auto d = make(c, dt, rng, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
  const size_t es = h::dtype_size(dt);
  h::DeviceBuffer Y(c.tokens * c.out * es), Y2(c.tokens * c.out * es), Wq(c.out * c.in * es);
  Blas blas;
  const double flops = 2.0 * c.tokens * c.out * c.in;
  const double io = (c.tokens * c.in + c.out * c.in + c.tokens * c.out) * es;
  const int T = static_cast<int>(c.tokens), O = static_cast<int>(c.out), I = static_cast<int>(c.in);
  h::check(fake_quant_weight(d.w, Wq.get(), nullptr), "fake_quant_weight");
  std::vector<Row> rows;
  auto gemm = [&](cublasComputeType_t ct) {
    blas.abt(d.X.get(), Wq.get(), Y2.get(), T, O, I, blas_type(dt), blas_type(dt), ct);
  };
  if (dt == DType::BF16) {
    rows.push_back({"cuBLAS bf16 GEMM on a ready W_q", h::time_ms([&] { gemm(CUBLAS_COMPUTE_32F); }, reps, nullptr), flops, io});
  } else {
    rows.push_back({"cuBLAS TF32 GEMM on a ready W_q", h::time_ms([&] { gemm(CUBLAS_COMPUTE_32F_FAST_TF32); }, reps, nullptr), flops, io});
    rows.push_back({"cuBLAS FP32 GEMM on a ready W_q", h::time_ms([&] { gemm(CUBLAS_COMPUTE_32F); }, reps, nullptr), flops, io});
  }
  const auto compute = dt == DType::BF16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
  rows.push_back({"unfused: fake_quant_weight + cuBLAS",
                  h::time_ms([&] {
                    h::check(fake_quant_weight(d.w, Wq.get(), nullptr), "fake_quant_weight");
                    gemm(compute);
                  }, reps, nullptr),
                  flops, io + 2.0 * c.out * c.in * es});
  rows.push_back({"fused fake_quant_matmul_forward",
                  h::time_ms([&] {
                    h::check(fake_quant_matmul_forward(d.w, d.X.get(), Y.get(), c.tokens, nullptr), "forward");
                  }, reps, nullptr),
                  flops, io});
  char title[200];
  std::snprintf(title, sizeof title, "%s forward, tokens %ld out %ld in %ld, rank %ld, group %ld, %d-bit (%d reps, L2 flushed)",
                to_string(dt), long(c.tokens), long(c.out), long(c.in), long(c.rank), long(c.gs), c.bits, reps);
  print_table(title, rows);
  // Cross-check at scale: fused vs the unfused result (same codes; different summation order).
  h::check(fake_quant_weight(d.w, Wq.get(), nullptr), "fake_quant_weight");
  gemm(compute);
  h::check(cudaDeviceSynchronize(), "sync");
  const auto a = h::download(Y.get(), c.tokens * c.out, dt), b = h::download(Y2.get(), c.tokens * c.out, dt);
  std::printf("  fused vs unfused at this shape: rel err %.2e\n\n", h::rel_err(a, b));
}

}  // namespace

int main(int argc, char** argv) {
  require_device(kTool);
  try {
    verify();
    const Problem c{arg_int(argc, argv, "--tokens", 2048), arg_int(argc, argv, "--out", 11008),
                    arg_int(argc, argv, "--in", 4096),     arg_int(argc, argv, "--gs", 128),
                    arg_int(argc, argv, "--rank", 16),     arg_int(argc, argv, "--bits", 4)};
    const int reps = arg_int(argc, argv, "--reps", 20);
    time_at(c, DType::BF16, reps);
    time_at(c, DType::F32, reps / 4 > 0 ? reps / 4 : 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kTool, e.what());
    return 1;
  }
  return 0;
}
