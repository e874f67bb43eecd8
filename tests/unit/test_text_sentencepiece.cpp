// SentencePieceTokenizer: llama2.c's ids for stories260K, the LLaMA-2 tokenizer, byte
// fallback, round trips, decode rules of sentencepiece 0.2.0, the GGUF-vocabulary
// constructor, load_tokenizer and the models it must refuse. Expected ids come from Python
// sentencepiece 0.2.0 (tests/interop/test_sentencepiece.py compares far more text).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "l4q/error.h"
#include "l4q/text/sentencepiece.h"
#include "test_support.h"

namespace {

using l4q::SentencePieceModel;
using l4q::SentencePieceTokenizer;
using l4q::SentencePieceType;
using l4q::test::expect_error;

const std::string kAssets = std::string(L4Q_SOURCE_DIR) + "/assets/stories260K/";
const std::string kTok512 = kAssets + "tok512.model";
const std::string kLlama2 = std::string(L4Q_SOURCE_DIR) + "/../shared/data/llama2_tokenizer.model";
const std::string kU2581 = "\xE2\x96\x81";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream f(path);
  std::vector<int32_t> ids;
  for (int32_t id; f >> id;) ids.push_back(id);
  return ids;
}

const SentencePieceTokenizer& tok512() {
  static const SentencePieceTokenizer tok(kTok512);
  return tok;
}

// A scratch directory removed at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/l4q_text_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

TEST(TextSentencePiece, Tok512Properties) {
  const auto& t = tok512();
  EXPECT_EQ(t.vocab_size(), 512);
  EXPECT_EQ(t.unk_id(), 0);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.pad_id(), -1);
  EXPECT_EQ(t.piece(1), "<s>");
  EXPECT_EQ(t.type(3), SentencePieceType::kByte);
  EXPECT_EQ(t.piece(3), "<0x00>");
  EXPECT_EQ(t.piece_to_id(kU2581), 410);
  EXPECT_EQ(t.piece_to_id("no such piece"), 0);  // sentencepiece maps unknown pieces to <unk>
  EXPECT_EQ(t.model().trainer_spec.model_type, l4q::SentencePieceModelType::kBpe);
  EXPECT_TRUE(t.model().trainer_spec.byte_fallback);
  EXPECT_EQ(t.model().normalizer_spec.name.value_or(""), "identity");
}

// run.c printed the pieces of the 256 greedy ids after BOS, then "\n".
TEST(TextSentencePiece, Tok512ReproducesLlama2cGreedyOutput) {
  const auto& t = tok512();
  const std::vector<int32_t> ids = read_ids(kAssets + "stories260K.greedy256.ids");
  ASSERT_EQ(ids.size(), 256u);
  const std::string printed = slurp(kAssets + "stories260K.greedy256.txt");
  ASSERT_FALSE(printed.empty());
  ASSERT_EQ(printed.back(), '\n');
  const std::string text = printed.substr(0, printed.size() - 1);

  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.encode(text), ids);
  std::vector<int32_t> with_bos = {1};
  with_bos.insert(with_bos.end(), ids.begin(), ids.end());
  EXPECT_EQ(t.encode(text, true), with_bos);
  EXPECT_EQ(t.decode(with_bos), text);

  std::string streamed;
  int32_t prev = t.bos_id();
  for (const int32_t id : ids) {
    streamed += t.decode_stream(prev, id);
    prev = id;
  }
  EXPECT_EQ(streamed + "\n", printed);
}

// spm_encode (Debian's sentencepiece CLI, a separate process) encodes line by line.
TEST(TextSentencePiece, Tok512MatchesSpmEncodePerLine) {
  if (!exists("/usr/bin/spm_encode")) GTEST_SKIP() << "spm_encode not installed (apt sentencepiece)";
  const std::string input = kAssets + "stories260K.greedy256.txt";
  const std::string cmd = "/usr/bin/spm_encode --model='" + kTok512 + "' --output_format=id < '" + input + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ASSERT_EQ(::pclose(p), 0) << cmd;

  std::istringstream text(slurp(input)), ref(out);
  std::string line, ref_line;
  int lines = 0;
  while (std::getline(text, line)) {
    ASSERT_TRUE(std::getline(ref, ref_line)) << "spm_encode gave fewer lines";
    std::istringstream ids(ref_line);
    std::vector<int32_t> want;
    for (int32_t id; ids >> id;) want.push_back(id);
    EXPECT_EQ(tok512().encode(line), want) << "line " << lines;
    ++lines;
  }
  EXPECT_EQ(lines, 4);
}

