// The data pipeline with the real bundled tokenizer (stories260K's tok512.model) on the
// bundled Alpaca subset.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "l4q/data/dataset.h"
#include "l4q/data/loader.h"
#include "l4q/data/text_corpus.h"
#include "test_support.h"

namespace l4q {
namespace {

const std::string kSource = L4Q_SOURCE_DIR;

TEST(DataSentencePiece, BundledAlpacaTokenisesWithExactMaskBoundary) {
  const auto tok = load_tokenizer(kSource + "/assets/stories260K/tok512.model");
  const auto records = read_alpaca(kSource + "/assets/alpaca/alpaca_en_demo.json");
  const AlpacaTemplate tmpl;
  const auto set = tokenize_instruct(records, *tok, tmpl, {1024, LossOn::response}, "alpaca");
  ASSERT_EQ(set.stats.records, 999);
  EXPECT_EQ(set.stats.examples + set.stats.dropped, 999);
  ASSERT_EQ(set.examples.size(), static_cast<size_t>(set.stats.examples));
  int64_t checked = 0;
  size_t k = 0;
  for (const auto& r : records) {
    const auto prompt = tok->encode(tmpl.prompt(r), true);
    if (static_cast<int64_t>(prompt.size()) >= 1024) continue;  // dropped
    const auto& e = set.examples[k++];
    const auto P = prompt.size();
    ASSERT_GT(e.ids.size(), P);
    EXPECT_EQ(std::vector<int32_t>(e.ids.begin(), e.ids.begin() + static_cast<long>(P)), prompt);
    EXPECT_EQ(e.ids[0], tok->bos_id());
    EXPECT_EQ(e.labels[P - 1], kIgnoreIndex);
    EXPECT_EQ(e.labels[P], e.ids[P]);
    // Both halves decode back to their text (the tokenizer has byte fallback).
    EXPECT_EQ(tok->decode({e.ids.begin() + 1, e.ids.begin() + static_cast<long>(P)}), tmpl.prompt(r));
    if (e.ids.back() == tok->eos_id()) {
      EXPECT_EQ(tok->decode({e.ids.begin() + static_cast<long>(P), e.ids.end() - 1}), r.output);
      ++checked;
    }
  }
  EXPECT_EQ(k, set.examples.size());
  EXPECT_EQ(checked, set.stats.examples - set.stats.truncated);
  // Reference: sentencepiece 0.2.0 (Python) with the same template strings, ids
  // [1] + encode(prompt) + encode(output) + [2] cut at 1024: 178 cut, 550716 tokens, 386130
  // of them response tokens. (The longest prompt is 624 tokens, so none is dropped.)
  EXPECT_EQ(set.stats.dropped, 0);
  EXPECT_EQ(set.stats.truncated, 178);
  EXPECT_EQ(set.stats.tokens, 550716);
  EXPECT_EQ(set.stats.loss_tokens, 386130);
}

TEST(DataSentencePiece, LoadDatasetAndLoaderEndToEnd) {
  const auto tok = load_tokenizer(kSource + "/assets/stories260K/tok512.model");
  DataOptions o;
  o.train_path = kSource + "/assets/alpaca/alpaca_en_demo.json";
  o.val_fraction = 0.1;
  o.seed = 1;
  o.max_length = 256;
  const auto d = load_dataset(o, *tok);
  EXPECT_EQ(d.train_stats.records, 899);
  EXPECT_EQ(d.val_stats.records, 100);
  EXPECT_GT(d.train_stats.truncated, 0);
  for (const auto& e : d.train) ASSERT_LE(e.ids.size(), 256u);
  DataLoader dl(d.train, {8, true, 1, false, 0}, "train");
  const auto b = dl.next();
  EXPECT_EQ(b.input_ids.size(0), 8);
  EXPECT_LE(b.input_ids.size(1), 256);
  EXPECT_LT(b.input_ids.max().item<int64_t>(), tok->vocab_size());
  EXPECT_EQ(b.lengths.sum().item<int64_t>(), b.n_tokens);
  EXPECT_EQ(b.labels.ne(kIgnoreIndex).slice(1, 1).sum().item<int64_t>(), b.n_loss_tokens);
}

TEST(DataSentencePiece, TextCorpusOfTheGreedySample) {
  const auto tok = load_tokenizer(kSource + "/assets/stories260K/tok512.model");
  DataOptions o;
  o.format = DataFormat::text;
  o.train_path = kSource + "/assets/stories260K/stories260K.greedy256.txt";
  o.max_length = 64;
  const auto d = load_dataset(o, *tok);
  const auto stream = tokenize_text_file(o.train_path, *tok);
  EXPECT_EQ(d.train_stats.loss_tokens, static_cast<int64_t>(stream.size()));
  for (const auto& e : d.train) EXPECT_EQ(e.ids[0], tok->bos_id());
  EXPECT_EQ(d.train.size(), (stream.size() + 62) / 63);
}

}  // namespace
}  // namespace l4q
