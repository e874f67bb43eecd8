// The CUDA kernels against their CPU references (kernels/reference/), on shapes that are and are
// not multiples of the tiles, in fp32 and bf16. Tests that need a device skip with the reason
// when there is none; the argument checks run everywhere (they return before touching the GPU).
//
// Inputs: the weight side (W0, A, B, b, and power-of-two or arbitrary s) is "dyadic", so the
// merged weight is exact in fp32 on both sides and the kernels and the reference agree on every
// code, every mask bit and every W_q bit; the activations are random normals, so the comparisons
// measure the GEMM accumulation error, with the tolerances below:
//   fp32 (3xTF32 tensor cores):      outputs 2e-5, weight gradients 1e-4   (normwise)
//   bf16 (bf16 MMA, fp32 accumulate): bf16 outputs 1e-2 (output rounding 2^-9 per element),
//                                    fp32 weight gradients 1e-4
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "harness/harness.h"
#include "l4q/kernels.h"
#include "reference/fake_quant_matmul_ref.h"
#include "reference/packed_matmul_ref.h"

namespace l4q::kernels {
namespace {

namespace h = harness;

const std::string& no_device() {
  static const std::string reason = h::no_device_reason();
  return reason;
}

#define REQUIRE_DEVICE()                                          \
  do {                                                            \
    if (!no_device().empty()) GTEST_SKIP() << no_device();        \
  } while (0)

struct FqCase {
  int64_t tokens, out, in, gs, rank;
  int bits;
};

std::ostream& operator<<(std::ostream& os, const FqCase& c) {
  return os << "tokens " << c.tokens << " out " << c.out << " in " << c.in << " gs " << c.gs
            << " rank " << c.rank << " bits " << c.bits;
}

// Shapes: ragged against every tile (128 x 128 x 32, 64 x 64 x 32, backward 64 x 128 x 32),
// group sizes below, equal to and above the tile widths, ranks 0, small, 16 and the maximum.
const std::vector<FqCase>& fq_cases() {
  static const std::vector<FqCase> cs = {
      {7, 13, 40, 8, 3, 3},        // tiny, 5 groups of 8 per row (per-element path)
      {130, 129, 96, 32, 16, 4},   // one past the tiles
      {64, 256, 256, 128, 0, 4},   // no LoRA, whole tiles
      {33, 70, 160, 160, 5, 2},    // per-channel group spanning two k-tiles
      {200, 64, 512, 256, 64, 8},  // maximum rank, group > backward tile
      {5, 19, 36, 12, 2, 3},       // rows not 16-byte aligned in bf16 or fp32 (scalar copies)
  };
  return cs;
}

struct FqHost {
  ref::FakeQuantProblem p;
  std::vector<float> X, W0, A, B, s, b, dY;
};

FqHost make_fq(const FqCase& c, DType dt, uint64_t seed, bool dyadic_weights = true) {
  std::mt19937_64 rng(seed);
  FqHost d;
  d.p.tokens = c.tokens;
  d.p.out = c.out;
  d.p.in = c.in;
  d.p.rank = c.rank;
  d.p.group_size = c.gs;
  d.p.bits = c.bits;
  d.p.lora_scale = 0.5;
  d.p.grad_scale = 0.25;
  d.p.round_wq_bf16 = dt == DType::BF16;
  d.X = h::as_dtype(h::normal(c.tokens * c.in, 1.f, rng), dt);
  d.dY = h::as_dtype(h::normal(c.tokens * c.out, 1.f, rng), dt);
  const int64_t groups = c.in / c.gs;
  if (dyadic_weights) {
    d.W0 = h::dyadic(c.out * c.in, 16, 4, rng);
    d.A = h::dyadic(c.rank * c.in, 8, 3, rng);
    d.B = h::dyadic(c.out * c.rank, 8, 3, rng);
    d.b = h::dyadic(c.out * groups, 4, 6, rng);
  } else {
    d.W0 = h::as_dtype(h::normal(c.out * c.in, 0.5f, rng), dt);
    d.A = h::as_dtype(h::normal(c.rank * c.in, 0.3f, rng), dt);
    d.B = h::as_dtype(h::normal(c.out * c.rank, 0.3f, rng), dt);
    d.b = h::normal(c.out * groups, 0.01f, rng);
  }
  // Steps: 1/8 and 1/16 (exact ties and clamp-bound hits) and an arbitrary 0.0123 (inexact
  // division, identical on both sides because the dividend is).
  std::uniform_int_distribution<int> pick(0, 2);
  const float steps[] = {0.125f, 0.0625f, 0.0123f};
  d.s.resize(c.out * groups);
  for (auto& x : d.s) x = steps[pick(rng)] * (c.bits == 8 ? 0.0625f : 1.f);
  return d;
}

struct FqDevice {
  h::DeviceBuffer X, W0, A, B, s, b, dY;
  FakeQuantWeight w;
};

FqDevice upload_fq(const FqHost& d, DType dt) {
  FqDevice g;
  g.X = h::upload(d.X, dt);
  g.dY = h::upload(d.dY, dt);
  g.W0 = h::upload(d.W0, dt);
  g.s = h::upload(d.s, DType::F32);
  g.b = h::upload(d.b, DType::F32);
  g.w.dtype = dt;
  g.w.W0 = g.W0.get();
  if (d.p.rank > 0) {
    g.A = h::upload(d.A, dt);
    g.B = h::upload(d.B, dt);
    g.w.A = g.A.get();
    g.w.B = g.B.get();
  }
  g.w.s = g.s.as<float>();
  g.w.b = g.b.as<float>();
  g.w.out = d.p.out;
  g.w.in = d.p.in;
  g.w.rank = d.p.rank;
  g.w.group_size = d.p.group_size;
  g.w.bits = d.p.bits;
  g.w.lora_scale = static_cast<float>(d.p.lora_scale);
  return g;
}

const float* ptr_or_null(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

double out_tol(DType dt) { return dt == DType::BF16 ? 1e-2 : 2e-5; }
constexpr double kGradTol = 1e-4;

TEST(KernelsGpu, FakeQuantForwardMatchesReference) {
  REQUIRE_DEVICE();
  for (DType dt : {DType::F32, DType::BF16})
    for (const auto& c : fq_cases()) {
      SCOPED_TRACE(testing::Message() << to_string(dt) << " " << c);
      const auto d = make_fq(c, dt, 1000 + c.out);
      auto g = upload_fq(d, dt);
      h::DeviceBuffer Y(c.tokens * c.out * h::dtype_size(dt));
      h::check(fake_quant_matmul_forward(g.w, g.X.get(), Y.get(), c.tokens, nullptr), "forward");
      h::check(cudaDeviceSynchronize(), "sync");
      const auto y = h::download(Y.get(), c.tokens * c.out, dt);
      const auto yr = ref::forward<float>(d.p, d.X.data(), d.W0.data(), ptr_or_null(d.A),
                                          ptr_or_null(d.B), d.s.data(), d.b.data());
      EXPECT_LT(h::rel_err(y, yr), out_tol(dt));
    }
}

TEST(KernelsGpu, FakeQuantForwardWithMisalignedActivations) {
  REQUIRE_DEVICE();
  // X starting one element past an allocation: the 16-byte copy path must step aside.
  const FqCase c{9, 40, 64, 32, 4, 4};
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(to_string(dt));
    const auto d = make_fq(c, dt, 77);
    auto g = upload_fq(d, dt);
    std::vector<float> shifted(d.X.size() + 1, 0.f);
    std::copy(d.X.begin(), d.X.end(), shifted.begin() + 1);
    const auto Xs = h::upload(shifted, dt);
    const auto* x1 = static_cast<const char*>(Xs.get()) + h::dtype_size(dt);
    h::DeviceBuffer Y(c.tokens * c.out * h::dtype_size(dt));
    h::check(fake_quant_matmul_forward(g.w, x1, Y.get(), c.tokens, nullptr), "forward");
    h::check(cudaDeviceSynchronize(), "sync");
    const auto yr = ref::forward<float>(d.p, d.X.data(), d.W0.data(), d.A.data(), d.B.data(),
                                        d.s.data(), d.b.data());
    EXPECT_LT(h::rel_err(h::download(Y.get(), c.tokens * c.out, dt), yr), out_tol(dt));
  }
}

TEST(KernelsGpu, FakeQuantBackwardMatchesReference) {
  REQUIRE_DEVICE();
  for (DType dt : {DType::F32, DType::BF16})
    for (const auto& c : fq_cases()) {
      SCOPED_TRACE(testing::Message() << to_string(dt) << " " << c);
      const auto d = make_fq(c, dt, 2000 + c.out);
      auto g = upload_fq(d, dt);
      const int64_t groups = c.in / c.gs;
      h::DeviceBuffer dX(c.tokens * c.in * h::dtype_size(dt)), dA(c.rank * c.in * 4),
          dB(c.out * c.rank * 4), ds(c.out * groups * 4), db(c.out * groups * 4),
          dW(c.out * c.in * 4);
      FakeQuantGrads gr;
      gr.dX = dX.get();
      gr.dA = c.rank ? dA.as<float>() : nullptr;
      gr.dB = c.rank ? dB.as<float>() : nullptr;
      gr.ds = ds.as<float>();
      gr.db = db.as<float>();
      gr.dW = dW.as<float>();
      h::check(fake_quant_matmul_backward(g.w, g.X.get(), g.dY.get(), c.tokens,
                                          static_cast<float>(d.p.grad_scale), gr, nullptr),
               "backward");
      h::check(cudaDeviceSynchronize(), "sync");
      const auto r = ref::backward<float>(d.p, d.X.data(), d.dY.data(), d.W0.data(),
                                          ptr_or_null(d.A), ptr_or_null(d.B), d.s.data(),
                                          d.b.data());
      EXPECT_LT(h::rel_err(h::download(dX.get(), c.tokens * c.in, dt), r.dX), out_tol(dt)) << "dX";
      EXPECT_LT(h::rel_err(h::download(ds.get(), c.out * groups, DType::F32), r.ds), kGradTol)
          << "ds";
      EXPECT_LT(h::rel_err(h::download(db.get(), c.out * groups, DType::F32), r.db), kGradTol)
          << "db";
      EXPECT_LT(h::rel_err(h::download(dW.get(), c.out * c.in, DType::F32), r.dW), kGradTol)
          << "dW";
      if (c.rank) {
        EXPECT_LT(h::rel_err(h::download(dA.get(), c.rank * c.in, DType::F32), r.dA), kGradTol)
            << "dA";
        EXPECT_LT(h::rel_err(h::download(dB.get(), c.out * c.rank, DType::F32), r.dB), kGradTol)
            << "dB";
      }
    }
}

TEST(KernelsGpu, FakeQuantWeightIsBitExact) {
  REQUIRE_DEVICE();
  for (DType dt : {DType::F32, DType::BF16})
    for (const auto& c : fq_cases()) {
      SCOPED_TRACE(testing::Message() << to_string(dt) << " " << c);
      const auto d = make_fq(c, dt, 3000 + c.out);
      auto g = upload_fq(d, dt);
      h::DeviceBuffer Wq(c.out * c.in * h::dtype_size(dt));
      h::check(fake_quant_weight(g.w, Wq.get(), nullptr), "fake_quant_weight");
      h::check(cudaDeviceSynchronize(), "sync");
      const auto got = h::download(Wq.get(), c.out * c.in, dt);
      const auto Wc = ref::merged_weight<float>(d.p, d.W0.data(), ptr_or_null(d.A), ptr_or_null(d.B));
      const auto q = ref::quantize_weight<float>(d.p, Wc.data(), d.s.data(), d.b.data());
      int64_t differ = 0;
      for (size_t k = 0; k < got.size(); ++k) differ += got[k] != q.Wq[k];
      EXPECT_EQ(differ, 0);
    }
}

// Random (non-dyadic) weights: the merged weight now depends on summation order, so a code may
// flip at an exact rounding tie. Compare the fused forward with the product of the unfused
// kernel's own W_q, and bound the code flips against the CPU reference.
TEST(KernelsGpu, FusedForwardAgreesWithUnfusedOnRandomWeights) {
  REQUIRE_DEVICE();
  const FqCase c{96, 200, 256, 64, 16, 4};
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(to_string(dt));
    const auto d = make_fq(c, dt, 4000, /*dyadic_weights=*/false);
    auto g = upload_fq(d, dt);
    h::DeviceBuffer Y(c.tokens * c.out * h::dtype_size(dt)), Wq(c.out * c.in * h::dtype_size(dt));
    h::check(fake_quant_matmul_forward(g.w, g.X.get(), Y.get(), c.tokens, nullptr), "forward");
    h::check(fake_quant_weight(g.w, Wq.get(), nullptr), "fake_quant_weight");
    h::check(cudaDeviceSynchronize(), "sync");
    const auto wq = h::download(Wq.get(), c.out * c.in, dt);
    std::vector<double> yr(c.tokens * c.out);
    for (int64_t t = 0; t < c.tokens; ++t)
      for (int64_t o = 0; o < c.out; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < c.in; ++i) acc += double(d.X[t * c.in + i]) * wq[o * c.in + i];
        yr[t * c.out + o] = acc;
      }
    EXPECT_LT(h::rel_err(h::download(Y.get(), c.tokens * c.out, dt), yr), out_tol(dt));
    const auto Wc = ref::merged_weight<float>(d.p, d.W0.data(), d.A.data(), d.B.data());
    const auto q = ref::quantize_weight<float>(d.p, Wc.data(), d.s.data(), d.b.data());
    int64_t flips = 0;
    for (size_t k = 0; k < wq.size(); ++k) flips += wq[k] != q.Wq[k];
    EXPECT_LE(flips, static_cast<int64_t>(wq.size() / 1000));
  }
}

