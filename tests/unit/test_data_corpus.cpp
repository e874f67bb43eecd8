// Plain-text corpus blocks and load_dataset (both formats, both kinds of validation data).
#include <gtest/gtest.h>

#include <map>

#include "l4q/data/dataset.h"
#include "l4q/data/text_corpus.h"
#include "test_data_support.h"
#include "test_support.h"

namespace l4q {
namespace {

std::vector<int32_t> iota_tokens(int n) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(100 + i);
  return t;
}

// How often each text token is a target across all blocks (positions t >= 1 not ignored).
std::map<int32_t, int> target_counts(const std::vector<Example>& blocks) {
  std::map<int32_t, int> c;
  for (const auto& e : blocks)
    for (size_t t = 1; t < e.ids.size(); ++t)
      if (e.labels[t] != kIgnoreIndex) ++c[e.ids[t]];
  return c;
}

TEST(DataCorpus, BlocksWithBosScoreEveryTokenOnce) {
  const auto blocks = make_text_blocks(iota_tokens(10), 1, {4, 0, true}, "c.txt");
  ASSERT_EQ(blocks.size(), 4u);  // 3 text tokens per block: 3 + 3 + 3 + 1
  EXPECT_EQ(blocks[0].ids, (std::vector<int32_t>{1, 100, 101, 102}));
  EXPECT_EQ(blocks[0].labels, (std::vector<int32_t>{kIgnoreIndex, 100, 101, 102}));
  EXPECT_EQ(blocks[1].ids, (std::vector<int32_t>{1, 103, 104, 105}));
  EXPECT_EQ(blocks[3].ids, (std::vector<int32_t>{1, 109}));
  const auto c = target_counts(blocks);
  EXPECT_EQ(c.size(), 10u);
  for (const auto& [tok, n] : c) EXPECT_EQ(n, 1) << tok;
}

TEST(DataCorpus, OverlappingBlocksMaskTheRepeatedContext) {
  // 4 text tokens per block, stride 2: starts 0, 2, 4, 6 (the last reaches the end).
  const auto blocks = make_text_blocks(iota_tokens(9), 1, {5, 2, true}, "c.txt");
  ASSERT_EQ(blocks.size(), 4u);
  EXPECT_EQ(blocks[1].ids, (std::vector<int32_t>{1, 102, 103, 104, 105}));
  EXPECT_EQ(blocks[1].labels, (std::vector<int32_t>{kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, 104, 105}));
  EXPECT_EQ(blocks[3].ids, (std::vector<int32_t>{1, 106, 107, 108}));
  EXPECT_EQ(blocks[3].labels, (std::vector<int32_t>{kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, 108}));
  const auto c = target_counts(blocks);
  EXPECT_EQ(c.size(), 9u);
  for (const auto& [tok, n] : c) EXPECT_EQ(n, 1) << tok;
}

TEST(DataCorpus, BlocksWithoutBos) {
  const auto blocks = make_text_blocks(iota_tokens(7), -1, {3, 0, false}, "c.txt");
  // [100 101 102] [103 104 105] [106]: a one-token tail has no target and is dropped.
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(blocks[1].ids, (std::vector<int32_t>{103, 104, 105}));
  EXPECT_EQ(count_loss_tokens(blocks[0]), 2);
  const auto overlapped = make_text_blocks(iota_tokens(7), -1, {3, 2, false}, "c.txt");
  const auto c = target_counts(overlapped);
  EXPECT_EQ(c.size(), 6u);  // every token but the first, once each
  for (const auto& [tok, n] : c) EXPECT_EQ(n, 1) << tok;
}

TEST(DataCorpus, RejectsBadOptionsAndTooShortText) {
  test::expect_error([] { make_text_blocks(iota_tokens(9), 1, {4, 4, true}, "c.txt"); },
                     {"c.txt", "stride", "1..3", "4"});
  test::expect_error([] { make_text_blocks(iota_tokens(9), 1, {1, 0, true}, "c.txt"); },
                     {"c.txt", "block size", "1"});
  test::expect_error([] { make_text_blocks(iota_tokens(9), -1, {4, 0, true}, "c.txt"); },
                     {"c.txt", "BOS"});
  test::expect_error([] { make_text_blocks(iota_tokens(1), -1, {4, 0, false}, "c.txt"); },
                     {"c.txt", "too short", "1 tokens"});
  EXPECT_EQ(make_text_blocks(iota_tokens(1), 1, {4, 0, true}, "c.txt").size(), 1u);
}

TEST(DataCorpus, TextFileIsOneStream) {
  const test::FakeTokenizer tok;
  const auto path = test::write_temp("stream.txt", "ab\ncd");
  EXPECT_EQ(tokenize_text_file(path, tok), test::byte_ids("ab\ncd"));
  const auto empty = test::write_temp("empty.txt", "");
  test::expect_error([&] { tokenize_text_file(empty, tok); }, {empty, "empty"});
  test::expect_error([&] { tokenize_text_file("/nonexistent/t.txt", tok); },
                     {"/nonexistent/t.txt", "cannot open"});
}

std::string alpaca_json(int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i)
    s += std::string(i ? "," : "") + "{\"instruction\":\"q" + std::to_string(i) +
         "\",\"input\":\"\",\"output\":\"a" + std::to_string(i) + "\"}";
  return s + "]";
}

