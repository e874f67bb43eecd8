// Checker for the fused fake-quant backward (dX, dA, dB, ds, db, and dW for full QAT).
//
//   l4q_check_fake_quant_backward [--tokens 2048 --out 11008 --in 4096 --rank 16 --gs 128
//                                  --bits 4 --reps 10]
//
// 1. Verifies every gradient of fake_quant_matmul_backward against the CPU reference in fp32 and
//    bf16 on small shapes, ragged ones included (exit 1 on a mismatch).
// 2. Times at the given shape (L2 flushed before each repetition):
//      fused forward                                 the reference for the 2.2x target
//      fused backward, all gradients                 dX kernel + weight-gradient kernel
//      fused backward, weight gradients only / dX only
//      cuBLAS: dX GEMM + G GEMM (G stored in fp32)   a lower bound of any unfused backward (it
//                                                    leaves out the mask, ds/db and LoRA products)
//    and prints the ratio backward / forward and the memory the unfused path would allocate.
// Target (docs/kernels.md): fused backward <= 2.2x the fused forward on an H100, bf16.
#include <random>

#include "dev_common.h"
#include "reference/fake_quant_matmul_ref.h"

using namespace l4q::kernels;
using namespace l4q::kernels::dev;

namespace {

const char* kTool = "l4q_check_fake_quant_backward";

struct Problem {
  int64_t tokens, out, in, gs, rank;
  int bits;
};

struct Host {
  l4q::kernels::ref::FakeQuantProblem p;
  std::vector<float> X, dY, W0, A, B, s, b;
};

struct Device {
  h::DeviceBuffer X, dY, W0, A, B, s, b;
  FakeQuantWeight w;
};

Host make_host(const Problem& c, DType dt, std::mt19937_64& rng) {
  Host d;
  d.p.tokens = c.tokens;
  d.p.out = c.out;
  d.p.in = c.in;
  d.p.rank = c.rank;
  d.p.group_size = c.gs;
  d.p.bits = c.bits;
  d.p.lora_scale = 0.5;
  d.p.grad_scale = 0.25;
  d.p.round_wq_bf16 = dt == DType::BF16;
  const int64_t groups = c.in / c.gs;
  d.X = h::as_dtype(h::normal(c.tokens * c.in, 1.f, rng), dt);
  d.dY = h::as_dtype(h::normal(c.tokens * c.out, 1.f, rng), dt);
  d.W0 = h::dyadic(c.out * c.in, 16, 4, rng);
  d.A = h::dyadic(c.rank * c.in, 8, 3, rng);
  d.B = h::dyadic(c.out * c.rank, 8, 3, rng);
  d.s.resize(c.out * groups);
  std::uniform_int_distribution<int> pick(0, 2);
  const float steps[] = {0.125f, 0.0625f, 0.0123f};
  for (auto& x : d.s) x = steps[pick(rng)];
  d.b = h::dyadic(c.out * groups, 4, 6, rng);
  return d;
}

Device upload(const Host& hd, DType dt) {
  Device d;
  d.X = h::upload(hd.X, dt);
  d.dY = h::upload(hd.dY, dt);
  d.W0 = h::upload(hd.W0, dt);
  d.s = h::upload(hd.s, DType::F32);
  d.b = h::upload(hd.b, DType::F32);
  d.w.dtype = dt;
  d.w.W0 = d.W0.get();
  if (hd.p.rank) {
    d.A = h::upload(hd.A, dt);
    d.B = h::upload(hd.B, dt);
    d.w.A = d.A.get();
    d.w.B = d.B.get();
  }
  d.w.s = d.s.as<float>();
  d.w.b = d.b.as<float>();
  d.w.out = hd.p.out;
  d.w.in = hd.p.in;
  d.w.rank = hd.p.rank;
  d.w.group_size = hd.p.group_size;
  d.w.bits = hd.p.bits;
  d.w.lora_scale = static_cast<float>(hd.p.lora_scale);
  return d;
}

struct Grads {
  h::DeviceBuffer dX, dA, dB, ds, db, dW;
  FakeQuantGrads g;
  Grads(const Problem& c, DType dt, bool with_dw)
      : dX(c.tokens * c.in * h::dtype_size(dt)), dA(c.rank * c.in * 4), dB(c.out * c.rank * 4),
        ds(c.out * (c.in / c.gs) * 4), db(c.out * (c.in / c.gs) * 4),
        dW(with_dw ? c.out * c.in * 4 : 0) {
    g.dX = dX.get();
    g.dA = c.rank ? dA.as<float>() : nullptr;
    g.dB = c.rank ? dB.as<float>() : nullptr;
    g.ds = ds.as<float>();
    g.db = db.as<float>();
    g.dW = with_dw ? dW.as<float>() : nullptr;
  }
};

void verify() {
  const std::vector<Problem> shapes = {{7, 13, 40, 8, 3, 3},     {130, 129, 96, 32, 16, 4},
                                       {64, 256, 256, 128, 0, 4}, {33, 70, 160, 160, 5, 2},
                                       {200, 64, 512, 256, 64, 8}, {5, 19, 36, 12, 2, 3}};
  Verifier v;
  std::mt19937_64 rng(3);
  for (DType dt : {DType::F32, DType::BF16})
    for (const auto& c : shapes) {
      const auto hd = make_host(c, dt, rng);
      auto d = upload(hd, dt);
      Grads gr(c, dt, /*with_dw=*/true);
      h::check(fake_quant_matmul_backward(d.w, d.X.get(), d.dY.get(), c.tokens, 0.25f, gr.g, nullptr),
               "backward");
      h::check(cudaDeviceSynchronize(), "sync");
      const float* a = c.rank ? hd.A.data() : nullptr;
      const float* b = c.rank ? hd.B.data() : nullptr;
      const auto r = l4q::kernels::ref::backward<float>(hd.p, hd.X.data(), hd.dY.data(), hd.W0.data(), a, b,
                                                   hd.s.data(), hd.b.data());
      const int64_t groups = c.in / c.gs;
      char head[120];
      std::snprintf(head, sizeof head, "%s T %ld out %ld in %ld gs %ld r %ld %d-bit", to_string(dt),
                    long(c.tokens), long(c.out), long(c.in), long(c.gs), long(c.rank), c.bits);
      auto rep = [&](const char* name, const h::DeviceBuffer& buf, size_t n, DType t,
                     const std::vector<float>& ref, double tol) {
        v.report(std::string(head) + "  " + name, h::rel_err(h::download(buf.get(), n, t), ref), tol);
      };
      rep("dX", gr.dX, c.tokens * c.in, dt, r.dX, dt == DType::BF16 ? 1e-2 : 2e-5);
      rep("ds", gr.ds, c.out * groups, DType::F32, r.ds, 1e-4);
      rep("db", gr.db, c.out * groups, DType::F32, r.db, 1e-4);
      rep("dW", gr.dW, c.out * c.in, DType::F32, r.dW, 1e-4);
      if (c.rank) {
        rep("dA", gr.dA, c.rank * c.in, DType::F32, r.dA, 1e-4);
        rep("dB", gr.dB, c.out * c.rank, DType::F32, r.dB, 1e-4);
      }
    }
  v.finish(kTool);
}

void time_at(const Problem& c, DType dt, int reps) {
  std::mt19937_64 rng(4);
  const auto hd = make_host(c, dt, rng);
  auto d = upload(hd, dt);
  const size_t es = h::dtype_size(dt);
  Grads gr(c, dt, /*with_dw=*/false);
  h::DeviceBuffer Y(c.tokens * c.out * es), Wq(c.out * c.in * es), G(c.out * c.in * 4);
  const double gemm = 2.0 * c.tokens * c.out * c.in;
  const double io_fwd = (c.tokens * c.in + c.out * c.in + c.tokens * c.out) * es;
  Blas blas;
  const int T = static_cast<int>(c.tokens), O = static_cast<int>(c.out), I = static_cast<int>(c.in);
  const auto compute = dt == DType::BF16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
  h::check(fake_quant_weight(d.w, Wq.get(), nullptr), "fake_quant_weight");
  std::vector<Row> rows;
  rows.push_back({"fused forward", h::time_ms([&] {
                    h::check(fake_quant_matmul_forward(d.w, d.X.get(), Y.get(), c.tokens, nullptr), "forward");
                  }, reps, nullptr), gemm, io_fwd});
  rows.push_back({"fused backward (dX, dA, dB, ds, db)", h::time_ms([&] {
                    h::check(fake_quant_matmul_backward(d.w, d.X.get(), d.dY.get(), c.tokens, 0.25f, gr.g, nullptr), "backward");
                  }, reps, nullptr), 2 * gemm, 2 * io_fwd});
  FakeQuantGrads weights_only = gr.g;
  weights_only.dX = nullptr;
  rows.push_back({"fused backward, weight gradients only", h::time_ms([&] {
                    h::check(fake_quant_matmul_backward(d.w, d.X.get(), d.dY.get(), c.tokens, 0.25f, weights_only, nullptr), "backward");
                  }, reps, nullptr), gemm, io_fwd});
  FakeQuantGrads dx_only;
  dx_only.dX = gr.g.dX;
  rows.push_back({"fused backward, dX only", h::time_ms([&] {
                    h::check(fake_quant_matmul_backward(d.w, d.X.get(), d.dY.get(), c.tokens, 0.25f, dx_only, nullptr), "backward");
                  }, reps, nullptr), gemm, io_fwd});
  rows.push_back({"cuBLAS dX + G GEMMs on a ready W_q (bound)", h::time_ms([&] {
                    blas.ab(d.dY.get(), Wq.get(), gr.g.dX, T, I, O, blas_type(dt), blas_type(dt), compute);
                    blas.atb(d.dY.get(), d.X.get(), G.get(), O, I, T, blas_type(dt), CUDA_R_32F, compute);
                  }, reps, nullptr), 2 * gemm, 2 * io_fwd + c.out * c.in * 4.0});
  char title[200];
  std::snprintf(title, sizeof title, "%s backward, tokens %ld out %ld in %ld, rank %ld, group %ld, %d-bit (%d reps, L2 flushed)",
                to_string(dt), long(c.tokens), long(c.out), long(c.in), long(c.rank), long(c.gs), c.bits, reps);
  print_table(title, rows);
  std::printf("  backward / forward = %.2f (target <= 2.2)\n", rows[1].ms / rows[0].ms);
  std::printf("  an unfused backward also allocates G (%.0f MB fp32), the mask (%.0f MB) and W_q (%.0f MB); "
              "the fused one allocates none of them\n\n",
              c.out * c.in * 4 / 1e6, c.out * c.in / 1e6, c.out * c.in * es / 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  require_device(kTool);
  try {
    verify();
    const Problem c{arg_int(argc, argv, "--tokens", 2048), arg_int(argc, argv, "--out", 11008),
                    arg_int(argc, argv, "--in", 4096),     arg_int(argc, argv, "--gs", 128),
                    arg_int(argc, argv, "--rank", 16),     arg_int(argc, argv, "--bits", 4)};
    time_at(c, DType::BF16, arg_int(argc, argv, "--reps", 10));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kTool, e.what());
    return 1;
  }
  return 0;
}