struct PackedCase {
  int64_t out, in, gs;
};

TEST(KernelsGpu, PackedGemvAndGemmMatchReference) {
  REQUIRE_DEVICE();
  const std::vector<PackedCase> shapes = {{13, 64, 32}, {129, 256, 128}, {300, 96, 96}};
  for (int bits : {2, 3, 4})
    for (const auto& c : shapes) {
      std::mt19937_64 rng(bits * 100 + c.out);
      const int64_t groups = c.in / c.gs;
      std::uniform_int_distribution<int> code(qmath::grid_min(bits), qmath::grid_max(bits));
      std::vector<int8_t> w_int(c.out * c.in);
      for (auto& q : w_int) q = static_cast<int8_t>(code(rng));
      auto s = h::normal(c.out * groups, 0.02f, rng);
      for (auto& x : s) x = std::abs(x) + 1e-3f;
      const auto b = h::normal(c.out * groups, 0.01f, rng);
      const auto m = ref::pack_l4q_weight(bits, w_int.data(), s.data(), b.data(), c.out, c.in, c.gs);
      const auto blocks = h::upload_raw(m.blocks);
      const auto step = h::upload(m.step, DType::F32), mn = h::upload(m.min, DType::F32);
      PackedWeight pw;
      pw.type = m.type;
      pw.blocks = blocks.get();
      pw.step = step.as<float>();
      pw.min = mn.as<float>();
      pw.out = c.out;
      pw.in = c.in;
      pw.group_size = c.gs;
      for (DType dt : {DType::F32, DType::BF16})
        for (int64_t tokens : {1, 3, 8, 37, 200}) {
          const bool gemv = tokens <= kMaxGemvTokens;
          if (!gemv && dt == DType::F32) continue;  // the GEMM is bf16 only
          SCOPED_TRACE(testing::Message() << bits << "-bit out " << c.out << " in " << c.in
                                          << " gs " << c.gs << " " << to_string(dt) << " tokens "
                                          << tokens);
          const auto x = h::as_dtype(h::normal(tokens * c.in, 1.f, rng), dt);
          const auto X = h::upload(x, dt);
          h::DeviceBuffer Y(tokens * c.out * h::dtype_size(dt));
          h::check(packed_matmul(pw, dt, X.get(), Y.get(), tokens, nullptr), "packed_matmul");
          h::check(cudaDeviceSynchronize(), "sync");
          // The GEMM multiplies a bf16-rounded weight; the GEMV never rounds it.
          const auto yr = ref::matmul(m, x.data(), tokens, /*round_w_bf16=*/!gemv);
          EXPECT_LT(h::rel_err(h::download(Y.get(), tokens * c.out, dt), yr),
                    dt == DType::BF16 ? 1e-2 : 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Argument checks: no device needed.
// ---------------------------------------------------------------------------------------

void expect_invalid(const Status& s, const char* fragment) {
  EXPECT_EQ(s.code, cudaErrorInvalidValue);
  EXPECT_NE(std::string(s.what).find(fragment), std::string::npos)
      << "'" << s.what << "' lacks '" << fragment << "'";
}

TEST(KernelsArgs, FakeQuantLaunchersRejectBadArguments) {
  float dummy[4] = {};
  FakeQuantWeight w;
  w.dtype = DType::F32;
  w.W0 = dummy;
  w.s = dummy;
  w.b = dummy;
  w.out = 2;
  w.in = 4;
  w.group_size = 2;
  auto fwd = [&](const FakeQuantWeight& x) {
    return fake_quant_matmul_forward(x, dummy, dummy, 1, nullptr);
  };
  auto bad = w;
  bad.bits = 9;
  expect_invalid(fwd(bad), "bits");
  bad = w;
  bad.group_size = 3;
  expect_invalid(fwd(bad), "group_size");
  bad = w;
  bad.A = dummy;  // A without B
  bad.rank = 1;
  expect_invalid(fwd(bad), "A, B and rank");
  bad = w;
  bad.A = bad.B = dummy;
  bad.rank = 65;
  expect_invalid(fwd(bad), "rank <= 64");
  bad = w;
  bad.W0 = nullptr;
  expect_invalid(fwd(bad), "non-null");
  expect_invalid(fake_quant_matmul_forward(w, dummy, dummy, -1, nullptr), "tokens");
  FakeQuantGrads g;
  g.dA = dummy;
  expect_invalid(fake_quant_matmul_backward(w, dummy, dummy, 1, 1.f, g, nullptr), "rank 0");
  expect_invalid(fake_quant_weight(w, nullptr, nullptr), "Wq");
}

TEST(KernelsArgs, PackedLaunchersRejectBadArguments) {
  alignas(16) float dummy[8] = {};
  PackedWeight w;
  w.blocks = dummy;
  w.step = dummy;
  w.min = dummy;
  w.out = 4;
  w.in = 64;
  w.group_size = 32;
  auto bad = w;
  bad.in = 40;
  expect_invalid(packed_gemv(bad, DType::F32, dummy, dummy, 1, nullptr), "multiples of 32");
  bad = w;
  bad.group_size = 48;
  expect_invalid(packed_gemm(bad, DType::BF16, dummy, dummy, 9, nullptr), "group_size");
  expect_invalid(packed_gemv(w, DType::F32, dummy, dummy, kMaxGemvTokens + 1, nullptr),
                 "packed_gemm");
  expect_invalid(packed_gemm(w, DType::F32, dummy, dummy, 16, nullptr), "BF16");
  bad = w;
  bad.blocks = reinterpret_cast<const char*>(dummy) + 4;
  expect_invalid(packed_gemv(bad, DType::F32, dummy, dummy, 1, nullptr), "16-byte");
  bad = w;
  bad.type = static_cast<packed::PackedType>(7);
  expect_invalid(packed_gemv(bad, DType::F32, dummy, dummy, 1, nullptr), "type");
}

}  // namespace
}  // namespace l4q::kernels

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const auto& reason = l4q::kernels::no_device();
  if (!reason.empty())
    std::printf("l4q_kernel_gpu_tests: no usable CUDA device (%s): the kernel tests are skipped, "
                "the argument checks run.\n",
                reason.c_str());
  return RUN_ALL_TESTS();
}