TEST(DataDataset, AlpacaWithFractionSplitIsDeterministic) {
  const test::FakeTokenizer tok;
  DataOptions o;
  o.train_path = test::write_temp("ds.json", alpaca_json(40));
  o.val_fraction = 0.25;
  o.seed = 11;
  const auto d = load_dataset(o, tok);
  EXPECT_EQ(d.train.size(), 30u);
  EXPECT_EQ(d.val.size(), 10u);
  EXPECT_EQ(d.train_stats.records, 30);
  EXPECT_EQ(d.val_stats.records, 10);
  const auto again = load_dataset(o, tok);
  EXPECT_EQ(fingerprint(again.train), fingerprint(d.train));
  EXPECT_EQ(fingerprint(again.val), fingerprint(d.val));
  o.seed = 12;
  EXPECT_NE(fingerprint(load_dataset(o, tok).val), fingerprint(d.val));
  // The split takes records; train and validation together hold every record once.
  std::map<std::string, int> seen;
  for (const auto* part : {&d.train, &d.val})
    for (const auto& e : *part) ++seen[tok.decode(e.ids)];
  EXPECT_EQ(seen.size(), 40u);

  o.max_records = 8;
  const auto few = load_dataset(o, tok);
  EXPECT_EQ(few.train.size() + few.val.size(), 8u);
  EXPECT_EQ(few.val.size(), 2u);
}

TEST(DataDataset, AlpacaWithSeparateValidationFile) {
  const test::FakeTokenizer tok;
  DataOptions o;
  o.train_path = test::write_temp("tr.json", alpaca_json(6));
  o.val_path = test::write_temp("va.jsonl", "{\"instruction\":\"v\",\"output\":\"w\"}\n");
  o.loss_on = LossOn::all;
  const auto d = load_dataset(o, tok);
  EXPECT_EQ(d.train.size(), 6u);
  ASSERT_EQ(d.val.size(), 1u);
  EXPECT_EQ(d.val[0].labels, d.val[0].ids);
  EXPECT_EQ(d.val_stats.loss_tokens, static_cast<int64_t>(d.val[0].ids.size()) - 1);

  o.val_fraction = 0.1;
  test::expect_error([&] { load_dataset(o, tok); }, {"val_path", "val_fraction"});
  o.val_fraction = 0;
  o.val_path = test::write_temp("bad.json", "[{\"instruction\":\"v\"}]");
  test::expect_error([&] { load_dataset(o, tok); }, {"bad.json", "record 0", "'output'"});
  o.val_path.clear();
  o.max_length = 20;  // shorter than any prompt
  test::expect_error([&] { load_dataset(o, tok); }, {"tr.json", "all 6 examples", "max_length 20"});
}

TEST(DataDataset, TextWithTailValidation) {
  const test::FakeTokenizer tok;
  DataOptions o;
  o.format = DataFormat::text;
  o.train_path = test::write_temp("corpus.txt", "abcdefghijklmnopqrst");  // 20 tokens
  o.max_length = 5;
  o.val_fraction = 0.2;
  const auto d = load_dataset(o, tok);
  // Train: 16 tokens in blocks of BOS + 4; validation: the last 4 tokens "qrst".
  EXPECT_EQ(d.train.size(), 4u);
  ASSERT_EQ(d.val.size(), 1u);
  EXPECT_EQ(d.val[0].ids, (std::vector<int32_t>{1, 'q' + 3, 'r' + 3, 's' + 3, 't' + 3}));
  EXPECT_EQ(d.train_stats.loss_tokens, 16);
  EXPECT_EQ(d.val_stats.loss_tokens, 4);

  o.stride = 2;
  EXPECT_EQ(load_dataset(o, tok).train_stats.loss_tokens, 16);  // still each token once
  o.max_records = 3;
  test::expect_error([&] { load_dataset(o, tok); }, {"max_records", "text"});
  o.max_records = 0;
  o.format = DataFormat::alpaca;
  test::expect_error([&] { load_dataset(o, tok); }, {"stride", "alpaca"});
  EXPECT_EQ(parse_data_format("text", "cfg"), DataFormat::text);
  test::expect_error([] { parse_data_format("csv", "cfg"); }, {"cfg", "format", "csv"});
  DataOptions none;
  test::expect_error([&] { load_dataset(none, tok); }, {"train_path"});
}

}  // namespace
}  // namespace l4q
