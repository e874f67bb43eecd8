// Byte-level BPE: GPT-2 byte map, pre-tokenizers (expected words from HF `tokenizers`
// pre_tokenize_str on the same strings), merges by rank, special tokens, tokenizer.json, and
// SmolLM2's own vocabulary when tools/fetch-smollm2.sh has put it in the cache.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "l4q/data/instruct.h"
#include "l4q/data/prompt_template.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/text/bpe.h"
#include "l4q/text/bpe_json.h"
#include "test_bpe_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::small_vocab;

using Words = std::vector<std::string>;

Words words(const std::string& text, BpePreTokenizer p) {
  Words out;
  for (auto w : bpe_pre_tokenize(text, p)) out.emplace_back(w);
  return out;
}

TEST(TextBpe, ByteMapIsGpt2s) {
  EXPECT_EQ(bpe_byte_to_unicode(' '), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(bpe_byte_to_unicode('\n'), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(bpe_byte_to_unicode(0x00), "\xC4\x80");  // U+0100, the first unprintable byte
  EXPECT_EQ(bpe_byte_to_unicode(0xAD), "\xC5\x83");  // U+0143 'Ń', the last of the 68
  EXPECT_EQ(bpe_byte_to_unicode('A'), "A");
  EXPECT_EQ(bpe_byte_to_unicode(0xE9), "\xC3\xA9");  // printable Latin-1 maps to itself
  std::set<std::string> seen;
  std::string all;
  for (int b = 0; b < 256; ++b) {
    seen.insert(bpe_byte_to_unicode(static_cast<uint8_t>(b)));
    all.push_back(static_cast<char>(b));
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(bpe_unicode_to_bytes(bpe_bytes_to_unicode(all)), all);
  EXPECT_EQ(bpe_unicode_to_byte(0x120), ' ');
  EXPECT_EQ(bpe_unicode_to_byte(0x144), -1);
  // Characters outside the map (an added token's text) pass through.
  EXPECT_EQ(bpe_unicode_to_bytes("\xE4\xBD\xA0" "\xC4\xA0"), "\xE4\xBD\xA0 ");
}

struct PreCase {
  std::string text;
  Words gpt2, smollm, llama3;
};

TEST(TextBpe, PreTokenizersMatchHfRegexes) {
  // Expected words: HF tokenizers 0.20.3 (Oniguruma) with the regexes of bpe_pretokenize.h.
  const std::vector<PreCase> cases = {
      {"Hello world", {"Hello", " world"}, {"Hello", " world"}, {"Hello", " world"}},
      {"I'm don't", {"I", "'m", " don", "'t"}, {"I", "'m", " don", "'t"}, {"I", "'m", " don", "'t"}},
      {"'S", {"'", "S"}, {"'", "S"}, {"'S"}},
      {"we'RE", {"we", "'", "RE"}, {"we", "'", "RE"}, {"we", "'RE"}},
      {"a   b", {"a", "  ", " b"}, {"a", "  ", " b"}, {"a", "  ", " b"}},
      {"a \n b", {"a", " \n", " b"}, {"a", " \n", " b"}, {"a", " \n", " b"}},
      {"x  ", {"x", "  "}, {"x", "  "}, {"x", "  "}},
      {"abc 12345", {"abc", " 12345"}, {"abc", " ", "1", "2", "3", "4", "5"}, {"abc", " ", "123", "45"}},
      // U+0301 COMBINING ACUTE is a mark: neither letter nor number.
      {"ke\xCC\x81x", {"ke", "\xCC\x81", "x"}, {"ke", "\xCC\x81", "x"}, {"ke", "\xCC\x81x"}},
      {"hi \xF0\x9F\x98\x80\xF0\x9F\x98\x80!", {"hi", " \xF0\x9F\x98\x80\xF0\x9F\x98\x80!"},
       {"hi", " \xF0\x9F\x98\x80\xF0\x9F\x98\x80!"}, {"hi", " \xF0\x9F\x98\x80\xF0\x9F\x98\x80!"}},
      {"\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",  // 你好，世界
       {"\xE4\xBD\xA0\xE5\xA5\xBD", "\xEF\xBC\x8C", "\xE4\xB8\x96\xE7\x95\x8C"},
       {"\xE4\xBD\xA0\xE5\xA5\xBD", "\xEF\xBC\x8C", "\xE4\xB8\x96\xE7\x95\x8C"},
       {"\xE4\xBD\xA0\xE5\xA5\xBD", "\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C"}},
      // NO-BREAK SPACE is \s; U+001C is not (though Python's isspace says so).
      {"a\xC2\xA0" "b", {"a", "\xC2\xA0", "b"}, {"a", "\xC2\xA0", "b"}, {"a", "\xC2\xA0" "b"}},
      {"a\x1c" "b", {"a", "\x1c", "b"}, {"a", "\x1c", "b"}, {"a", "\x1c" "b"}},
      {"a\n\n  b", {"a", "\n\n ", " b"}, {"a", "\n\n ", " b"}, {"a", "\n\n", " ", " b"}},
      {"?!\n\nx", {"?!", "\n", "\n", "x"}, {"?!", "\n", "\n", "x"}, {"?!\n\n", "x"}},
      {"(hello", {"(", "hello"}, {"(", "hello"}, {"(hello"}},
      // ARABIC-INDIC digits are \p{N}.
      {"\xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4", {"\xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4"},
       {"\xD9\xA1", "\xD9\xA2", "\xD9\xA3", "\xD9\xA4"}, {"\xD9\xA1\xD9\xA2\xD9\xA3", "\xD9\xA4"}},
      {"", {}, {}, {}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(words(c.text, BpePreTokenizer::gpt2), c.gpt2) << "gpt2: '" << c.text << "'";
    EXPECT_EQ(words(c.text, BpePreTokenizer::smollm), c.smollm) << "smollm: '" << c.text << "'";
    EXPECT_EQ(words(c.text, BpePreTokenizer::llama3), c.llama3) << "llama3: '" << c.text << "'";
  }
}

TEST(TextBpe, PreTokenizerTilesMalformedUtf8) {
  // Invalid bytes are single "other" characters; the words still cover every byte.
  const std::string text = "ab\xff\xfe cd\xe4\xbd x\xc0";
  for (auto p : {BpePreTokenizer::gpt2, BpePreTokenizer::smollm, BpePreTokenizer::llama3}) {
    std::string joined;
    for (auto w : bpe_pre_tokenize(text, p)) joined += w;
    EXPECT_EQ(joined, text) << to_string(p);
  }
  EXPECT_EQ(words("ab\xff\xfe cd", BpePreTokenizer::gpt2), (Words{"ab", "\xff\xfe", " cd"}));
  EXPECT_EQ(parse_bpe_pre_tokenizer("smollm", "x"), BpePreTokenizer::smollm);
  EXPECT_EQ(parse_bpe_pre_tokenizer("llama-bpe", "x"), BpePreTokenizer::llama3);
  test::expect_error([] { parse_bpe_pre_tokenizer("qwen2", "m.gguf"); }, {"m.gguf", "qwen2", "not supported"});
}

int32_t byte_tok(char c) { return 3 + static_cast<uint8_t>(c); }
constexpr int32_t kBC = 259, kAB = 260, kAA = 261, kHE = 262, kSpT = 263, kSpThe = 264, kXY = 265,
                  kXYZ = 266, kUser = 267;

TEST(TextBpe, MergesLowestRankFirstLeftmostAmongEquals) {
  const BpeTokenizer tok(small_vocab(), "small");
  std::vector<int32_t> ids;
  tok.encode_word("abc", ids);  // "b c" outranks "a b"
  EXPECT_EQ(ids, (std::vector<int32_t>{byte_tok('a'), kBC}));
  ids.clear();
  tok.encode_word("aaa", ids);  // three a's, one merge: the leftmost pair
  EXPECT_EQ(ids, (std::vector<int32_t>{kAA, byte_tok('a')}));
  ids.clear();
  tok.encode_word("aaaa", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{kAA, kAA}));
  ids.clear();
  tok.encode_word(" the", ids);  // chains: Ġ t -> Ġt, h e -> he, Ġt he -> Ġthe
  EXPECT_EQ(ids, (std::vector<int32_t>{kSpThe}));
  EXPECT_EQ(tok.encode("xyz the ab"), (std::vector<int32_t>{kXYZ, kSpThe, byte_tok(' '), kAB}));
  EXPECT_EQ(tok.decode({kXYZ, kSpThe, byte_tok(' '), kAB}), "xyz the ab");
  EXPECT_EQ(tok.piece(kSpThe), "\xC4\xA0the");
  EXPECT_EQ(tok.token_bytes(kSpThe), " the");
}

TEST(TextBpe, IgnoreMergesTakesWholeWords) {
  auto v = small_vocab();
  v.tokens.push_back("abc");  // in the vocabulary, but no merge builds it
  v.types.push_back(BpeTokenType::normal);
  std::vector<int32_t> ids;
  BpeTokenizer(v, "v").encode_word("abc", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{byte_tok('a'), kBC}));
  v.ignore_merges = true;
  ids.clear();
  BpeTokenizer(v, "v").encode_word("abc", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{268}));
}

TEST(TextBpe, SpecialTokensSplitFirstAndDecodeToNothing) {
  const BpeTokenizer tok(small_vocab(), "small");
  const auto ids = tok.encode("<|im_start|>user\nab<|im_end|>USER<|im_start");
  std::vector<int32_t> want = {1};
  for (char c : std::string("user\n")) want.push_back(byte_tok(c));
  want.insert(want.end(), {kAB, 2, kUser});
  for (char c : std::string("<|im_start")) want.push_back(byte_tok(c));
  // "user\n" has no merges here; "<|im_start" (no closing "|>") is plain text.
  EXPECT_EQ(ids, want);
  EXPECT_EQ(tok.decode(ids), "user\nabUSER<|im_start");  // control tokens dropped
  EXPECT_EQ(tok.decode_stream(0, kUser), "USER");
  // No BOS unless the vocabulary asks for one (SmolLM2 does not).
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_EQ(tok.encode("ab", true, true), (std::vector<int32_t>{kAB, 2}));
  auto v = small_vocab();
  v.add_bos = true;
  const BpeTokenizer with_bos(v, "v");
  EXPECT_EQ(with_bos.bos_id(), 1);
  EXPECT_EQ(with_bos.encode("ab", true), (std::vector<int32_t>{1, kAB}));
}

TEST(TextBpe, BytesMissingFromTheVocabulary) {
  auto v = small_vocab();
  v.tokens[byte_tok('\x1d')] = "<unused>";
  v.types[byte_tok('\x1d')] = BpeTokenType::unused;
  EXPECT_EQ(BpeTokenizer(v, "v").encode("a\x1d" "b"), (std::vector<int32_t>{byte_tok('a'), byte_tok('b')}));
  v.unk_for_missing_bytes = true;
  EXPECT_EQ(BpeTokenizer(v, "v").encode("a\x1d" "b"), (std::vector<int32_t>{byte_tok('a'), 0, byte_tok('b')}));
}

TEST(TextBpe, RejectsInconsistentVocabularies) {
  auto v = small_vocab();
  v.tokens[kUser] = v.tokens[10];
  test::expect_error([&] { BpeTokenizer t(v, "dup.gguf"); }, {"dup.gguf", "duplicates token"});
  v = small_vocab();
  v.merges.push_back({"q", "zz"});
  test::expect_error([&] { BpeTokenizer t(v, "m.gguf"); }, {"m.gguf", "merge 8", "'zz'", "not in the vocabulary"});
  v = small_vocab();
  v.eos_id = 9999;
  test::expect_error([&] { BpeTokenizer t(v, "e.gguf"); }, {"eos id 9999"});
  v = small_vocab();
  v.types.pop_back();
  test::expect_error([&] { BpeTokenizer t(v, "t.gguf"); }, {"token types"});
  const BpeTokenizer ok(small_vocab(), "ok");
  test::expect_error([&] { ok.decode({5000}); }, {"token id 5000"});
}

std::string small_tokenizer_json(const std::string& pre) {
  const auto v = small_vocab();
  auto esc = [](const std::string& s) {
    std::string o;
    for (unsigned char c : s) {
      if (c == '"' || c == '\\') o += '\\';
      o += static_cast<char>(c);
    }
    return o;
  };
  std::string vocab, merges;
  for (size_t i = 3; i + 1 < v.tokens.size(); ++i)
    vocab += (vocab.empty() ? "" : ",") + ("\"" + esc(v.tokens[i]) + "\":" + std::to_string(i));
  for (const auto& m : v.merges) merges += (merges.empty() ? "" : ",") + ("\"" + esc(m.first) + " " + esc(m.second) + "\"");
  std::string added;
  for (int i = 0; i < 3; ++i)
    added += "{\"id\":" + std::to_string(i) + ",\"content\":\"" + v.tokens[static_cast<size_t>(i)] +
             "\",\"special\":true,\"normalized\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":false},";
  added += "{\"id\":267,\"content\":\"USER\",\"special\":false,\"normalized\":true}";
  return "{\"version\":\"1.0\",\"added_tokens\":[" + added + "],\"normalizer\":null,\"pre_tokenizer\":" + pre +
         ",\"post_processor\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},"
         "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"byte_fallback\":false,"
         "\"ignore_merges\":false,\"vocab\":{" + vocab + "},\"merges\":[" + merges + "]}}";
}

