// Exports of a run whose tokenizer is a byte-level BPE (SmolLM2, LLaMA-3): each format carries
// the tokenizer in the form its readers expect, and it loads back as the same vocabulary.
#include <gtest/gtest.h>

#include "l4q/export/gguf_export.h"
#include "l4q/export/gptq_export.h"
#include "l4q/export/hf_export.h"
#include "l4q/export/l4q_export.h"
#include "l4q/io/gguf.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/io/packed_model.h"
#include "test_bpe_support.h"
#include "test_export_support.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

void expect_same_vocab(const Tokenizer& t, const BpeVocab& v, const std::string& what) {
  const auto* bpe = dynamic_cast<const BpeTokenizer*>(&t);
  ASSERT_NE(bpe, nullptr) << what << ": not a byte-level BPE";
  const auto& got = bpe->vocab();
  EXPECT_EQ(std::vector<std::string>(got.tokens.begin(), got.tokens.begin() + v.tokens.size()),
            v.tokens)
      << what;
  EXPECT_EQ(got.merges, v.merges) << what;
  EXPECT_EQ(got.pre, v.pre) << what;
  EXPECT_EQ(got.eos_id, v.eos_id) << what;
  const std::string text = "<|im_start|>abc the 123 xyz\n";
  EXPECT_EQ(t.encode(text), BpeTokenizer(v, "v").encode(text)) << what;
}

TEST(BpeExport, EveryFormatCarriesTheTokenizer) {
  test::RunOptions o;
  o.bits = 4;
  // stories260K's MLP (intermediate 172) cannot be GPTQ-packed: attention only, as a GPTQ user.
  o.targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  auto run = test::synthetic_run(o);
  const auto v = test::small_vocab();  // 268 tokens; the model's vocab_size is 512
  run.tokenizer = std::make_unique<BpeTokenizer>(v, "small vocab");
  test::TempDir tmp;

  const auto hf = tmp.file("hf");
  export_hf(run, hf, {});
  EXPECT_FALSE(std::filesystem::exists(hf + "/tokenizer.model"));
  expect_same_vocab(*load_model_tokenizer(hf), v, "hf export");

  const auto gptq = tmp.file("gptq");
  export_gptq(run, gptq, {});
  expect_same_vocab(*load_model_tokenizer(gptq), v, "gptq export");

  const auto packed = tmp.file("packed");
  const auto rep = export_l4q(run, packed, {});
  for (const auto& n : rep.notes) EXPECT_EQ(n.find("no SentencePiece"), std::string::npos) << n;
  const auto pm = load_packed_model(packed);
  ASSERT_TRUE(pm.tokenizer);
  expect_same_vocab(*pm.tokenizer, v, "l4q export");

  const auto gguf = tmp.file("m.gguf");
  export_gguf(run, gguf, {});
  const auto f = GgufFile::open(gguf);
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ(f.get_array<std::string>("tokenizer.ggml.tokens").size(), 512u);  // padded
  expect_same_vocab(*tokenizer_from_gguf(gguf), v, "gguf export");
}

}  // namespace
}  // namespace l4q
