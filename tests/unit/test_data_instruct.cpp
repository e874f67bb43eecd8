// Prompt template, tokenisation into examples, loss mask, truncation.
#include <gtest/gtest.h>

#include "l4q/data/instruct.h"
#include "l4q/data/prompt_template.h"
#include "test_data_support.h"
#include "test_support.h"

namespace l4q {
namespace {

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(DataTemplate, AlpacaPromptsMatchStanfordAlpaca) {
  const AlpacaTemplate t;
  EXPECT_EQ(t.name(), "alpaca");
  EXPECT_EQ(t.prompt({"Sum the numbers.", "1 2", "3"}),
            "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nSum the numbers.\n\n### Input:\n1 2\n\n### Response:\n");
  EXPECT_EQ(t.prompt({"Say hi.", "", "Hi"}),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n");
  EXPECT_EQ(t.response({"Say hi.", "", "Hi"}), "Hi");
  // Braces in the data are text, never placeholders.
  EXPECT_NE(t.prompt({"{input}", "{instruction}", ""}).find("### Instruction:\n{input}\n\n### Input:\n{instruction}\n"),
            std::string::npos);
  EXPECT_EQ(make_prompt_template("alpaca")->name(), "alpaca");
  test::expect_error([] { make_prompt_template("chatml-x"); }, {"chatml-x", "alpaca"});
}

TEST(DataInstruct, BosPromptResponseEosWithPromptMasked) {
  const test::FakeTokenizer tok;
  const AlpacaTemplate tmpl;
  const InstructRecord r{"Say hi.", "", "Hi there"};
  const auto set = tokenize_instruct({r}, tok, tmpl, {}, "t");
  ASSERT_EQ(set.examples.size(), 1u);
  const auto& e = set.examples[0];
  const auto prompt = concat({1}, test::byte_ids(tmpl.prompt(r)));
  const auto response = concat(test::byte_ids("Hi there"), {2});
  EXPECT_EQ(e.ids, concat(prompt, response));
  const auto P = prompt.size();
  for (size_t t = 0; t < P; ++t) EXPECT_EQ(e.labels[t], kIgnoreIndex) << t;
  for (size_t t = P; t < e.ids.size(); ++t) EXPECT_EQ(e.labels[t], e.ids[t]) << t;
  EXPECT_EQ(count_loss_tokens(e), static_cast<int64_t>(response.size()));
  EXPECT_EQ(set.stats.loss_tokens, static_cast<int64_t>(response.size()));
  EXPECT_EQ(set.stats.tokens, static_cast<int64_t>(e.ids.size()));
  EXPECT_EQ(set.stats.examples, 1);
  EXPECT_EQ(set.stats.dropped + set.stats.truncated, 0);

  const auto all = tokenize_instruct({r}, tok, tmpl, {512, LossOn::all}, "t");
  EXPECT_EQ(all.examples[0].ids, e.ids);
  EXPECT_EQ(all.examples[0].labels, e.ids);
  EXPECT_EQ(all.stats.loss_tokens, static_cast<int64_t>(e.ids.size()) - 1);
}

TEST(DataInstruct, MaskBoundaryIsExactWhenAPieceWouldStraddleIt) {
  // "\nHi" is one piece: encoding prompt + response as one string would swallow the prompt's
  // final newline into the response's first token. Encoded apart, the boundary is exact.
  const test::FakeTokenizer tok({"\nHi", "### "});
  const AlpacaTemplate tmpl;
  const InstructRecord r{"Greet", "", "Hi"};
  const auto joint = tok.encode(tmpl.prompt(r) + "Hi");
  const auto prompt = tok.encode(tmpl.prompt(r), true);
  ASSERT_EQ(joint.size(), prompt.size() - 1) << "the fake tokenizer should merge across the boundary";
  const auto e = tokenize_instruct({r}, tok, tmpl, {}, "t").examples.at(0);
  const auto P = prompt.size();
  EXPECT_EQ(std::vector<int32_t>(e.ids.begin(), e.ids.begin() + static_cast<long>(P)), prompt);
  EXPECT_EQ(e.labels[P - 1], kIgnoreIndex);
  EXPECT_EQ(e.labels[P], e.ids[P]);
  EXPECT_EQ(tok.decode({e.ids.begin() + 1, e.ids.begin() + static_cast<long>(P)}), tmpl.prompt(r));
  EXPECT_EQ(tok.decode({e.ids.begin() + static_cast<long>(P), e.ids.end() - 1}), "Hi");
  EXPECT_EQ(e.ids.back(), 2);
}

TEST(DataInstruct, TruncatesTheResponseEndAndDropsPromptOnlyExamples) {
  const test::FakeTokenizer tok;
  const AlpacaTemplate tmpl;
  const InstructRecord fits{"a", "", "xyz"};
  const auto P = static_cast<int64_t>(tmpl.prompt(fits).size()) + 1;  // + BOS
  const int64_t full = P + 3 + 1;                                      // + "xyz" + EOS
  {  // exactly max_length: untouched
    const auto s = tokenize_instruct({fits}, tok, tmpl, {full, LossOn::response}, "t");
    EXPECT_EQ(s.stats.truncated, 0);
    EXPECT_EQ(s.examples[0].ids.back(), 2);
    EXPECT_EQ(static_cast<int64_t>(s.examples[0].ids.size()), full);
  }
  {  // two short: EOS and 'z' cut
    const auto s = tokenize_instruct({fits}, tok, tmpl, {full - 2, LossOn::response}, "t");
    EXPECT_EQ(s.stats.truncated, 1);
    EXPECT_EQ(s.stats.longest, full);
    const auto& e = s.examples[0];
    ASSERT_EQ(static_cast<int64_t>(e.ids.size()), full - 2);
    EXPECT_EQ(std::vector<int32_t>(e.ids.end() - 2, e.ids.end()), test::byte_ids("xy"));
    EXPECT_EQ(count_loss_tokens(e), 2);
  }
  {  // room for one response token only
    const auto s = tokenize_instruct({fits}, tok, tmpl, {P + 1, LossOn::response}, "t");
    EXPECT_EQ(s.examples[0].ids.back(), test::byte_ids("x")[0]);
    EXPECT_EQ(count_loss_tokens(s.examples[0]), 1);
  }
  {  // a longer prompt that alone fills max_length is dropped and counted
    const InstructRecord longer{"a much longer instruction", "", "ok"};
    const auto s = tokenize_instruct({fits, longer, fits}, tok, tmpl, {P + 4, LossOn::response}, "t");
    EXPECT_EQ(s.stats.records, 3);
    EXPECT_EQ(s.stats.examples, 2);
    EXPECT_EQ(s.stats.dropped, 1);
    EXPECT_EQ(s.examples.size(), 2u);
  }
}

TEST(DataInstruct, AllExamplesTooLongIsAnErrorNamingTheLimit) {
  const test::FakeTokenizer tok;
  const AlpacaTemplate tmpl;
  const InstructRecord r{"a", "", "b"};
  const auto P = static_cast<int64_t>(tmpl.prompt(r).size()) + 1;
  test::expect_error(
      [&] { tokenize_instruct({r, r}, tok, tmpl, {P, LossOn::response}, "data.json"); },
      {"data.json", "all 2 examples", "max_length " + std::to_string(P),
       "shortest prompt takes " + std::to_string(P)});
  test::expect_error([&] { tokenize_instruct({}, tok, tmpl, {}, "data.json"); },
                     {"data.json", "empty dataset"});
  test::expect_error([&] { tokenize_instruct({r}, tok, tmpl, {1, LossOn::all}, "data.json"); },
                     {"max_length", "1"});
}

TEST(DataInstruct, SpecialTokenEdgeCases) {
  const AlpacaTemplate tmpl;
  const InstructRecord r{"a", "", ""};  // empty output: the response is EOS alone
  const auto e = tokenize_instruct({r}, test::FakeTokenizer(), tmpl, {}, "t").examples.at(0);
  EXPECT_EQ(e.ids.back(), 2);
  EXPECT_EQ(count_loss_tokens(e), 1);

  const test::FakeTokenizer no_bos({}, -1, 2);
  const auto nb = tokenize_instruct({r}, no_bos, tmpl, {}, "t").examples.at(0);
  EXPECT_EQ(nb.ids.front(), test::byte_ids("B")[0]);  // the template's first letter

  const test::FakeTokenizer no_eos({}, 1, -1);
  test::expect_error([&] { tokenize_instruct({r}, no_eos, tmpl, {}, "t"); }, {"t", "EOS"});
  EXPECT_EQ(parse_loss_on("all", "cfg"), LossOn::all);
  EXPECT_STREQ(to_string(LossOn::response), "response");
  test::expect_error([] { parse_loss_on("prompt", "cfg"); }, {"cfg", "loss_on", "prompt"});
}

}  // namespace
}  // namespace l4q