TEST(TextBpe, TokenizerJson) {
  const std::string smollm =
      "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
      "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}]}";
  const auto v = parse_bpe_tokenizer_json(small_tokenizer_json(smollm), "tokenizer.json",
                                          "{\"eos_token\": \"<|im_end|>\"}");
  EXPECT_EQ(v.pre, BpePreTokenizer::smollm);
  EXPECT_EQ(v.tokens, small_vocab().tokens);
  EXPECT_EQ(v.types, small_vocab().types);
  EXPECT_EQ(v.merges, small_vocab().merges);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.bos_id, -1);
  const BpeTokenizer tok(v, "tokenizer.json");
  EXPECT_EQ(tok.encode("<|im_start|>ab 12"),
            (std::vector<int32_t>{1, kAB, byte_tok(' '), byte_tok('1'), byte_tok('2')}));

  const std::string llama3 = std::string("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"") +
                             "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+" +
                             "\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}";
  EXPECT_EQ(parse_bpe_tokenizer_json(small_tokenizer_json(llama3), "t.json").pre, BpePreTokenizer::llama3);
  EXPECT_EQ(parse_bpe_tokenizer_json(small_tokenizer_json("{\"type\":\"ByteLevel\"}"), "t.json").pre,
            BpePreTokenizer::gpt2);

  test::expect_error([&] { parse_bpe_tokenizer_json(small_tokenizer_json("{\"type\":\"Whitespace\"}"), "w.json"); },
                     {"w.json", "pre_tokenizer", "not supported"});
  auto bad = small_tokenizer_json(smollm);
  bad.replace(bad.find("\"normalizer\":null"), 17, "\"normalizer\":{\"type\":\"NFC\"}");
  test::expect_error([&] { parse_bpe_tokenizer_json(bad, "n.json"); }, {"n.json", "normalizer", "NFC"});
  test::expect_error([&] { parse_bpe_tokenizer_json("{\"model\":{\"type\":\"Unigram\"}}", "u.json"); },
                     {"u.json", "Unigram"});
  test::expect_error([&] { parse_bpe_tokenizer_json("{oops", "j.json"); }, {"j.json", "invalid JSON"});
}