TEST(TextSentencePiece, Llama2HelloWorld) {
  if (!exists(kLlama2)) GTEST_SKIP() << kLlama2 << " absent (test-only LLaMA-2 tokenizer)";
  const SentencePieceTokenizer t(kLlama2);
  EXPECT_EQ(t.vocab_size(), 32000);
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{15043, 3186}));
  EXPECT_EQ(t.encode("Hello world", true, true), (std::vector<int32_t>{1, 15043, 3186, 2}));
  EXPECT_EQ(t.decode({1, 15043, 3186, 2}), "Hello world");
  EXPECT_EQ(t.encode("日本"), (std::vector<int32_t>{29871, 30325, 30346}));
  EXPECT_EQ(t.encode("😀"), (std::vector<int32_t>{29871, 243, 162, 155, 131}));
  EXPECT_EQ(t.decode_stream(1, 15043), "Hello");
  EXPECT_EQ(t.decode_stream(15043, 3186), " world");
}

TEST(TextSentencePiece, ByteFallbackForEmojiAndCjk) {
  const auto& t = tok512();
  // "▁" then the UTF-8 bytes of U+1F600 as <0xXX> pieces (id = 3 + byte).
  EXPECT_EQ(t.encode("😀"), (std::vector<int32_t>{410, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80}));
  EXPECT_EQ(t.encode("日本"),
            (std::vector<int32_t>{410, 3 + 0xE6, 3 + 0x97, 3 + 0xA5, 3 + 0xE6, 3 + 0x9C, 3 + 0xAC}));
  EXPECT_EQ(t.encode_pieces("😀"),
            (std::vector<std::string>{kU2581, "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"}));
  EXPECT_EQ(t.encode("a\nb"), (std::vector<int32_t>{261, 3 + '\n', 430}));
  EXPECT_EQ(t.decode(t.encode("Lily 😀 日本 ok")), "Lily 😀 日本 ok");
  // Malformed UTF-8 becomes U+FFFD, one per bad byte, as sentencepiece's normalizer does.
  EXPECT_EQ(t.encode("ab\xff" "c"), (std::vector<int32_t>{261, 430, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD, 429}));
}

TEST(TextSentencePiece, RoundTripVariedText) {
  const auto& t = tok512();
  const std::vector<std::string> pool = {
      "a", "b", "Lily", "the", " ", " ", "  ", "\n", "\t", ".", ",", "'", "\"", "0", "42", "é",
      "ß", "Ω", "ж", "日", "本", "語", "😀", "🦙", "👩‍👩‍👧", "\x01", std::string(1, '\0'), "e\xCC\x81",
      "<s>", "</s>", "<unk>", "<0x41>"};
  std::mt19937 rng(42);
  for (int i = 0; i < 500; ++i) {
    std::string s;
    const int n = static_cast<int>(rng() % 30);
    for (int j = 0; j < n; ++j) s += pool[rng() % pool.size()];
    const auto ids = t.encode(s);
    EXPECT_EQ(t.decode(ids), s) << "text '" << s << "'";
    EXPECT_EQ(t.decode(t.encode(s, true, true)), s);
  }
  // The literal piece spellings are plain text to the encoder.
  EXPECT_NE(t.encode("<s>"), (std::vector<int32_t>{410, 1}));
}

