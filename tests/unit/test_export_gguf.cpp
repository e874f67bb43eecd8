// GGUF export: Q4_1 blocks carry the trained codes unchanged, q/k rows in llama.cpp's order,
// the vocabulary, fallbacks, and the reported error equal to the measured one.
#include <gtest/gtest.h>

#include <cstring>

#include "l4q/export/gguf_export.h"
#include "l4q/io/gguf.h"
#include "l4q/io/qk_layout.h"
#include "l4q/quant/ggml_blocks.h"
#include "test_export_support.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::RunOptions;
using test::synthetic_run;
using test::TempDir;

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

class GgufExportBits : public ::testing::TestWithParam<int> {};

TEST_P(GgufExportBits, RoundTripsThroughOurReaderWithinTheReportedError) {
  RunOptions o;
  o.bits = GetParam();
  const auto run = synthetic_run(o);
  TempDir tmp;
  const auto path = tmp.file("m.gguf");
  const auto rep = export_gguf(run, path, {});
  const auto& cfg = run.model->config();
  // 5 blocks x 6 projections fit Q4_1; down_proj (in 172, one group per row) does not.
  EXPECT_EQ(rep.quantized_layers, 6 * cfg.num_hidden_layers);
  EXPECT_EQ(rep.float_layers, cfg.num_hidden_layers);
  ASSERT_FALSE(rep.notes.empty());
  bool down_noted = false;
  for (const auto& n : rep.notes) down_noted |= n.find("mlp.down_proj") != std::string::npos;
  EXPECT_TRUE(down_noted);

  const auto f = GgufFile::open(path);
  EXPECT_EQ(f.tensor_info("blk.0.attn_q.weight").type, GgmlType::Q4_1);
  EXPECT_EQ(f.tensor_info("blk.4.ffn_up.weight").type, GgmlType::Q4_1);
  const auto down_type = f.tensor_info("blk.0.ffn_down.weight").type;
  EXPECT_TRUE(down_type == GgmlType::F32 || down_type == GgmlType::F16);
  EXPECT_EQ(f.tensor_info("blk.0.attn_norm.weight").type, GgmlType::F32);
  EXPECT_EQ(f.get<uint32_t>("general.file_type"), 3u);
  EXPECT_EQ(f.get<uint32_t>("general.quantization_version"), 2u);
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get_array<std::string>("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(f.get_array<float>("tokenizer.ggml.scores").size(), 512u);
  EXPECT_EQ(f.get<uint32_t>("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get<uint32_t>("tokenizer.ggml.eos_token_id"), 2u);

  // Our loader (which permutes q/k back to rotate-half) gives the trained W_q within the
  // reported error, and the largest difference is the reported one.
  const auto ck = load_checkpoint(path);
  double worst = 0;
  for (const auto& [lname, lin] : run.model->named_linears()) {
    const double d = max_diff(ck.get(lname + ".weight"), lin->effective_weight());
    EXPECT_LE(d, rep.max_weight_error) << lname;
    worst = std::max(worst, d);
  }
  EXPECT_EQ(worst, rep.max_weight_error);
  EXPECT_GT(rep.max_weight_error, 0);  // fp16 scales: not bit-exact, and reported as such
  // Bound of FORMATS.md §6: |dw| <= q|s - fp16(s)| + |m - fp16(m)|.
  EXPECT_LE(rep.max_weight_error, ((1 << o.bits) - 1) * rep.max_scale_error + rep.max_offset_error + 1e-7);
  for (const auto& [name, t] : run.model->named_float_parameters())
    EXPECT_EQ(max_diff(ck.get(name), t), 0.0) << name;
}

INSTANTIATE_TEST_SUITE_P(Bits, GgufExportBits, ::testing::Values(2, 3, 4));

TEST(GgufExport, Q4_1BlocksHoldTheTrainedCodesInLlamaCppRowOrder) {
  RunOptions o;
  o.bits = 4;
  const auto run = synthetic_run(o);
  TempDir tmp;
  const auto path = tmp.file("m.gguf");
  export_gguf(run, path, {});
  const auto f = GgufFile::open(path);
  const auto& cfg = run.model->config();
  for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
    const std::string lname = std::string("model.layers.1.self_attn.") + proj;
    auto mw = *run.model->linear(lname).quantized_weight();
    const int64_t heads = std::string(proj) == "q_proj" ? cfg.num_attention_heads
                          : std::string(proj) == "k_proj" ? cfg.num_key_value_heads : 0;
    if (heads) mw = permute_rows_to_interleaved(mw, heads);
    const auto q = mw.unsigned_codes();
    const auto m = mw.min_offset();
    const auto& info = f.tensor_info(gguf_name_from_hf(lname + ".weight"));
    const uint8_t* data = f.data(info);
    const int64_t out = q.size(0), in = q.size(1), blocks = in / 32;
    int64_t mismatches = 0;
    for (int64_t r = 0; r < out; ++r)
      for (int64_t j = 0; j < blocks; ++j) {
        BlockQ4_1 blk;
        std::memcpy(&blk, data + (r * blocks + j) * sizeof(BlockQ4_1), sizeof blk);
        const int64_t g = j * 32 / mw.grid.group_size;
        EXPECT_EQ(blk.d, fp32_to_fp16(mw.s[r][g].item<float>()));
        EXPECT_EQ(blk.m, fp32_to_fp16(m[r][g].item<float>()));
        for (int t = 0; t < 16; ++t) {
          mismatches += (blk.qs[t] & 0xF) != q[r][j * 32 + t].item<uint8_t>();
          mismatches += (blk.qs[t] >> 4) != q[r][j * 32 + t + 16].item<uint8_t>();
        }
      }
    EXPECT_EQ(mismatches, 0) << proj;
  }
}

TEST(GgufExport, GroupsOf64RepeatStepAndOffsetOverTwoBlocks) {
  RunOptions o;
  o.group = 64;
  const auto run = synthetic_run(o);
  const auto mw = *run.model->linear("model.layers.0.self_attn.v_proj").quantized_weight();
  const auto bytes = pack_q4_1(mw);
  ASSERT_EQ(bytes.size(), static_cast<size_t>(mw.w_int.size(0) * 2 * sizeof(BlockQ4_1)));
  BlockQ4_1 b0, b1;
  std::memcpy(&b0, bytes.data(), sizeof b0);
  std::memcpy(&b1, bytes.data() + sizeof b0, sizeof b1);
  EXPECT_EQ(b0.d, b1.d);
  EXPECT_EQ(b0.m, b1.m);
}

TEST(GgufExport, EightBitGoesToQ8_0WhenSymmetricElseToAnExactFloatFallback) {
  RunOptions o;
  o.bits = 8;
  o.zero_offset = true;
  o.targets = {"q_proj", "v_proj"};
  TempDir tmp;
  {
    const auto run = synthetic_run(o);
    const auto rep = export_gguf(run, tmp.file("sym.gguf"), {});
    const auto f = GgufFile::open(tmp.file("sym.gguf"));
    EXPECT_EQ(f.tensor_info("blk.0.attn_q.weight").type, GgmlType::Q8_0);
    EXPECT_EQ(f.get<uint32_t>("general.file_type"), 7u);
    EXPECT_EQ(rep.quantized_layers, 2 * run.model->config().num_hidden_layers);
    const auto ck = load_checkpoint(tmp.file("sym.gguf"));
    EXPECT_LE(max_diff(ck.get("model.layers.2.self_attn.v_proj.weight"),
                       run.model->linear("model.layers.2.self_attn.v_proj").effective_weight()),
              rep.max_weight_error);
  }
  o.zero_offset = false;
  const auto run = synthetic_run(o);
  const auto rep = export_gguf(run, tmp.file("asym.gguf"), {});
  EXPECT_EQ(rep.quantized_layers, 0);
  EXPECT_EQ(rep.max_weight_error, 0.0);  // every layer is the exact W_q
  const auto ck = load_checkpoint(tmp.file("asym.gguf"));
  for (const auto& [lname, lin] : run.model->named_linears())
    EXPECT_EQ(max_diff(ck.get(lname + ".weight"), lin->effective_weight()), 0.0) << lname;
  bool noted = false;
  for (const auto& n : rep.notes) noted |= n.find("nonzero offset") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(GgufExport, RefusesAnExistingOutputUnlessForced) {
  const auto run = synthetic_run({});
  TempDir tmp;
  const auto path = tmp.file("m.gguf");
  test::write_text(path, "keep me");
  test::expect_error([&] { export_gguf(run, path, {}); }, {"m.gguf", "exists", "--force"});
  EXPECT_EQ(test::read_text(path), "keep me");
  const auto rep = export_gguf(run, path, {true});
  EXPECT_GT(rep.bytes, 0u);
  EXPECT_NO_THROW(GgufFile::open(path));
  test::expect_error([&] { export_gguf(run, tmp.file("no/such/dir/m.gguf"), {}); }, {"does not exist"});
}

}  // namespace
}  // namespace l4q
