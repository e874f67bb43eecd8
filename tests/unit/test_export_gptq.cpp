// GPTQ v2 export: the exact bit layouts (2/3/4/8-bit words, zero points as stored), the
// dequantized round trip, integer-offset training making it exact, and rejected layers.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "l4q/export/gptq_export.h"
#include "l4q/io/safetensors.h"
#include "test_export_support.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::RunOptions;
using test::synthetic_run;
using test::TempDir;

// Independent reference: GPTQ's packing of every width is one little-endian bit stream per
// column, `bits` bits per value (AutoGPTQ writes 3-bit values across word boundaries).
std::vector<uint32_t> bit_stream(const std::vector<uint32_t>& values, int bits) {
  std::vector<uint32_t> words(values.size() * bits / 32, 0);
  for (size_t i = 0; i < values.size(); ++i)
    for (int k = 0; k < bits; ++k)
      if ((values[i] >> k) & 1u) {
        const size_t bit = i * bits + k;
        words[bit / 32] |= 1u << (bit % 32);
      }
  return words;
}

class GptqPacking : public ::testing::TestWithParam<int> {};

TEST_P(GptqPacking, MatchesTheBitStreamLayoutAndUnpacks) {
  const int bits = GetParam();
  const int64_t rows = 96, cols = 3;
  auto v = at::randint(0, 1 << bits, {rows, cols}, at::TensorOptions().dtype(at::kLong));
  v[0][0] = (1 << bits) - 1;  // all ones somewhere, incl. the word-straddling 3-bit rows
  v[10][1] = (1 << bits) - 1;
  v[21][2] = (1 << bits) - 1;
  const auto packed = gptq_pack_rows(v, bits);
  ASSERT_EQ(packed.size(0), rows * bits / 32);
  ASSERT_EQ(packed.scalar_type(), at::kInt);
  for (int64_t c = 0; c < cols; ++c) {
    std::vector<uint32_t> col;
    for (int64_t r = 0; r < rows; ++r) col.push_back(static_cast<uint32_t>(v[r][c].item<int64_t>()));
    const auto ref = bit_stream(col, bits);
    for (size_t w = 0; w < ref.size(); ++w)
      EXPECT_EQ(static_cast<uint32_t>(packed[w][c].item<int32_t>()), ref[w]) << "word " << w << " col " << c;
  }
  EXPECT_TRUE(at::equal(gptq_unpack_rows(packed, bits, rows), v.to(at::kInt)));
}

INSTANTIATE_TEST_SUITE_P(Bits, GptqPacking, ::testing::Values(2, 3, 4, 8));

TEST(GptqPacking, KnownWords) {
  // 4-bit: values 0..7 down a column give AutoGPTQ's 0x76543210.
  auto v = at::arange(8, at::TensorOptions().dtype(at::kLong)).reshape({8, 1});
  EXPECT_EQ(static_cast<uint32_t>(gptq_pack_rows(v, 4)[0][0].item<int32_t>()), 0x76543210u);
  // 3-bit: v10 = 0b101 puts bits 0-1 at bits 30-31 of word 0 and bit 2 at bit 0 of word 1.
  auto t = at::zeros({32, 1}, at::TensorOptions().dtype(at::kLong));
  t[10][0] = 5;
  t[21][0] = 6;  // 0b110: bit 0 at bit 31 of word 1, bits 1-2 at bits 0-1 of word 2
  const auto p = gptq_pack_rows(t, 3);
  EXPECT_EQ(static_cast<uint32_t>(p[0][0].item<int32_t>()), 1u << 30);
  EXPECT_EQ(static_cast<uint32_t>(p[1][0].item<int32_t>()), 1u);
  EXPECT_EQ(static_cast<uint32_t>(p[2][0].item<int32_t>()), 3u);
  test::expect_error([&] { gptq_pack_rows(at::zeros({16, 1}, at::kLong), 3); }, {"16 rows", "multiple of 32"});
  test::expect_error([&] { gptq_pack_rows(at::full({8, 1}, 16, at::kLong), 4); }, {"expected [0, 15]"});
  test::expect_error([&] { gptq_pack_rows(at::zeros({8, 1}, at::kLong), 5); }, {"2, 3, 4 or 8 bits"});
}

RunOptions gptq_options(int bits, bool integer_offset) {
  RunOptions o;
  o.bits = bits;
  o.integer_offset = integer_offset;
  // stories260K's MLP (intermediate 172) cannot be packed: leave it float, as a GPTQ user
  // would.
  o.targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  return o;
}

struct GptqCase {
  int bits;
  bool integer_offset;
};

class GptqExport : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqExport, DequantizesToTheTrainedWeightsWithinTheReportedError) {
  const auto [bits, integer] = GetParam();
  const auto run = synthetic_run(gptq_options(bits, integer));
  TempDir tmp;
  const auto dir = tmp.file("gptq");
  const auto rep = export_gptq(run, dir, {});
  const int64_t layers = run.model->config().num_hidden_layers;
  EXPECT_EQ(rep.quantized_layers, 4 * layers);
  EXPECT_EQ(rep.float_layers, 3 * layers);
  if (integer) EXPECT_EQ(rep.max_offset_error, 0.0);
  else EXPECT_GT(rep.max_offset_error, 0.0);

