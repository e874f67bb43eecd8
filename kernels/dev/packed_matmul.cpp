// Checker for the packed low-bit matmul (GEMV for decode, GEMM for prefill).
//
//   l4q_check_packed_matmul [--out 11008 --in 4096 --gs 128 --prefill 2048 --reps 50]
//
// 1. Verifies packed_gemv (1, 4, 8 tokens; fp32 and bf16) and packed_gemm (37 and 256 tokens,
//    bf16) against the CPU reference for u2, u3 and u4 on ragged shapes (exit 1 on a mismatch).
// 2. Times the GEMV at out x in and in x out (the up and down projections) for each format with
//    the L2 flushed before every repetition (a u4 7B projection fits in an H100's L2), and reports
//    bytes moved, GB/s and the fraction of the peak DRAM bandwidth; then the prefill GEMM against
//    cuBLAS bf16 on the dequantized weight.
// Target (docs/kernels.md): u4 GEMV >= 70 % of the memory bandwidth on an H100.
#include <random>

#include "dev_common.h"
#include "reference/packed_matmul_ref.h"

using namespace l4q::kernels;
using namespace l4q::kernels::dev;

namespace {

const char* kTool = "l4q_check_packed_matmul";

struct Packed {
  l4q::kernels::ref::PackedMatrix m;
  h::DeviceBuffer blocks, step, min;
  PackedWeight w;
};

Packed make(int bits, int64_t out, int64_t in, int64_t gs, std::mt19937_64& rng) {
  const int64_t groups = in / gs;
  std::uniform_int_distribution<int> code(l4q::qmath::grid_min(bits), l4q::qmath::grid_max(bits));
  std::vector<int8_t> w_int(out * in);
  for (auto& q : w_int) q = static_cast<int8_t>(code(rng));
  auto s = h::normal(out * groups, 0.02f, rng);
  for (auto& x : s) x = std::abs(x) + 1e-3f;
  const auto b = h::normal(out * groups, 0.01f, rng);
  Packed p;
  p.m = l4q::kernels::ref::pack_l4q_weight(bits, w_int.data(), s.data(), b.data(), out, in, gs);
  p.blocks = h::upload_raw(p.m.blocks);
  p.step = h::upload(p.m.step, DType::F32);
  p.min = h::upload(p.m.min, DType::F32);
  p.w.type = p.m.type;
  p.w.blocks = p.blocks.get();
  p.w.step = p.step.as<float>();
  p.w.min = p.min.as<float>();
  p.w.out = out;
  p.w.in = in;
  p.w.group_size = gs;
  return p;
}

void verify() {
  Verifier v;
  std::mt19937_64 rng(5);
  struct Shape {
    int64_t out, in, gs;
  };
  for (int bits : {2, 3, 4})
    for (const Shape& c : {Shape{13, 64, 32}, Shape{129, 256, 128}, Shape{300, 96, 96}}) {
      auto p = make(bits, c.out, c.in, c.gs, rng);
      for (DType dt : {DType::F32, DType::BF16})
        for (int64_t tokens : {1, 4, 8, 37, 256}) {
          const bool gemv = tokens <= kMaxGemvTokens;
          if (!gemv && dt == DType::F32) continue;
          const auto x = h::as_dtype(h::normal(tokens * c.in, 1.f, rng), dt);
          const auto X = h::upload(x, dt);
          h::DeviceBuffer Y(tokens * c.out * h::dtype_size(dt));
          h::check(packed_matmul(p.w, dt, X.get(), Y.get(), tokens, nullptr), "packed_matmul");
          h::check(cudaDeviceSynchronize(), "sync");
          const auto yr = l4q::kernels::ref::matmul(p.m, x.data(), tokens, !gemv);
          char what[160];
          std::snprintf(what, sizeof what, "u%d %s %s  tokens %ld out %ld in %ld gs %ld", bits,
                        gemv ? "gemv" : "gemm", to_string(dt), long(tokens), long(c.out),
                        long(c.in), long(c.gs));
          v.report(what, h::rel_err(h::download(Y.get(), tokens * c.out, dt), yr),
                   dt == DType::BF16 ? 1e-2 : 1e-5);
        }
    }
  v.finish(kTool);
}

void time_gemv(int64_t out, int64_t in, int64_t gs, int reps) {
  std::mt19937_64 rng(6);
  const double peak = peak_bandwidth();
  std::printf("packed GEMV, 1 token, bf16 activations, out %ld in %ld group %ld (%d reps, L2 flushed)\n",
              long(out), long(in), long(gs), reps);
  std::printf("  %-8s %10s %10s %9s %10s\n", "format", "us", "MB read", "GB/s", "of peak");
  for (int bits : {4, 3, 2}) {
    auto p = make(bits, out, in, gs, rng);
    const auto X = h::upload(h::normal(in, 1.f, rng), DType::BF16);
    h::DeviceBuffer Y(out * 2);
    const double bytes = p.m.blocks.size() + 8.0 * p.m.step.size() + 2.0 * in + 2.0 * out;
    const float ms = h::time_ms([&] {
      h::check(packed_gemv(p.w, DType::BF16, X.get(), Y.get(), 1, nullptr), "packed_gemv");
    }, reps, nullptr);
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("  u%-7d %10.2f %10.2f %9.1f %9.1f%%\n", bits, ms * 1e3, bytes / 1e6, gbs,
                peak > 0 ? 100.0 * gbs * 1e9 / peak : 0.0);
  }
  std::printf("\n");
}

void time_gemm(int64_t tokens, int64_t out, int64_t in, int64_t gs, int reps) {
  std::mt19937_64 rng(7);
  auto p = make(4, out, in, gs, rng);
  const auto W = h::upload(l4q::kernels::ref::dequantize(p.m, true), DType::BF16);
  const auto X = h::upload(h::normal(tokens * in, 1.f, rng), DType::BF16);
  h::DeviceBuffer Y(tokens * out * 2);
  Blas blas;
  const double flops = 2.0 * tokens * out * in;
  std::vector<Row> rows;
  rows.push_back({"cuBLAS bf16 GEMM, dequantized bf16 weight", h::time_ms([&] {
                    blas.abt(X.get(), W.get(), Y.get(), int(tokens), int(out), int(in), CUDA_R_16BF,
                             CUDA_R_16BF, CUBLAS_COMPUTE_32F);
                  }, reps, nullptr), flops, (tokens * in + out * in + tokens * out) * 2.0});
  rows.push_back({"packed_gemm u4", h::time_ms([&] {
                    h::check(packed_gemm(p.w, DType::BF16, X.get(), Y.get(), tokens, nullptr), "packed_gemm");
                  }, reps, nullptr), flops, (tokens * in + tokens * out) * 2.0 + p.m.blocks.size()});
  char title[160];
  std::snprintf(title, sizeof title, "packed prefill GEMM, tokens %ld out %ld in %ld group %ld",
                long(tokens), long(out), long(in), long(gs));
  print_table(title, rows);
}

}  // namespace

int main(int argc, char** argv) {
  require_device(kTool);
  try {
    verify();
    const int64_t out = arg_int(argc, argv, "--out", 11008), in = arg_int(argc, argv, "--in", 4096);
    const int64_t gs = arg_int(argc, argv, "--gs", 128);
    const int reps = arg_int(argc, argv, "--reps", 50);
    time_gemv(out, in, gs, reps);
    time_gemv(in, out, gs, reps);
    time_gemm(arg_int(argc, argv, "--prefill", 2048), out, in, gs, reps / 5 > 0 ? reps / 5 : 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kTool, e.what());
    return 1;
  }
  return 0;
}