// Decode rules of sentencepiece 0.2.0's DecodeIds (values checked against Python).
TEST(TextSentencePiece, DecodeFollowsSentencePiece) {
  const auto& t = tok512();
  const int32_t ws = 410, ws_h = 270;  // "▁", "▁h"
  EXPECT_EQ(t.decode({ws, ws_h}), " h");       // only the first dummy-prefix space goes
  EXPECT_EQ(t.decode({1, ws, ws_h}), " h");     // BOS is invisible
  EXPECT_EQ(t.decode({3 + 'A', ws, ws_h}), "A  h");
  EXPECT_EQ(t.decode({0, 5, 0}), " \xE2\x81\x87 \x02 \xE2\x81\x87 ");  // <unk> -> " ⁇ "
  EXPECT_EQ(t.decode({3 + 0xFF, 3 + 0xE2, 3 + 0x96, 3 + 0x81}), "\xEF\xBF\xBD" + kU2581);
  EXPECT_EQ(t.decode({}), "");
  expect_error([&] { t.decode({600}); }, {"tok512.model", "600", "outside the vocabulary"});
  expect_error([&] { t.decode({-1}); }, {"-1"});
}

TEST(TextSentencePiece, DecodeStreamLikeLlama2c) {
  const auto& t = tok512();
  const int32_t once = t.encode("Once")[0];
  ASSERT_EQ(t.piece(once), kU2581 + "Once");
  EXPECT_EQ(t.decode_stream(t.bos_id(), once), "Once");  // leading space dropped after BOS
  EXPECT_EQ(t.decode_stream(5, once), " Once");
  EXPECT_EQ(t.decode_stream(-1, once), " Once");
  EXPECT_EQ(t.decode_stream(5, 3 + '\n'), "\n");  // <0x0A> -> the byte
  EXPECT_EQ(t.decode_stream(5, 3 + 0xF0), std::string(1, '\xF0'));
  EXPECT_EQ(t.decode_stream(5, 2), "");  // </s>
  EXPECT_EQ(t.decode_stream(5, 0), " \xE2\x81\x87 ");
  expect_error([&] { t.decode_stream(1, 512); }, {"512"});
}