std::string smollm2_gguf();  // below: the cached SmolLM2 GGUF, or ""

// bpe_tokenizer_json / bpe_tokenizer_config_json (what exports write for a BPE run) read back
// as the same vocabulary, for every pre-tokenizer and flag, and encode the same ids.
TEST(TextBpe, TokenizerJsonWriterRoundTrips) {
  for (const auto pre : {BpePreTokenizer::gpt2, BpePreTokenizer::smollm, BpePreTokenizer::llama3})
    for (const bool flags : {false, true}) {
      auto v = small_vocab();
      v.pre = pre;
      v.add_bos = flags;
      v.ignore_merges = flags;
      v.unk_for_missing_bytes = flags;
      v.pad_id = flags ? 0 : -1;
      const auto back = parse_bpe_tokenizer_json(bpe_tokenizer_json(v), "w.json",
                                                 bpe_tokenizer_config_json(v));
      const std::string what = std::string(to_string(pre)) + (flags ? " +flags" : "");
      EXPECT_EQ(back.tokens, v.tokens) << what;
      EXPECT_EQ(back.types, v.types) << what;
      EXPECT_EQ(back.merges, v.merges) << what;
      EXPECT_EQ(back.pre, v.pre) << what;
      EXPECT_EQ(back.ignore_merges, v.ignore_merges) << what;
      EXPECT_EQ(back.add_bos, v.add_bos) << what;
      EXPECT_EQ(back.bos_id, v.bos_id) << what;
      EXPECT_EQ(back.eos_id, v.eos_id) << what;
      EXPECT_EQ(back.pad_id, v.pad_id) << what;
      EXPECT_EQ(back.unk_for_missing_bytes, v.unk_for_missing_bytes) << what;
      if (flags) EXPECT_EQ(back.unk_id, v.unk_id) << what;
      const BpeTokenizer a(v, "v"), b(back, "back");
      const std::string text = "<|im_start|>abc the 123 xyz USER\n";
      EXPECT_EQ(a.encode(text, true), b.encode(text, true)) << what;
    }
  const std::string path = smollm2_gguf();
  if (path.empty()) return;
  const auto tok = tokenizer_from_gguf(path);
  const auto& v = dynamic_cast<const BpeTokenizer&>(*tok).vocab();
  const BpeTokenizer back(parse_bpe_tokenizer_json(bpe_tokenizer_json(v), "w.json",
                                                   bpe_tokenizer_config_json(v)),
                          "w.json");
  const std::string text = "<|im_start|>user\nIn 2024, caf\xC3\xA9s served 1,234 cups.<|im_end|>\n";
  EXPECT_EQ(back.encode(text), tok->encode(text));
  EXPECT_EQ(back.eos_id(), tok->eos_id());
  EXPECT_EQ(back.bos_id(), tok->bos_id());
  EXPECT_EQ(back.vocab().merges, v.merges);
}

