// Perplexity protocols: the windows each makes (every target scored once, with the context the
// protocol promises) and the NLL against a direct computation, one forward per target.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "l4q/eval/perplexity.h"
#include "test_model_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using Kind = PerplexityProtocol::Kind;

PerplexityProtocol sliding(int64_t ctx, int64_t stride, int64_t batch = 4) {
  PerplexityProtocol p;
  p.context = ctx;
  p.stride = stride;
  p.batch = batch;
  return p;
}

PerplexityProtocol llama_cpp(int64_t ctx, int64_t batch = 4) {
  PerplexityProtocol p;
  p.kind = Kind::LlamaCpp;
  p.context = ctx;
  p.batch = batch;
  return p;
}

TEST(EvalPerplexityWindows, SlidingScoresEveryTargetOnceWithEnoughContext) {
  for (int64_t n : {2, 3, 7, 10, 33})
    for (int64_t ctx : {2, 3, 4, 8})
      for (int64_t stride = 1; stride <= ctx; ++stride) {
        const auto w = perplexity_windows(n, sliding(ctx, stride));
        std::map<int64_t, int> seen;
        for (size_t i = 0; i < w.size(); ++i) {
          EXPECT_LE(w[i].end - w[i].begin, ctx);
          EXPECT_GT(w[i].first_target, w[i].begin);
          for (int64_t t = w[i].first_target; t < w[i].end; ++t) {
            ++seen[t];
            if (i > 0) EXPECT_GE(t - w[i].begin, std::min(ctx - stride, t)) << "target " << t;
          }
        }
        for (int64_t t = 1; t < n; ++t) {
          // stride == context: the first token of every later window has no context in it.
          const bool skipped = stride == ctx && t % ctx == 0;
          EXPECT_EQ(seen[t], skipped ? 0 : 1) << "n " << n << " ctx " << ctx << " stride " << stride << " t " << t;
        }
        if (stride < ctx) EXPECT_EQ(w.back().end, n);
      }
  const auto w = perplexity_windows(10, sliding(4, 2));
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[1].begin, 2);
  EXPECT_EQ(w[1].end, 6);
  EXPECT_EQ(w[1].first_target, 4);
}

TEST(EvalPerplexityWindows, LlamaCppScoresTheSecondHalfOfWholeChunks) {
  // 2 chunks of 8 (the 3 tokens left over are dropped); targets 5, 6, 7 of each chunk.
  const auto w = perplexity_windows(19, llama_cpp(8));
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].begin, 0);
  EXPECT_EQ(w[0].first_target, 5);
  EXPECT_EQ(w[1].begin, 8);
  EXPECT_EQ(w[1].end, 16);
  EXPECT_EQ(w[1].first_target, 13);
  EXPECT_EQ(w[1].end - w[1].first_target, 8 - 1 - 8 / 2);
  EXPECT_TRUE(perplexity_windows(7, llama_cpp(8)).empty());
  test::expect_error([] { perplexity_windows(9, sliding(1, 1)); }, {"context", ">= 2", "got 1"});
  test::expect_error([] { perplexity_windows(9, sliding(4, 5)); }, {"stride", "got 5"});
}

class EvalPerplexity : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = test::tiny_llama_config();
    model_ = std::make_unique<LlamaModel>(cfg_, test::random_llama_weights(cfg_, at::kDouble, 7));
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    const auto t = at::randint(3, cfg_.vocab_size, {45}, gen, at::TensorOptions().dtype(at::kLong));
    for (int64_t i = 0; i < t.size(0); ++i) text_.push_back(static_cast<int32_t>(t[i].item<int64_t>()));
  }
  // -log p(stream[target] | stream[begin..target-1]), with stream[begin] replaced by `first`
  // when first >= 0: one forward pass of exactly that context.
  double direct_nll(const std::vector<int32_t>& stream, int64_t begin, int64_t target, int32_t first = -1) {
    at::NoGradGuard ng;
    std::vector<int64_t> ctx(stream.begin() + begin, stream.begin() + target);
    if (first >= 0) ctx[0] = first;
    const auto logits = model_->forward(at::tensor(ctx, at::kLong).unsqueeze(0))[0][-1];
    return -at::log_softmax(logits, -1)[stream[target]].item<double>();
  }
  LlamaConfig cfg_;
  std::unique_ptr<LlamaModel> model_;
  std::vector<int32_t> text_;
};