TEST(TextSentencePiece, EncodeEdgeCases) {
  const auto& t = tok512();
  EXPECT_TRUE(t.encode("").empty());
  EXPECT_EQ(t.encode("", true, true), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(t.encode(" "), (std::vector<int32_t>{410, 410}));
  EXPECT_EQ(t.normalize("Hello  world"), kU2581 + "Hello" + kU2581 + kU2581 + "world");
  EXPECT_EQ(t.normalize(""), "");
  EXPECT_EQ(t.encode("  hello   world  "),
            (std::vector<int32_t>{410, 410, 281, 306, 414, 410, 410, 263, 304, 341, 410, 410}));
}

// Normalizer options tok512 leaves at one value, set on a copy of its model.
TEST(TextSentencePiece, NormalizerOptions) {
  SentencePieceModel m = tok512().model();
  m.normalizer_spec.remove_extra_whitespaces = true;
  const SentencePieceTokenizer squeeze(m, "squeeze");
  EXPECT_EQ(squeeze.normalize("  hello   world  "), kU2581 + "hello" + kU2581 + "world");
  EXPECT_EQ(squeeze.normalize("   "), "");
  EXPECT_EQ(squeeze.decode(squeeze.encode("  hello   world  ")), "hello world");

  m = tok512().model();
  m.trainer_spec.treat_whitespace_as_suffix = true;
  EXPECT_EQ(SentencePieceTokenizer(m, "suffix").normalize("a b"), "a" + kU2581 + "b" + kU2581);

  m = tok512().model();
  m.normalizer_spec.add_dummy_prefix = false;
  const SentencePieceTokenizer no_prefix(m, "no prefix");
  EXPECT_EQ(no_prefix.normalize("a b"), "a" + kU2581 + "b");
  EXPECT_EQ(no_prefix.decode(no_prefix.encode(" a")), " a");

  m = tok512().model();
  m.normalizer_spec.escape_whitespaces = false;
  EXPECT_EQ(SentencePieceTokenizer(m, "no escape").normalize("a b"), " a b");
}

TEST(TextSentencePiece, UserDefinedPiecesStayWhole) {
  SentencePieceModel m = tok512().model();
  // Turn a normal piece into a user-defined one and add a new one.
  const int32_t ll = tok512().piece_to_id("ll");
  m.pieces[static_cast<size_t>(ll)].type = SentencePieceType::kUserDefined;
  m.pieces.push_back({"<sep>", 0.f, SentencePieceType::kUserDefined, {}});
  const SentencePieceTokenizer t(m, "user-defined");
  const auto pieces = t.encode_pieces("a<sep>b hello");
  const std::vector<std::string> want = {kU2581 + "a", "<sep>", "b", kU2581 + "he", "ll", "o"};
  EXPECT_EQ(pieces, want);
  EXPECT_EQ(t.decode(t.encode("a<sep>b hello")), "a<sep>b hello");
}

TEST(TextSentencePiece, NoByteFallbackMergesUnknownRuns) {
  SentencePieceModel m = tok512().model();
  m.trainer_spec.byte_fallback = false;
  for (auto& e : m.pieces)
    if (e.type == SentencePieceType::kByte) e.type = SentencePieceType::kUnused;
  const SentencePieceTokenizer t(m, "no byte fallback");
  // "▁" then one <unk> for the run of two unknown characters.
  EXPECT_EQ(t.encode("日本"), (std::vector<int32_t>{410, 0}));
  EXPECT_EQ(t.encode_pieces("日本"), (std::vector<std::string>{kU2581, "日本"}));
  EXPECT_EQ(t.decode(t.encode("a日本b")), "a \xE2\x81\x87 b");
}

TEST(TextSentencePiece, FromGgufStyleVocabulary) {
  const auto& ref = tok512();
  l4q::SentencePieceVocab v;
  for (int32_t i = 0; i < ref.vocab_size(); ++i) {
    v.pieces.push_back(ref.piece(i));
    v.scores.push_back(ref.score(i));
    v.types.push_back(static_cast<int32_t>(ref.type(i)));
  }
  const SentencePieceTokenizer t(v, "stories260K.gguf");
  const std::string text = slurp(kAssets + "stories260K.greedy256.txt");
  EXPECT_EQ(t.encode(text, true, true), ref.encode(text, true, true));
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.model().trainer_spec.model_type, l4q::SentencePieceModelType::kBpe);
  EXPECT_TRUE(t.model().trainer_spec.byte_fallback);
  EXPECT_EQ(t.model().trainer_spec.bos_piece, "<s>");
  EXPECT_FALSE(t.model().normalizer_spec.remove_extra_whitespaces);

  // Without types: <0xXX> pieces become BYTE and the special ids get their types.
  auto untyped = v;
  untyped.types.clear();
  const SentencePieceTokenizer u(untyped, "untyped");
  EXPECT_EQ(u.encode("Lily 😀 日本"), ref.encode("Lily 😀 日本"));
  EXPECT_EQ(u.type(0), SentencePieceType::kUnknown);
  EXPECT_EQ(u.type(1), SentencePieceType::kControl);
  EXPECT_EQ(u.type(3), SentencePieceType::kByte);

  auto bad = v;
  bad.scores.pop_back();
  expect_error([&] { SentencePieceTokenizer x(bad, "g.gguf"); }, {"g.gguf", "scores", "512", "511"});
  bad = v;
  bad.types[7] = 0;
  expect_error([&] { SentencePieceTokenizer x(bad, "g.gguf"); }, {"token 7", "type 0"});
  bad = v;
  bad.unk_id = 5;
  expect_error([&] { SentencePieceTokenizer x(bad, "g.gguf"); }, {"unk id 5", "BYTE", "UNKNOWN"});
  bad = v;
  bad.bos_id = 512;
  expect_error([&] { SentencePieceTokenizer x(bad, "g.gguf"); }, {"bos id 512"});
  bad = v;
  bad.types[300] = static_cast<int32_t>(SentencePieceType::kByte);  // a 257th byte piece
  expect_error([&] { SentencePieceTokenizer x(bad, "g.gguf"); }, {"piece 300", "not spelled <0xXX>"});
}

