// generate(): the KV-cached path picks the same tokens as full recomputation, greedy or
// sampled; stopping rules and option checks.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "l4q/infer/generate.h"
#include "l4q/model/llama.h"
#include "test_model_support.h"
#include "test_support.h"

namespace l4q {
namespace {

LlamaModel tiny_model(uint64_t seed = 21) {
  const auto c = test::tiny_llama_config(4, 2);
  return LlamaModel(c, test::random_llama_weights(c, at::kDouble, seed));
}

TEST(Generate, GreedyEqualsArgmaxOfFullForward) {
  const auto model = tiny_model();
  const std::vector<int32_t> prompt = {1, 5, 9};
  GenerateOptions o;
  o.max_new_tokens = 20;
  o.stop_at_eos = false;
  const auto out = generate(model, prompt, o);
  ASSERT_EQ(out.size(), 20u);
  // Each token is the argmax of a full forward pass over everything before it.
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  for (int32_t t : out) {
    const auto logits = model.forward(at::tensor(seq, at::kLong).view({1, -1}));
    EXPECT_EQ(logits[0][-1].argmax().item<int64_t>(), t);
    seq.push_back(t);
  }
  o.use_cache = false;
  EXPECT_EQ(generate(model, prompt, o), out);
}

TEST(Generate, SeededSamplingIsReproducibleAndCacheIndependent) {
  const auto model = tiny_model();
  GenerateOptions o;
  o.max_new_tokens = 30;
  o.temperature = 1.3;
  o.top_p = 0.9;
  o.seed = 77;
  o.stop_at_eos = false;
  const auto a = generate(model, {1}, o);
  EXPECT_EQ(generate(model, {1}, o), a);
  o.use_cache = false;
  EXPECT_EQ(generate(model, {1}, o), a);
  o.use_cache = true;
  o.seed = 78;
  EXPECT_NE(generate(model, {1}, o), a);
}

TEST(Generate, StopsAtEosAndWhenTheCallbackSaysSo) {
  const auto model = tiny_model();
  GenerateOptions o;
  o.max_new_tokens = 10;
  o.stop_at_eos = false;
  const auto free_run = generate(model, {1, 2}, o);
  ASSERT_EQ(free_run.size(), 10u);
  o.stop_at_eos = true;
  o.eos_id = free_run[3];
  const auto stopped = generate(model, {1, 2}, o);
  const auto first = std::find(free_run.begin(), free_run.end(), o.eos_id) - free_run.begin();
  EXPECT_EQ(stopped, std::vector<int32_t>(free_run.begin(), free_run.begin() + first + 1));

  std::vector<int32_t> streamed;
  o.stop_at_eos = false;
  const auto cb = generate(model, {1, 2}, o, [&](int32_t id) {
    streamed.push_back(id);
    return streamed.size() < 4;
  });
  EXPECT_EQ(cb, std::vector<int32_t>(free_run.begin(), free_run.begin() + 4));
  EXPECT_EQ(streamed, cb);
  o.max_new_tokens = 0;
  EXPECT_TRUE(generate(model, {1}, o).empty());
}

TEST(Generate, RejectsBadInput) {
  const auto model = tiny_model();
  test::expect_error([&] { generate(model, {}); }, {"prompt"});
  test::expect_error([&] { generate(model, {1, 61}); }, {"prompt token 1", "61"});
  GenerateOptions o;
  o.max_new_tokens = -1;
  test::expect_error([&] { generate(model, {1}, o); }, {"max_new_tokens"});
  o.max_new_tokens = 1;
  o.top_p = 0;
  test::expect_error([&] { generate(model, {1}, o); }, {"top_p"});
}

}  // namespace
}  // namespace l4q