TEST_F(EvalPerplexity, SlidingMatchesOneForwardPerTarget) {
  std::vector<int32_t> stream{1};
  stream.insert(stream.end(), text_.begin(), text_.end());
  const int64_t n = stream.size(), ctx = 8, stride = 3;
  // Target t is scored by the first window [b, b + ctx) with b a multiple of stride that
  // reaches past t.
  double nll = 0;
  int64_t count = 0;
  for (int64_t t = 1; t < n; ++t) {
    int64_t b = 0;
    while (b + ctx <= t) b += stride;
    nll += direct_nll(stream, b, t);
    ++count;
  }
  for (int64_t batch : {1, 3, 16}) {
    const auto r = evaluate_perplexity(*model_, text_, sliding(ctx, stride, batch), {}, 1);
    EXPECT_EQ(r.tokens_scored, count);
    EXPECT_EQ(r.tokens_total, n);
    EXPECT_NEAR(r.nll_sum, nll, 1e-9 * nll) << "batch " << batch;
    EXPECT_NEAR(r.perplexity(), std::exp(nll / count), 1e-9 * r.perplexity());
  }
}

TEST_F(EvalPerplexity, LlamaCppMatchesOneForwardPerTarget) {
  std::vector<int32_t> stream{1};
  stream.insert(stream.end(), text_.begin(), text_.end());
  const int64_t ctx = 10;
  double nll = 0;
  int64_t count = 0;
  for (int64_t start = 0; start + ctx <= static_cast<int64_t>(stream.size()); start += ctx)
    for (int64_t j = ctx / 2 + 1; j < ctx; ++j) {
      nll += direct_nll(stream, start, start + j, /*first=*/1);  // chunk starts with BOS
      ++count;
    }
  int64_t progress_calls = 0, last_done = 0;
  const auto r = evaluate_perplexity(*model_, text_, llama_cpp(ctx, 3),
                                     [&](int64_t done, int64_t total, const PerplexityResult&) {
                                       ++progress_calls;
                                       last_done = done;
                                       EXPECT_EQ(total, 4);
                                     },
                                     1);
  EXPECT_EQ(count, 4 * 4);  // 46 tokens: 4 chunks of 10, 4 targets each
  EXPECT_EQ(r.tokens_scored, count);
  EXPECT_EQ(r.windows, 4);
  EXPECT_EQ(progress_calls, 2);  // batches of 3 and 1
  EXPECT_EQ(last_done, 4);
  EXPECT_NEAR(r.nll_sum, nll, 1e-9 * nll);
}

TEST_F(EvalPerplexity, WithoutBosTheFirstTextTokenIsContextOnly) {
  auto p = sliding(64, 64);
  p.add_bos = false;
  const auto r = evaluate_perplexity(*model_, text_, p, {}, 1);
  EXPECT_EQ(r.tokens_total, static_cast<int64_t>(text_.size()));
  EXPECT_EQ(r.tokens_scored, static_cast<int64_t>(text_.size()) - 1);
  double nll = 0;
  for (size_t t = 1; t < text_.size(); ++t) nll += direct_nll(text_, 0, t);
  EXPECT_NEAR(r.nll_sum, nll, 1e-9 * nll);
}

TEST_F(EvalPerplexity, RejectsBadIdsAndStreamsTooShort) {
  test::expect_error([&] { evaluate_perplexity(*model_, {5, 61, 7}, sliding(4, 2)); },
                     {"token 2", "id 61", "outside the vocabulary", "61"});
  test::expect_error([&] { evaluate_perplexity(*model_, {5, 6}, llama_cpp(8)); },
                     {"3 tokens", "no window", "llama.cpp"});
  const auto r = evaluate_perplexity(*model_, text_, sliding(8, 4));
  EXPECT_NE(r.to_json().find("\"tokens_scored\": 45"), std::string::npos) << r.to_json();
}

}  // namespace
}  // namespace l4q