TEST(TextSentencePiece, LoadTokenizer) {
  const auto t = l4q::load_tokenizer(kTok512);
  EXPECT_EQ(t->vocab_size(), 512);
  EXPECT_EQ(t->encode("Lily"), (std::vector<int32_t>{317}));

  TempDir dir;
  l4q::write_sentencepiece_model(tok512().model(), dir.path + "/tokenizer.model");
  EXPECT_EQ(l4q::load_tokenizer(dir.path)->encode("Lily"), (std::vector<int32_t>{317}));

  std::ofstream(dir.path + "/tokenizer.json") << "{\"model\": {}}";
  expect_error([&] { l4q::load_tokenizer(dir.path + "/tokenizer.json"); }, {"tokenizer.json", "JSON"});
  expect_error([&] { l4q::load_tokenizer(dir.path + "/missing.model"); }, {"missing.model", "cannot open"});
  TempDir empty;
  expect_error([&] { l4q::load_tokenizer(empty.path); }, {"no tokenizer.model"});
  std::ofstream(dir.path + "/garbage.model") << "\xff\xff\xff";
  expect_error([&] { l4q::load_tokenizer(dir.path + "/garbage.model"); }, {"garbage.model"});
}

TEST(TextSentencePiece, RefusesWhatItCannotEncodeExactly) {
  const SentencePieceModel base = tok512().model();
  const auto refuse = [&](auto edit, std::initializer_list<std::string> fragments) {
    SentencePieceModel m = base;
    edit(m);
    expect_error([&] { SentencePieceTokenizer t(m, "edited.model"); }, fragments);
  };
  refuse([](SentencePieceModel& m) { m.trainer_spec.model_type = l4q::SentencePieceModelType::kUnigram; },
         {"edited.model", "UNIGRAM", "BPE"});
  refuse([](SentencePieceModel& m) { m.normalizer_spec.precompiled_charsmap = "xxxx"; m.normalizer_spec.name = "nmt_nfkc"; },
         {"nmt_nfkc", "precompiled_charsmap"});
  refuse([](SentencePieceModel& m) { m.denormalizer_spec.emplace().precompiled_charsmap = "x"; },
         {"denormalizer"});
  refuse([](SentencePieceModel& m) { m.pieces[0].type = SentencePieceType::kNormal; }, {"no UNKNOWN"});
  refuse([](SentencePieceModel& m) { m.pieces[1].type = SentencePieceType::kUnknown; }, {"second UNKNOWN"});
  refuse([](SentencePieceModel& m) { m.pieces[300].piece = m.pieces[301].piece; }, {"piece 301", "already defined"});
  refuse([](SentencePieceModel& m) { m.pieces[300].piece.clear(); }, {"piece 300 is empty"});
  refuse([](SentencePieceModel& m) { m.pieces[300].piece = std::string("a\0b", 3); }, {"NUL"});
  refuse([](SentencePieceModel& m) { m.pieces[300].piece = std::string(8000, 'a'); }, {"8000 bytes"});
  refuse([](SentencePieceModel& m) { m.trainer_spec.byte_fallback = false; }, {"BYTE piece", "byte_fallback is false"});
  refuse([](SentencePieceModel& m) { m.pieces[3 + 0x41].type = SentencePieceType::kNormal; }, {"<0x41>", "missing"});
  refuse([](SentencePieceModel& m) { m.pieces.clear(); }, {"no pieces"});
}

TEST(TextSentencePiece, SpecialIdsFollowPieceNames) {
  SentencePieceModel m = tok512().model();
  m.pieces[2].type = SentencePieceType::kNormal;  // "</s>" no longer a control piece
  m.trainer_spec.bos_piece = "</s>";
  const SentencePieceTokenizer t(m, "renamed");
  EXPECT_EQ(t.eos_id(), -1);
  EXPECT_EQ(t.bos_id(), -1);  // "</s>" is not CONTROL
  expect_error([&] { t.encode("a", true); }, {"no BOS"});
  expect_error([&] { t.encode("a", false, true); }, {"no EOS"});
}

TEST(TextSentencePiece, EncodesOneMegabyte) {
  // Throughput is reported in docs/tokenizers.md; here only that a large input works and
  // agrees with line-by-line encoding where lines do not interact (newline is a byte piece).
  const auto& t = tok512();
  const std::string line = slurp(kAssets + "stories260K.greedy256.txt");
  std::string big;
  while (big.size() < (1u << 20)) big += line;
  const auto ids = t.encode(big);
  EXPECT_EQ(t.decode(ids), big);
  EXPECT_GT(ids.size(), big.size() / 4);
}

}  // namespace
