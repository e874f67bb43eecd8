// The proof on a real pretrained model: karpathy's stories260K, greedy from BOS for 256 tokens,
// reproduces llama2.c run.c's ids (assets/stories260K/stories260K.greedy256.ids) exactly,
// whether loaded from the GGUF, the llama2.c .bin or an HF directory converted from them.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "l4q/infer/generate.h"
#include "l4q/io/checkpoint.h"
#include "l4q/model/llama.h"
#include "test_support.h"

namespace l4q {
namespace {

const std::string kDir = std::string(L4Q_SOURCE_DIR) + "/assets/stories260K/";

std::vector<int32_t> reference_ids() {
  std::ifstream f(kDir + "stories260K.greedy256.ids");
  return {std::istream_iterator<int32_t>(f), std::istream_iterator<int32_t>()};
}

// run.c: forward BOS at position 0, then each argmax; `-n 256` prints 256 tokens (positions
// 0..255 each yield one), stopping early only on BOS, which this output never produces.
std::vector<int32_t> greedy256(const LlamaModel& model) {
  GenerateOptions o;
  o.max_new_tokens = 256;
  o.stop_at_eos = false;
  return generate(model, {1}, o);
}

void expect_reference(const std::string& path) {
  const auto want = reference_ids();
  ASSERT_EQ(want.size(), 256u);
  const auto ck = load_checkpoint(path);
  EXPECT_EQ(ck.config.hidden_size, 64);
  EXPECT_EQ(ck.config.num_key_value_heads, 4);
  const LlamaModel model(ck.config, ck.tensors);
  const auto got = greedy256(model);
  ASSERT_EQ(got.size(), want.size());
  size_t first_diff = 0;
  while (first_diff < got.size() && got[first_diff] == want[first_diff]) ++first_diff;
  EXPECT_EQ(first_diff, want.size()) << path << ": first differing token at " << first_diff;
}

TEST(Stories260K, GreedyFromGgufMatchesLlama2c) { expect_reference(kDir + "stories260K.gguf"); }

TEST(Stories260K, GreedyFromLlama2cBinMatchesLlama2c) { expect_reference(kDir + "stories260K.bin"); }

TEST(Stories260K, GreedyFromConvertedHfDirectoryMatchesLlama2c) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("l4q_stories260k_hf_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  save_hf_directory(load_checkpoint(kDir + "stories260K.bin"), dir.string(), kDir + "tok512.model");
  expect_reference(dir.string());
  std::filesystem::remove_all(dir);
}

TEST(Stories260K, SourcesGiveTheSameLogits) {
  const auto a = load_checkpoint(kDir + "stories260K.gguf");
  const auto b = load_checkpoint(kDir + "stories260K.bin");
  const LlamaModel ma(a.config, a.tensors), mb(b.config, b.tensors);
  const auto tokens = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378, 432}, at::kLong).view({1, -1});
  const auto la = ma.forward(tokens), lb = mb.forward(tokens);
  EXPECT_EQ(la.sizes(), (std::vector<int64_t>{1, 6, 512}));
  EXPECT_TRUE(la.equal(lb));
}

}  // namespace
}  // namespace l4q