  const auto f = SafetensorsFile::open(dir + "/model.safetensors");
  double worst = 0;
  for (const auto& [lname, lin] : run.model->named_linears()) {
    if (!lin->quantized_weight()) {
      EXPECT_TRUE(at::equal(f.tensor_f32(lname + ".weight"), lin->effective_weight()));
      continue;
    }
    GptqTensors t{f.tensor(lname + ".qweight"), f.tensor(lname + ".qzeros"), f.tensor(lname + ".scales"),
                  f.tensor(lname + ".g_idx")};
    EXPECT_EQ(t.scales.scalar_type(), at::kHalf);
    const int64_t in = lin->in_features(), out = lin->out_features();
    EXPECT_EQ(t.qweight.sizes(), (std::vector<int64_t>{in * bits / 32, out}));
    EXPECT_EQ(t.qzeros.sizes(), (std::vector<int64_t>{in / 32, out * bits / 32}));
    EXPECT_EQ(t.g_idx[in - 1].item<int32_t>(), in / 32 - 1);
    // Zero points are codes; with integer offsets q - z is exactly w_int + k.
    const auto z = gptq_unpack_rows(t.qzeros.t().contiguous(), bits, out);
    EXPECT_GE(z.min().item<int32_t>(), 0);
    EXPECT_LE(z.max().item<int32_t>(), (1 << bits) - 1);
    const auto W = gptq_dequantize(t, bits);
    const double d = (W.to(at::kDouble) - lin->effective_weight().to(at::kDouble)).abs().max().item<double>();
    worst = std::max(worst, d);
  }
  EXPECT_EQ(worst, rep.max_weight_error);

  const auto cfg = nlohmann::json::parse(test::read_text(dir + "/config.json"));
  const auto& qc = cfg.at("quantization_config");
  EXPECT_EQ(qc.at("quant_method"), "gptq");
  EXPECT_EQ(qc.at("bits"), bits);
  EXPECT_EQ(qc.at("group_size"), 32);
  EXPECT_EQ(qc.at("checkpoint_format"), "gptq_v2");
  EXPECT_EQ(qc.at("desc_act"), false);
  EXPECT_EQ(qc.at("modules_in_block_to_quantize")[0].size(), 4u);
  EXPECT_EQ(nlohmann::json::parse(test::read_text(dir + "/quantize_config.json")), qc);
  EXPECT_TRUE(std::filesystem::is_regular_file(dir + "/tokenizer.model"));
}

INSTANTIATE_TEST_SUITE_P(Widths, GptqExport,
                         ::testing::Values(GptqCase{2, false}, GptqCase{3, false}, GptqCase{4, false},
                                           GptqCase{8, false}, GptqCase{3, true}, GptqCase{4, true}));

TEST(GptqExport, IntegerOffsetMakesTheZeroPointExact) {
  const auto run = synthetic_run(gptq_options(4, true));
  for (const auto& [lname, lin] : run.model->named_linears()) {
    auto mw = lin->quantized_weight();
    if (!mw) continue;
    const auto s = mw->s.to(at::kFloat), b = mw->b.to(at::kFloat);
    const auto k = at::round(b / s);
    EXPECT_TRUE(at::equal(b, s * k)) << lname;  // b is exactly fl(s * k)
    EXPECT_GE(k.min().item<float>(), -7.0f);    // z = 8 - k in [0, 15]
    EXPECT_LE(k.max().item<float>(), 8.0f);
    EXPECT_EQ(gptq_layer(*mw, lname).max_offset_error, 0.0);
  }
}

TEST(GptqExport, NamesTheLayersItCannotWrite) {
  TempDir tmp;
  RunOptions o = gptq_options(4, false);
  o.targets.push_back("down_proj");  // in_features 172: one group per row
  o.targets.push_back("up_proj");    // out_features 172
  test::expect_error([&] { export_gptq(synthetic_run(o), tmp.file("a"), {}); },
                     {"model.layers.0.mlp.down_proj", "model.layers.4.mlp.up_proj: out_features 172",
                      "cannot be written as GPTQ", "target_modules"});
  EXPECT_FALSE(std::filesystem::exists(tmp.file("a")));
  o = gptq_options(5, false);
  test::expect_error([&] { export_gptq(synthetic_run(o), tmp.file("b"), {}); },
                     {"model.layers.0.self_attn.q_proj", "2, 3, 4 or 8 bits, got 5"});
  o = gptq_options(4, false);
  o.method = LinearMethod::Lora;
  test::expect_error([&] { export_gptq(synthetic_run(o), tmp.file("c"), {}); }, {"no quantized layer"});
}

TEST(GptqExport, RefusesAnExistingDirectoryUnlessForced) {
  const auto run = synthetic_run(gptq_options(4, false));
  TempDir tmp;
  const auto dir = tmp.file("out");
  std::filesystem::create_directories(dir);
  test::write_text(dir + "/old.txt", "old");
  test::expect_error([&] { export_gptq(run, dir, {}); }, {"exists", "--force"});
  EXPECT_TRUE(std::filesystem::exists(dir + "/old.txt"));
  export_gptq(run, dir, {true});
  EXPECT_FALSE(std::filesystem::exists(dir + "/old.txt"));  // replaced whole, not merged
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
  // Nothing left behind by the staging.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) entries += !e.path().empty();
  EXPECT_EQ(entries, 1);
}

}  // namespace
}  // namespace l4q