TEST(TextBpe, ChatmlTemplateTrainsOnTheAnswerAndImEnd) {
  const ChatmlTemplate t;
  const InstructRecord r{"Sum.", "1 2", "abab"};
  EXPECT_EQ(t.prompt(r),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nSum.\n\n1 2<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatmlTemplate("").prompt({"Hi", "", ""}), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(make_prompt_template("chatml")->name(), "chatml");

  const BpeTokenizer tok(small_vocab(), "small");
  InstructOptions opts;
  opts.max_length = 512;
  const auto set = tokenize_instruct({r}, tok, t, opts, "t");
  ASSERT_EQ(set.examples.size(), 1u);
  const auto& e = set.examples[0];
  const auto prompt = tok.encode(t.prompt(r));
  EXPECT_EQ(prompt.front(), 1);  // <|im_start|> as one token, no BOS in front of it
  ASSERT_EQ(e.ids.size(), prompt.size() + 3);
  EXPECT_EQ(std::vector<int32_t>(e.ids.end() - 3, e.ids.end()), (std::vector<int32_t>{kAB, kAB, 2}));
  for (size_t i = 0; i < prompt.size(); ++i) EXPECT_EQ(e.labels[i], kIgnoreIndex) << i;
  EXPECT_EQ(std::vector<int32_t>(e.labels.end() - 3, e.labels.end()), (std::vector<int32_t>{kAB, kAB, 2}));
}

std::string smollm2_gguf() {
  if (const char* env = std::getenv("L4Q_SMOLLM2_GGUF")) return std::filesystem::exists(env) ? env : "";
  const char* home = std::getenv("HOME");
  const std::string p = std::string(home ? home : "") + "/.cache/l4q-models/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(p) ? p : "";
}

TEST(TextBpe, SmolLM2VocabularyFromGguf) {
  const std::string path = smollm2_gguf();
  if (path.empty()) GTEST_SKIP() << "SmolLM2 GGUF absent (tools/fetch-smollm2.sh or L4Q_SMOLLM2_GGUF)";
  const auto tok = tokenizer_from_gguf(path);
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->bos_id(), -1);  // tokenizer.ggml.add_bos_token false
  EXPECT_EQ(tok->eos_id(), 2);   // <|im_end|>
  // Ids from HF tokenizers with SmolLM2's pre-tokenizer (tests/interop/test_bpe_tokenizer.py).
  EXPECT_EQ(tok->encode("The capital of France is"), (std::vector<int32_t>{504, 3575, 282, 4649, 314}));
  EXPECT_EQ(tok->encode("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
            (std::vector<int32_t>{1, 4093, 198, 26843, 665, 2, 198, 1, 520, 9531, 198}));
  const std::string text = "In 2024, caf\xC3\xA9s served 1,234 cups \xE2\x98\x95 daily.";
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
}

}  // namespace
}  // namespace l4q
