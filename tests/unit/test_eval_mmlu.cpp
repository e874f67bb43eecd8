// MMLU: the reader (directory and .zip, with the ZIP/deflate decoder under it), evaluate.py's
// prompt byte for byte, the choice of the answer by log-likelihood (mocked scores, and the
// model scorer against direct forward passes), and the cropping of long prompts.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "eval/zip_reader.h"
#include "l4q/eval/multiple_choice.h"
#include "l4q/text/tokenizer.h"
#include "test_model_support.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace l4q {
namespace {

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

// Python zipfile: mmlu/data/ (a folder entry), dev and test CSVs deflated (dynamic Huffman
// blocks), val stored. The dev file has quoted fields with "" and an embedded line break.
const char* kTinyZipHex =
    "504b03041400000000003a97775d0000000000000000000000000a0000006d6d6c752f646174612f504b0304140000000800000021005c1312945200"
    "000057000000220000006d6d6c752f646174612f6465762f74696e795f7375626a6563745f6465762e6373760dc9b10e40301405d0bd5ff172577729"
    "76093f6033172fe98b6a89fa7fce7a9618aad823bef1033d5b76ec393accb61d52a30a70bfa5ea0e48c94ab9928647c12b05cb44a0ace04d9c6faae6"
    "92e5ff26f701504b0304140000000800000021004f5eb8a5e60000005e030000240000006d6d6c752f646174612f746573742f74696e795f7375626a"
    "6563745f746573742e63737685d23b6ec3301045d1deabe0025868f8671ac34936e025c8091109909cc09691ed47ce3c4a6c08561c36a7b878e747ba"
    "2fe3f755742fe277183f0631a565493731dec5f5315fd6ab3bca7efa197ad1c94b5a9ecf573fcfcff7334dffffd3e19c19aa3294196286c0101892af"
    "3ba3aa8cca8c6246815160947cdb195d65746634331a8c06a3e5fbce98761bc38c0163c098b28d6db7b1cc5830168c2ddbb8761bc78c03e3c0b8b28d"
    "6fb7f1cc78301e8c2fdb84769bc04c0013c084b24d6cb789cc4430114c2cdb507dc65b1cc28e290f99f292d7a30844f52d6f85288f795bf336675a2b"
    "fd01504b03041400000000000000210044897b418e0000008e000000220000006d6d6c752f646174612f76616c2f74696e795f7375626a6563745f76"
    "616c2e6373765175657374696f6e20303a207768696368206c6574746572206973206e756d62657220303f2c616c70686120302c6265746120302c67"
    "616d6d6120302c64656c746120302c410a5175657374696f6e20313a207768696368206c6574746572206973206e756d62657220313f2c616c706861"
    "20312c6265746120312c67616d6d6120312c64656c746120312c420a504b010214031400000000003a97775d0000000000000000000000000a000000"
    "0000000000001000fd41000000006d6d6c752f646174612f504b01021403140000000800000021005c13129452000000570000002200000000000000"
    "000000008001280000006d6d6c752f646174612f6465762f74696e795f7375626a6563745f6465762e637376504b0102140314000000080000002100"
    "4f5eb8a5e60000005e0300002400000000000000000000008001ba0000006d6d6c752f646174612f746573742f74696e795f7375626a6563745f7465"
    "73742e637376504b010214031400000000000000210044897b418e0000008e0000002200000000000000000000008001e20100006d6d6c752f646174"
    "612f76616c2f74696e795f7375626a6563745f76616c2e637376504b050600000000040004002a010000b00200000000";

fs::path scratch(const std::string& name) {
  auto p = fs::temp_directory_path() / ("l4q-test-eval-" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

TEST(EvalZip, InflatesFixedStoredAndDynamicBlocks) {
  const std::string expect = [] {
    std::string s;
    for (int i = 0; i < 3; ++i) s += "abracadabra abracadabra abracadabra! ";
    return s;
  }();
  EXPECT_EQ(inflate_raw(from_hex("4b4c2a4a4c4e4c4904520a89d8d98ab824c8500400"), expect.size(), "fixed"), expect);
  const std::string stored = "016f0090ff" + [&] {
    std::string h;
    for (unsigned char c : expect) {
      char b[3];
      std::snprintf(b, sizeof b, "%02x", c);
      h += b;
    }
    return h;
  }();
  EXPECT_EQ(inflate_raw(from_hex(stored), expect.size(), "stored"), expect);
  EXPECT_EQ(crc32(expect), 0xca5a2c67u);
  EXPECT_EQ(crc32("123456789"), 0xcbf43926u);
  test::expect_error([&] { inflate_raw(from_hex("4b4c2a4a4c4e4c4904520a89"), expect.size(), "cut"); },
                     {"cut", "ends early"});
  test::expect_error([&] { inflate_raw(from_hex("4b4c2a4a4c4e4c4904520a89d8d98ab824c8500400"), 10, "small"); },
                     {"small", "longer than the 10 bytes"});
  test::expect_error([&] { inflate_raw(from_hex("07"), 10, "bad"); }, {"bad", "block type 3"});
}

TEST(EvalZip, ReadsEntriesAndRejectsDamage) {
  const std::string bytes = from_hex(kTinyZipHex);
  const ZipReader zip(bytes, "tiny.zip");
  ASSERT_EQ(zip.entries().size(), 4u);
  EXPECT_EQ(zip.entries()[1].name, "mmlu/data/dev/tiny_subject_dev.csv");
  EXPECT_EQ(zip.entries()[1].method, 8);
  EXPECT_EQ(zip.entries()[3].method, 0);
  EXPECT_EQ(zip.read(zip.entries()[1]).substr(0, 22), "What is 1+1?,1,2,3,4,B");
  // Flip one byte of the deflated dev data: either the stream or its CRC fails.
  std::string bad = bytes;
  bad[zip.entries()[1].local_header_offset + 30 + zip.entries()[1].name.size() + 5] ^= 0x20;
  const ZipReader damaged(bad, "bad.zip");
  EXPECT_THROW(damaged.read(damaged.entries()[1]), Error);
  test::expect_error([] { ZipReader(std::string(100, 'x'), "junk.zip"); }, {"junk.zip", "not a ZIP archive"});
  test::expect_error([&] { ZipReader(bytes.substr(0, bytes.size() - 3), "cut.zip"); }, {"cut.zip", "not a ZIP"});
}

TEST(EvalMmlu, LoadsFromZipAndDirectoryAlike) {
  const auto dir = scratch("zip");
  write(dir / "tiny.zip", from_hex(kTinyZipHex));
  const auto from_zip = load_mmlu((dir / "tiny.zip").string());
  ASSERT_EQ(from_zip.size(), 1u);
  EXPECT_EQ(from_zip[0].name, "tiny_subject");
  ASSERT_EQ(from_zip[0].dev.size(), 2u);
  EXPECT_EQ(from_zip[0].dev[1].question, "Pick the \"quoted\" one, please");
  EXPECT_EQ(from_zip[0].dev[1].choices, (std::vector<std::string>{"plain", "a, b", "q", "multi\nline"}));
  EXPECT_EQ(from_zip[0].dev[1].answer, 2);
  ASSERT_EQ(from_zip[0].eval.size(), 12u);
  EXPECT_EQ(from_zip[0].eval[5].answer, 1);
  EXPECT_EQ(load_mmlu((dir / "tiny.zip").string(), {}, "val")[0].eval.size(), 2u);

  // The same files in a directory tree.
  const ZipReader zip((dir / "tiny.zip").string());
  for (const auto& e : zip.entries())
    if (e.name.back() != '/') write(dir / "x" / e.name, zip.read(e));
  const auto from_dir = load_mmlu((dir / "x").string(), {"tiny_subject"});
  ASSERT_EQ(from_dir.size(), 1u);
  EXPECT_EQ(from_dir[0].eval.size(), 12u);
  EXPECT_EQ(from_dir[0].dev[1].choices, from_zip[0].dev[1].choices);

  test::expect_error([&] { load_mmlu((dir / "x").string(), {"astronomy"}); }, {"subject 'astronomy' not found"});
  fs::remove(dir / "x" / "mmlu/data/dev/tiny_subject_dev.csv");
  test::expect_error([&] { load_mmlu((dir / "x").string()); }, {"tiny_subject", "no dev file"});
  test::expect_error([&] { load_mmlu((dir / "nothing").string()); }, {"no such directory or .zip"});
}

TEST(EvalMmlu, RejectsMalformedRows) {
  test::expect_error([] { parse_mc_rows({{"q", "a", "b", "E"}}, "f.csv"); }, {"f.csv", "row 1", "'E'", "A..B"});
  test::expect_error([] { parse_mc_rows({{"q", "a", "B"}}, "f.csv"); }, {"row 1", "3 fields"});
  test::expect_error([] { parse_mc_rows({{"q", "a", "b", "A"}, {"q", "a", "b", "c", "A"}}, "f.csv"); },
                     {"row 2", "5 fields", "have 4"});
  EXPECT_EQ(parse_mc_rows({{"q", "a", "b", " B "}}, "f.csv")[0].answer, 1);
}

TEST(EvalMmlu, RealArchiveHasEverySplitWhenPresent) {
  const std::string zip = std::string(L4Q_SOURCE_DIR) + "/../shared/data/mmlu.zip";
  if (!fs::exists(zip)) GTEST_SKIP() << zip << " not present";
  size_t dev = 0, test = 0;
  const auto subjects = load_mmlu(zip);
  for (const auto& s : subjects) dev += s.dev.size(), test += s.eval.size();
  EXPECT_EQ(subjects.size(), 57u);
  EXPECT_EQ(dev, 285u);
  EXPECT_EQ(test, 14042u);
  size_t val = 0;
  for (const auto& s : load_mmlu(zip, {}, "val")) val += s.eval.size();
  EXPECT_EQ(val, 1531u);
}

McQuestion question(std::string q, std::vector<std::string> c, int answer) {
  McQuestion m;
  m.question = std::move(q);
  m.choices = std::move(c);
  m.answer = answer;
  return m;
}

TEST(EvalMmlu, PromptIsEvaluatePysExactly) {
  const std::vector<McQuestion> dev = {question("What is 2+2?", {"3", "4", "5", "6"}, 1),
                                       question("Pick C.", {"a", "b", "c", "d"}, 2)};
  const auto q = question("Which is a vowel?", {"b", "c", "e", "f"}, 2);
  EXPECT_EQ(mmlu_prompt("high_school_math", dev, 2, q),
            "The following are multiple choice questions (with answers) about  high school math.\n\n"
            "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n"
            "Pick C.\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\n"
            "Which is a vowel?\nA. b\nB. c\nC. e\nD. f\nAnswer:");
  EXPECT_EQ(mmlu_prompt("anatomy", dev, 0, q),
            "The following are multiple choice questions (with answers) about  anatomy.\n\n"
            "Which is a vowel?\nA. b\nB. c\nC. e\nD. f\nAnswer:");
  test::expect_error([&] { mmlu_prompt("anatomy", dev, 3, q); }, {"shots", "0..2", "got 3"});
}

class EvalMmluScoring : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = load_tokenizer(std::string(L4Q_SOURCE_DIR) + "/assets/stories260K/tok512.model");
    McSubject s;
    s.name = "toy";
    s.dev = {question("Sky?", {"blue", "red", "green", "black"}, 0),
             question("Grass?", {"blue", "red", "green", "black"}, 2)};
    s.eval = {question("Blood?", {"blue", "red", "green", "black"}, 1),
              question("Night?", {"blue", "red", "green", "black"}, 3),
              question("Sea?", {"blue", "red", "green", "black"}, 0)};
    subjects_ = {s};
  }
  std::unique_ptr<Tokenizer> tok_;
  std::vector<McSubject> subjects_;
};

TEST_F(EvalMmluScoring, PicksTheChoiceWithTheHighestLogLikelihood) {
  // A mock that likes the correct letter: it decodes each continuation and checks what it
  // was given (BOS + the prompt, then " A", " B", ...).
  std::vector<std::string> answers = {"B", "D", "A"};
  size_t call = 0;
  const ContinuationScorer oracle = [&](const std::vector<std::vector<int32_t>>& seqs,
                                        const std::vector<size_t>& starts) {
    EXPECT_EQ(seqs.size(), 4u);
    const auto& q = subjects_[0].eval[call];
    const auto prompt = mmlu_prompt("toy", subjects_[0].dev, 2, q);
    std::vector<double> ll;
    for (size_t c = 0; c < seqs.size(); ++c) {
      const std::vector<int32_t> ctx(seqs[c].begin(), seqs[c].begin() + starts[c]);
      EXPECT_EQ(ctx, tok_->encode(prompt, true));
      const std::vector<int32_t> cont(seqs[c].begin() + starts[c], seqs[c].end());
      const std::string letter = tok_->decode(cont);
      EXPECT_EQ(tok_->decode(seqs[c]), prompt + " " + std::string(1, char('A' + c)));
      ll.push_back(letter.find(answers[call]) != std::string::npos ? -1.0 : -2.0);
    }
    ++call;
    return ll;
  };
  McOptions opt;
  opt.shots = 2;
  const auto r = evaluate_multiple_choice(subjects_, *tok_, oracle, opt);
  EXPECT_EQ(call, 3u);
  ASSERT_EQ(r.subjects.size(), 1u);
  EXPECT_EQ(r.subjects[0].correct, 3);
  EXPECT_DOUBLE_EQ(r.micro_accuracy(), 1.0);

  // Always "A": right once in three; --limit 2 scores the first two only.
  const ContinuationScorer always_a = [](const std::vector<std::vector<int32_t>>& s, const std::vector<size_t>&) {
    std::vector<double> ll(s.size(), -5.0);
    ll[0] = -0.5;
    return ll;
  };
  EXPECT_EQ(evaluate_multiple_choice(subjects_, *tok_, always_a, opt).subjects[0].correct, 1);
  opt.limit = 2;
  const auto lim = evaluate_multiple_choice(subjects_, *tok_, always_a, opt);
  EXPECT_EQ(lim.subjects[0].total, 2);
  EXPECT_EQ(lim.subjects[0].correct, 0);
  EXPECT_NE(lim.to_json().find("\"subject\": \"toy\""), std::string::npos) << lim.to_json();
}

TEST_F(EvalMmluScoring, LongPromptsLoseShotsThenTheirStart) {
  const auto& q = subjects_[0].eval[0];
  const size_t one_shot = tok_->encode(mmlu_prompt("toy", subjects_[0].dev, 1, q) + " A", true).size();
  const size_t no_shot = tok_->encode(mmlu_prompt("toy", subjects_[0].dev, 0, q) + " A", true).size();
  std::vector<size_t> lengths;
  const ContinuationScorer record = [&](const std::vector<std::vector<int32_t>>& s, const std::vector<size_t>&) {
    for (const auto& x : s) lengths.push_back(x.size());
    return std::vector<double>(s.size(), 0.0);
  };
  McOptions opt;
  opt.shots = 2;
  opt.limit = 1;
  opt.max_context = static_cast<int64_t>(one_shot) + 1;  // " B" may be one token shorter
  auto r = evaluate_multiple_choice(subjects_, *tok_, record, opt);
  EXPECT_EQ(r.subjects[0].fewer_shots, 1);
  EXPECT_EQ(r.subjects[0].cut, 0);
  for (size_t n : lengths) EXPECT_LE(n, one_shot + 1);
  lengths.clear();
  opt.max_context = static_cast<int64_t>(no_shot) - 3;
  r = evaluate_multiple_choice(subjects_, *tok_, record, opt);
  EXPECT_EQ(r.subjects[0].cut, 1);
  for (size_t n : lengths) EXPECT_LE(n, no_shot - 3);
  opt.max_context = 1;
  test::expect_error([&] { evaluate_multiple_choice(subjects_, *tok_, record, opt); },
                     {"toy question 1", "longer than the context of 1"});
}

TEST(EvalMmluModelScorer, MatchesFullForwardPassesAcrossCalls) {
  const auto cfg = test::tiny_llama_config();
  const LlamaModel model(cfg, test::random_llama_weights(cfg, at::kDouble, 5));
  auto direct = [&](const std::vector<int32_t>& s, size_t start) {
    at::NoGradGuard ng;
    const auto logp = at::log_softmax(model.forward(at::tensor(std::vector<int64_t>(s.begin(), s.end()), at::kLong).unsqueeze(0))[0], -1);
    double sum = 0;
    for (size_t t = start; t < s.size(); ++t) sum += logp[t - 1][s[t]].item<double>();
    return sum;
  };
  const auto scorer = model_continuation_scorer(model);
  // Shared prefixes between and within calls, continuations of 1 and 2 tokens, then an
  // unrelated sequence (nothing to reuse) and a shorter one (the cache is cut back).
  const std::vector<std::vector<std::vector<int32_t>>> calls = {
      {{1, 5, 9, 13, 20, 7}, {1, 5, 9, 13, 20, 8, 3}, {1, 5, 9, 13, 21}},
      {{1, 5, 9, 13, 40, 41, 7}, {1, 5, 9, 13, 40, 41, 60}},
      {{2, 30, 31}, {1, 5, 9}}};
  const std::vector<std::vector<size_t>> starts = {{5, 5, 4}, {6, 6}, {2, 2}};
  for (size_t c = 0; c < calls.size(); ++c) {
    const auto got = scorer(calls[c], starts[c]);
    ASSERT_EQ(got.size(), calls[c].size());
    for (size_t i = 0; i < got.size(); ++i) {
      const double want = direct(calls[c][i], starts[c][i]);
      EXPECT_NEAR(got[i], want, 1e-10 * std::abs(want)) << "call " << c << " sequence " << i;
    }
  }
  test::expect_error([&] { scorer({{1, 2}}, {2}); }, {"continuation start 2", "[1, 2)"});
  test::expect_error([&] { scorer({{1, 99}}, {1}); }, {"token id 99"});
}

}  // namespace
}  // namespace l4q
