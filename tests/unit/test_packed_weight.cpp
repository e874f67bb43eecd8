// The l4q packed weight (include/l4q/infer/packed_weight.h) and the CPU packed matmul: exact bit
// layouts at 2, 3, 4 and 8 bits, lossless round trips against MergedWeight, rows that are not
// a multiple of 32, and the fused (scalar and AVX2) and tiled kernels against a float64
// reference.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <vector>

#include "l4q/infer/packed_linear.h"
#include "l4q/infer/packed_matmul.h"
#include "l4q/infer/packed_weight.h"
#include "l4q/quant/merged_weight.h"
#include "test_support.h"

namespace l4q {
namespace {

// A random merged weight: codes over the whole grid, positive steps, signed offsets.
MergedWeight random_merged(int bits, int64_t out, int64_t in, int64_t gs, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  QuantGrid grid;
  grid.bits = bits;
  grid.group_size = gs;
  const int64_t G = in / grid.group_size_for(in);
  auto w_int = at::randint(grid.qn(), grid.qp() + 1, {out, in}, gen, at::TensorOptions().dtype(at::kLong)).to(at::kChar);
  auto s = at::rand({out, G}, gen, at::TensorOptions().dtype(at::kFloat)) * 0.05 + 1e-3;
  auto b = at::randn({out, G}, gen, at::TensorOptions().dtype(at::kFloat)) * 0.01;
  grid.group_size = grid.group_size_for(in);
  return {w_int, s, b, grid};
}

// Code j (0..31) of block k of packed row `row`, spelled out from the layout description in
// docs/formats.md, independently of the packing code.
uint32_t documented_code(int bits, const uint8_t* row, int64_t k, int j) {
  switch (bits) {
    case 2: {
      const uint8_t* qs = row + k * 8;
      return (qs[j % 8] >> (2 * (j / 8))) & 3u;
    }
    case 3: {
      const uint8_t* ql = row + k * 12;
      const uint8_t* qh = ql + 8;
      return ((ql[j % 8] >> (2 * (j / 8))) & 3u) | (((qh[j / 8] >> (j % 8)) & 1u) << 2);
    }
    case 4: {
      const uint8_t* qs = row + k * 16;
      return j < 16 ? (qs[j] & 15u) : (qs[j - 16] >> 4);
    }
    default:
      return row[k * 32 + j];
  }
}

TEST(PackedWeight, BitLayoutsAndLosslessRoundTrip) {
  struct Case {
    int bits;
    int64_t out, in, gs;
  };
  // in 172 with one group per row: stories260K's down_proj; in 48: a partial last block.
  for (const auto& c : {Case{2, 5, 128, 32}, Case{3, 7, 256, 64}, Case{4, 6, 256, 128}, Case{8, 3, 64, 32},
                        Case{2, 4, 172, -1}, Case{3, 4, 172, -1}, Case{4, 4, 172, -1}, Case{8, 4, 172, -1},
                        Case{4, 3, 48, 16}, Case{3, 3, 96, 32}, Case{4, 2, 64, 8}}) {
    SCOPED_TRACE(testing::Message() << c.bits << "-bit " << c.out << "x" << c.in << " group " << c.gs);
    const auto m = random_merged(c.bits, c.out, c.in, c.gs, 17 + c.bits);
    const auto p = pack_weight(m, "test");
    EXPECT_EQ(p.qweight.scalar_type(), at::kByte);
    const int64_t nblk = (c.in + 31) / 32;
    ASSERT_EQ(p.qweight.size(1), nblk * 32 * c.bits / 8);
    EXPECT_EQ(packed_row_bytes(c.bits, c.in), nblk * 32 * c.bits / 8);
    // Every code where the documented layout puts it; zero codes in the row tail.
    const auto codes = m.unsigned_codes();
    for (int64_t o = 0; o < c.out; ++o) {
      const uint8_t* row = p.qweight.data_ptr<uint8_t>() + o * p.qweight.size(1);
      for (int64_t i = 0; i < nblk * 32; ++i) {
        const uint32_t expect = i < c.in ? codes[o][i].item<uint8_t>() : 0u;
        ASSERT_EQ(documented_code(c.bits, row, i / 32, static_cast<int>(i % 32)), expect) << "row " << o << " code " << i;
      }
    }
    // Lossless: W_q bit for bit, and the codes, steps and offsets back.
    EXPECT_TRUE(at::equal(p.dequantize(), m.dequantize()));
    const auto back = p.to_merged();
    EXPECT_TRUE(at::equal(back.w_int, m.w_int));
    EXPECT_TRUE(at::equal(back.s, m.s));
    EXPECT_TRUE(at::equal(back.b, m.b));
    EXPECT_EQ(back.grid.bits, c.bits);
    EXPECT_TRUE(at::equal(back.dequantize(), m.dequantize()));
    // The reader's constructor accepts what the writer made.
    const auto again = make_packed_weight(c.bits, c.out, c.in, p.group_size, p.qweight, p.scales, p.offsets, "t");
    EXPECT_TRUE(at::equal(again.dequantize(), m.dequantize()));
  }
}

TEST(PackedWeight, StepsAreStoredClampedLikeTraining) {
  auto m = random_merged(4, 2, 64, 32, 5);
  m.s[0][0] = 0.0f;  // training clamps to qmath::kMinStep
  const auto p = pack_weight(m, "t");
  EXPECT_EQ(p.scales[0][0].item<float>(), 1e-8f);
  EXPECT_TRUE(at::equal(p.dequantize(), m.dequantize()));
}

TEST(PackedWeight, RejectsUnsupportedInput) {
  for (int bits : {5, 6, 7}) {
    auto m = random_merged(bits, 2, 64, 32, 1);
    test::expect_error([&] { pack_weight(m, "layer x"); }, {"layer x", "2, 3, 4 or 8", std::to_string(bits)});
  }
  auto m = random_merged(4, 2, 64, 32, 1);
  m.w_int[1][3] = 9;  // outside [-8, 7]
  test::expect_error([&] { pack_weight(m, "t"); }, {"w_int[1, 3]", "9", "[-8, 7]"});
  const auto p = pack_weight(random_merged(4, 2, 64, 32, 1), "t");
  test::expect_error([&] { make_packed_weight(4, 2, 64, 32, p.qweight.narrow(1, 0, 16), p.scales, p.offsets, "f"); },
                     {"f", "qweight", "expected [2, 32]", "got [2, 16]"});
  test::expect_error([&] { make_packed_weight(4, 2, 64, 32, p.qweight, p.scales.to(at::kDouble), p.offsets, "f"); },
                     {"scales", "Float", "Double"});
  test::expect_error([&] { make_packed_weight(4, 2, 64, 48, p.qweight, p.scales, p.offsets, "f"); },
                     {"group_size 48", "64"});
  auto bad = p.scales.clone();
  bad[1][0] = std::numeric_limits<float>::quiet_NaN();
  test::expect_error([&] { make_packed_weight(4, 2, 64, 32, p.qweight, bad, p.offsets, "f"); }, {"scales", "finite"});
  test::expect_error([&] { make_packed_weight(5, 2, 64, 32, p.qweight, p.scales, p.offsets, "f"); }, {"2, 3, 4 or 8"});
}

// x [rows, in] W_q^T in float64.
at::Tensor reference(const MergedWeight& m, const at::Tensor& x) {
  return at::matmul(x.to(at::kDouble), m.dequantize().to(at::kDouble).t());
}

TEST(PackedMatmul, KernelsMatchAFloat64Reference) {
  struct Case {
    int64_t out, in, gs;
  };
  std::vector<PackedKernel> kernels = {PackedKernel::Scalar};
  if (packed_avx2_available()) kernels.push_back(PackedKernel::Avx2);
  for (int bits : {2, 3, 4, 8})
    for (const auto& c : {Case{37, 256, 32}, Case{19, 256, 128}, Case{16, 192, 64}, Case{11, 172, -1},
                          Case{9, 48, -1}, Case{8, 96, 32}, Case{5, 64, 16}}) {
      const auto m = random_merged(bits, c.out, c.in, c.gs, 100 + bits);
      const auto p = pack_weight(m, "t");
      for (int64_t rows : {1, 2, 3, 4, 5, 9}) {
        SCOPED_TRACE(testing::Message() << bits << "-bit " << c.out << "x" << c.in << " group " << c.gs
                                        << " rows " << rows);
        const auto x = at::randn({rows, c.in}, at::TensorOptions().dtype(at::kFloat));
        const auto ref = reference(m, x);
        for (auto k : kernels) {
          const auto y = packed_matmul(p, x, k);
          ASSERT_EQ(y.sizes(), (std::vector<int64_t>{rows, c.out}));
          EXPECT_LT(test::rel_err(y, ref), 1e-5) << "kernel " << static_cast<int>(k);
          if (packed_fused_supported(p)) {
            at::Tensor yf = at::empty({rows, c.out});
            packed_matmul_fused(p, x.data_ptr<float>(), rows, yf.data_ptr<float>(), k);
            EXPECT_LT(test::rel_err(yf, ref), 1e-5) << "fused kernel " << static_cast<int>(k);
          }
        }
      }
    }
}

TEST(PackedMatmul, Avx2AgreesWithTheScalarKernel) {
  if (!packed_avx2_available()) GTEST_SKIP() << "this CPU or build has no AVX2/FMA";
  at::manual_seed(11);  // x must not depend on which tests ran before
  for (int bits : {2, 3, 4, 8}) {
    const auto p = pack_weight(random_merged(bits, 64, 512, 128, 7), "t");
    const auto x = at::randn({3, 512});
    const auto a = packed_matmul(p, x, PackedKernel::Scalar), b = packed_matmul(p, x, PackedKernel::Avx2);
    // Dot products of length 512 summed in another order: fp32 rounding, a few 1e-7 relative
    // (1.03e-6 was seen once with an unseeded x). A wrong unpack or scale is off by far more.
    EXPECT_LT(test::rel_err(b, a), 4e-6) << bits;
  }
}

TEST(PackedLinear, ForwardBatchesAndBias) {
  const auto m = random_merged(4, 24, 128, 32, 9);
  const auto bias = at::randn({24});
  PackedLinear lin(pack_weight(m, "t"), bias);
  EXPECT_EQ(lin.in_features(), 128);
  EXPECT_EQ(lin.out_features(), 24);
  EXPECT_TRUE(at::equal(lin.effective_weight(), m.dequantize()));
  EXPECT_TRUE(at::equal(lin.quantized_weight()->w_int, m.w_int));
  for (int64_t t : {1, 2, 7}) {  // decode and prefill shapes
    const auto x = at::randn({2, t, 128});
    const auto y = lin.forward(x);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, t, 24}));
    const auto ref = reference(m, x.reshape({-1, 128})).reshape({2, t, 24}) + bias.to(at::kDouble);
    EXPECT_LT(test::rel_err(y, ref), 1e-5);
  }
  test::expect_error([&] { lin.forward(at::randn({2, 64})); }, {"x", "[..., 128]", "[2, 64]"});
  test::expect_error([&] { lin.forward(at::randn({2, 128}, at::kDouble)); }, {"fp32", "Double"});
}

}  // namespace
}  // namespace l4q
