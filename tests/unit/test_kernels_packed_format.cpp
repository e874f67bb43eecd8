// The packed low-bit layout (kernels/common/packed_format.h): block sizes, the traits table, the
// exact bit positions of every code, round trips, and the conversion from an L4Q layer's
// MergedWeight with the packed-matmul reference (kernels/reference/packed_matmul_ref.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/packed_format.h"
#include "l4q/nn/l4q_linear.h"
#include "l4q/quant/lsq.h"
#include "reference/packed_matmul_ref.h"
#include "test_support.h"

namespace l4q {
namespace {

using packed::PackedType;

TEST(KernelsPackedFormat, TraitsTableDescribesEveryFormat) {
  ASSERT_EQ(packed::kPackedTypeCount, 3);
  struct Expect {
    PackedType t;
    const char* name;
    int bits, bytes;
  };
  for (const auto& e : {Expect{PackedType::U2, "u2", 2, 8}, Expect{PackedType::U3, "u3", 3, 12},
                        Expect{PackedType::U4, "u4", 4, 16}}) {
    const auto& tr = packed::traits(e.t);
    EXPECT_EQ(tr.type, e.t);
    EXPECT_STREQ(tr.name, e.name);
    EXPECT_EQ(tr.bits, e.bits);
    EXPECT_EQ(tr.block_size, 32);
    EXPECT_EQ(tr.block_bytes, e.bytes);
    EXPECT_EQ(tr.block_bytes * 8, tr.bits * tr.block_size);  // no padding bits
    PackedType found;
    ASSERT_TRUE(packed::type_for_bits(e.bits, found));
    EXPECT_EQ(found, e.t);
  }
  PackedType unused;
  EXPECT_FALSE(packed::type_for_bits(5, unused));
  EXPECT_FALSE(packed::type_for_bits(8, unused));
  // The ids are part of the file format.
  EXPECT_EQ(static_cast<int>(PackedType::U2), 0);
  EXPECT_EQ(static_cast<int>(PackedType::U3), 1);
  EXPECT_EQ(static_cast<int>(PackedType::U4), 2);
}

std::vector<uint8_t> pack_one(PackedType t, const std::vector<uint8_t>& codes) {
  std::vector<uint8_t> blk(packed::traits(t).block_bytes, 0xAA);
  packed::traits(t).pack_ref(codes.data(), blk.data());
  return blk;
}

// Expected bytes written out from the layout description, independently of Format*::set.
TEST(KernelsPackedFormat, BitPositionsFollowTheDocumentedLayout) {
  // u4: byte j = code j | code (j + 16) << 4   (GGUF Q4_1 order).
  {
    std::vector<uint8_t> codes(32);
    for (int j = 0; j < 32; ++j) codes[j] = static_cast<uint8_t>((j * 7 + 3) % 16);
    const auto blk = pack_one(PackedType::U4, codes);
    for (int j = 0; j < 16; ++j)
      EXPECT_EQ(blk[j], codes[j] | (codes[j + 16] << 4)) << "u4 byte " << j;
  }
  // u2: byte j = code j | code (j+8) << 2 | code (j+16) << 4 | code (j+24) << 6.
  {
    std::vector<uint8_t> codes(32);
    for (int j = 0; j < 32; ++j) codes[j] = static_cast<uint8_t>((j * 5 + 1) % 4);
    const auto blk = pack_one(PackedType::U2, codes);
    for (int j = 0; j < 8; ++j)
      EXPECT_EQ(blk[j], codes[j] | (codes[j + 8] << 2) | (codes[j + 16] << 4) | (codes[j + 24] << 6))
          << "u2 byte " << j;
  }
  // u3: ql as u2 of the low two bits; bit 2 of code j is bit j % 8 of qh[j / 8].
  {
    std::vector<uint8_t> codes(32);
    for (int j = 0; j < 32; ++j) codes[j] = static_cast<uint8_t>((j * 3 + 2) % 8);
    const auto blk = pack_one(PackedType::U3, codes);
    for (int j = 0; j < 8; ++j) {
      int lo = 0;
      for (int k = 0; k < 4; ++k) lo |= (codes[j + 8 * k] & 3) << (2 * k);
      EXPECT_EQ(blk[j], lo) << "u3 ql " << j;
    }
    for (int j = 0; j < 4; ++j) {
      int hi = 0;
      for (int k = 0; k < 8; ++k) hi |= ((codes[8 * j + k] >> 2) & 1) << k;
      EXPECT_EQ(blk[8 + j], hi) << "u3 qh " << j;
    }
  }
}

TEST(KernelsPackedFormat, RowsRoundTripAndSetKeepsNeighbours) {
  std::mt19937 rng(5);
  for (const auto& tr : packed::kPackedTraits) {
    SCOPED_TRACE(tr.name);
    const int64_t rows = 3, in = 96;
    std::vector<uint8_t> codes(rows * in);
    for (auto& c : codes) c = static_cast<uint8_t>(rng() % (1u << tr.bits));
    std::vector<uint8_t> blocks(rows * packed::row_bytes(tr.type, in));
    EXPECT_EQ(blocks.size(), static_cast<size_t>(rows * in * tr.bits / 8));
    packed::pack_rows_ref(tr.type, codes.data(), rows, in, blocks.data());
    std::vector<uint8_t> back(codes.size(), 0xFF);
    packed::unpack_rows_ref(tr.type, blocks.data(), rows, in, back.data());
    EXPECT_EQ(back, codes);
  }
  // set() on one code leaves the 31 others alone, for every position and format.
  packed::BlockU3 b3;
  std::memset(&b3, 0xFF, sizeof b3);
  packed::FormatU3::set(b3, 13, 2);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(packed::FormatU3::get(b3, j), j == 13 ? 2u : 7u);
  packed::BlockU4 b4;
  std::memset(&b4, 0, sizeof b4);
  packed::FormatU4::set(b4, 20, 9);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(packed::FormatU4::get(b4, j), j == 20 ? 9u : 0u);
  packed::BlockU2 b2;
  std::memset(&b2, 0, sizeof b2);
  packed::FormatU2::set(b2, 31, 3);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(packed::FormatU2::get(b2, j), j == 31 ? 3u : 0u);
}

TEST(KernelsPackedFormat, ShapeChecksNameTheProblem) {
  EXPECT_EQ(packed::check_packed_shape(4096, 128), nullptr);
  EXPECT_EQ(packed::check_packed_shape(64, 64), nullptr);
  EXPECT_NE(std::string(packed::check_packed_shape(40, 40)).find("multiple of 32"),
            std::string::npos);
  EXPECT_NE(std::string(packed::check_packed_shape(128, 48)).find("group_size"), std::string::npos);
  EXPECT_NE(std::string(packed::check_packed_shape(96, 64)).find("divide"), std::string::npos);
}

// From a layer's MergedWeight to packed codes, step and min: bit-exact against the layer's own
// unsigned view, and the packed matmul reproduces the layer's forward.
TEST(KernelsPackedFormat, PackedL4QWeightMatchesMergedWeightAndForward) {
  for (int bits : {2, 3, 4}) {
    SCOPED_TRACE(testing::Message() << bits << "-bit");
    at::manual_seed(7 + bits);
    const int64_t out = 10, in = 128, gs = 64, tokens = 5;
    const QuantGrid grid{bits, gs};
    const auto W = at::randn({out, in}) * 0.5;
    auto so = init_step_offset(W, grid, LsqInit::MinMax);
    so.s = so.s * 0.9;
    const auto mw = quantize_weight(W, so.s, so.b, grid);
    const auto codes = mw.w_int.contiguous();
    const auto s = mw.s.contiguous(), b = mw.b.contiguous();
    const auto m = kernels::ref::pack_l4q_weight(bits, codes.data_ptr<int8_t>(), s.data_ptr<float>(),
                                                 b.data_ptr<float>(), out, in, gs);
    // Codes: unpack and compare with the layer's unsigned view.
    std::vector<uint8_t> q(out * in);
    packed::unpack_rows_ref(m.type, m.blocks.data(), out, in, q.data());
    const auto uq = mw.unsigned_codes().contiguous();
    EXPECT_EQ(0, std::memcmp(q.data(), uq.data_ptr<uint8_t>(), q.size()));
    // min = b + s * Qn, bit for bit.
    const auto mo = mw.min_offset().contiguous();
    EXPECT_EQ(0, std::memcmp(m.min.data(), mo.data_ptr<float>(), m.min.size() * sizeof(float)));
    // Forward: x W_q^T of the layer vs the packed matmul (q*s + m rounds differently from
    // w_int*s + b, by an ulp of the weight).
    const auto x = at::randn({tokens, in});
    const auto y = l4q_linear(x, W, at::Tensor(), at::Tensor(), so.s, so.b, at::Tensor(),
                              {grid, 1.0, 0.0, 256});
    const auto xc = x.contiguous();
    const auto yr = kernels::ref::matmul(m, xc.data_ptr<float>(), tokens);
    const auto yt = at::from_blob(const_cast<double*>(yr.data()), {tokens, out}, at::kDouble);
    EXPECT_LT(test::rel_err(y, yt), 1e-5);
    // The packed weight is the layer's weight to within an ulp.
    const auto Wp = kernels::ref::dequantize(m);
    const auto Wt = at::from_blob(const_cast<float*>(Wp.data()), {out, in}, at::kFloat);
    EXPECT_LT(test::rel_err(Wt, mw.dequantize()), 1e-6);
  }
}

}  // namespace
}  // namespace l4q
