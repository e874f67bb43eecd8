// The native ModelProto reader/writer: fields of tok512.model, unknown fields of every wire
// type kept and written back, byte-exact re-serialization, atomic writes, precise errors on
// truncated/corrupt files, and a seeded mutation test (exception or working tokenizer,
// never a crash).
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "l4q/error.h"
#include "l4q/text/sentencepiece.h"
#include "l4q/text/sentencepiece_model.h"
#include "test_support.h"

namespace {

using l4q::SentencePieceModel;
using l4q::SentencePieceType;
using l4q::test::expect_error;

const std::string kTok512 = std::string(L4Q_SOURCE_DIR) + "/assets/stories260K/tok512.model";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  return out + static_cast<char>(v);
}
std::string tag(uint32_t field, uint32_t wire) { return varint((uint64_t{field} << 3) | wire); }
std::string len_field(uint32_t field, const std::string& body) {
  return tag(field, 2) + varint(body.size()) + body;
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/l4q_spmodel_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(path.c_str())) {
      while (auto* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.push_back(e->d_name);
      ::closedir(d);
    }
    return out;
  }
};

void expect_same_model(const SentencePieceModel& a, const SentencePieceModel& b) {
  ASSERT_EQ(a.pieces.size(), b.pieces.size());
  for (size_t i = 0; i < a.pieces.size(); ++i) {
    EXPECT_EQ(a.pieces[i].piece, b.pieces[i].piece) << i;
    EXPECT_EQ(a.pieces[i].score, b.pieces[i].score) << i;
    EXPECT_EQ(a.pieces[i].type, b.pieces[i].type) << i;
    EXPECT_EQ(a.pieces[i].unknown_fields, b.pieces[i].unknown_fields) << i;
  }
  const auto& s = a.trainer_spec;
  const auto& t = b.trainer_spec;
  EXPECT_EQ(s.model_type, t.model_type);
  EXPECT_EQ(s.vocab_size, t.vocab_size);
  EXPECT_EQ(s.treat_whitespace_as_suffix, t.treat_whitespace_as_suffix);
  EXPECT_EQ(s.byte_fallback, t.byte_fallback);
  EXPECT_EQ(s.unk_id, t.unk_id);
  EXPECT_EQ(s.bos_id, t.bos_id);
  EXPECT_EQ(s.eos_id, t.eos_id);
  EXPECT_EQ(s.pad_id, t.pad_id);
  EXPECT_EQ(s.unk_surface, t.unk_surface);
  EXPECT_EQ(s.unk_piece, t.unk_piece);
  EXPECT_EQ(s.bos_piece, t.bos_piece);
  EXPECT_EQ(s.eos_piece, t.eos_piece);
  EXPECT_EQ(s.pad_piece, t.pad_piece);
  EXPECT_EQ(s.unknown_fields, t.unknown_fields);
  const auto& n = a.normalizer_spec;
  const auto& m = b.normalizer_spec;
  EXPECT_EQ(n.name, m.name);
  EXPECT_EQ(n.precompiled_charsmap, m.precompiled_charsmap);
  EXPECT_EQ(n.add_dummy_prefix, m.add_dummy_prefix);
  EXPECT_EQ(n.remove_extra_whitespaces, m.remove_extra_whitespaces);
  EXPECT_EQ(n.escape_whitespaces, m.escape_whitespaces);
  EXPECT_EQ(n.unknown_fields, m.unknown_fields);
  EXPECT_EQ(a.denormalizer_spec.has_value(), b.denormalizer_spec.has_value());
  EXPECT_EQ(a.unknown_fields, b.unknown_fields);
}

TEST(TextSentencePieceModel, ReadsTok512) {
  const auto m = l4q::read_sentencepiece_model(kTok512);
  ASSERT_EQ(m.pieces.size(), 512u);
  EXPECT_EQ(m.pieces[0].piece, "<unk>");
  EXPECT_EQ(m.pieces[0].type, SentencePieceType::kUnknown);
  EXPECT_EQ(m.pieces[1].type, SentencePieceType::kControl);
  EXPECT_EQ(m.pieces[2].piece, "</s>");
  EXPECT_EQ(m.pieces[3].piece, "<0x00>");
  EXPECT_EQ(m.pieces[258].piece, "<0xFF>");
  EXPECT_EQ(m.pieces[258].type, SentencePieceType::kByte);
  EXPECT_EQ(m.pieces[410].piece, "\xE2\x96\x81");
  EXPECT_EQ(m.pieces[410].type, SentencePieceType::kNormal);
  // BPE scores: merge rank order, later merges lower.
  EXPECT_GT(m.pieces[259].score, m.pieces[400].score);
  EXPECT_TRUE(m.has_trainer_spec);
  EXPECT_EQ(m.trainer_spec.model_type, l4q::SentencePieceModelType::kBpe);
  EXPECT_TRUE(m.trainer_spec.byte_fallback);
  EXPECT_EQ(m.trainer_spec.unk_id, 0);
  EXPECT_EQ(m.trainer_spec.bos_id, 1);
  EXPECT_EQ(m.trainer_spec.eos_id, 2);
  EXPECT_EQ(m.trainer_spec.pad_id, -1);  // a 10-byte negative varint
  EXPECT_FALSE(m.trainer_spec.unknown_fields.empty());  // training options, kept raw
  EXPECT_TRUE(m.has_normalizer_spec);
  EXPECT_EQ(m.normalizer_spec.name.value_or(""), "identity");
  EXPECT_TRUE(m.normalizer_spec.add_dummy_prefix);
  EXPECT_FALSE(m.normalizer_spec.remove_extra_whitespaces);
  EXPECT_TRUE(m.normalizer_spec.precompiled_charsmap.empty());
}

TEST(TextSentencePieceModel, WriteReadRoundTripIsExact) {
  const std::string original = slurp(kTok512);
  const auto m = l4q::parse_sentencepiece_model(original, "tok512.model");
  const std::string bytes = l4q::serialize_sentencepiece_model(m);
  const auto again = l4q::parse_sentencepiece_model(bytes, "rewritten");
  expect_same_model(m, again);
  EXPECT_EQ(l4q::serialize_sentencepiece_model(again), bytes);  // a fixed point

  TempDir dir;
  const std::string path = dir.path + "/tokenizer.model";
  l4q::write_sentencepiece_model(m, path);
  EXPECT_EQ(slurp(path), bytes);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"tokenizer.model"});  // no temp file left
  const l4q::SentencePieceTokenizer a(kTok512), b(path);
  const std::string text = "Once upon a time, Lily saw a big red ball. 😀 日本\n  done";
  EXPECT_EQ(a.encode(text, true, true), b.encode(text, true, true));

  expect_error([&] { l4q::write_sentencepiece_model(m, dir.path + "/no/such/dir/x.model"); },
               {"no/such/dir/x.model", "temporary"});
}

TEST(TextSentencePieceModel, KeepsUnknownFieldsOfEveryWireType) {
  const std::string original = slurp(kTok512);
  const std::string unknown = tag(99, 0) + varint(300) +                 // varint
                              tag(100, 1) + std::string(8, '\x11') +     // fixed64
                              len_field(101, "opaque") +                 // length-delimited
                              tag(102, 3) + tag(1, 0) + varint(5) +      // group with a varint
                              tag(7, 3) + tag(7, 4) + tag(102, 4) +      //   and a nested group
                              tag(103, 5) + std::string(4, '\x22');      // fixed32
  // A second trainer_spec merges into the first, as protobuf does: only its unknown field.
  const std::string extra_trainer = len_field(2, tag(77, 0) + varint(1));
  const auto m = l4q::parse_sentencepiece_model(original + unknown + extra_trainer, "x.model");
  EXPECT_EQ(m.unknown_fields, unknown);
  EXPECT_EQ(m.pieces.size(), 512u);
  EXPECT_EQ(m.trainer_spec.model_type, l4q::SentencePieceModelType::kBpe);
  const auto plain = l4q::parse_sentencepiece_model(original, "tok512.model");
  EXPECT_EQ(m.trainer_spec.unknown_fields, plain.trainer_spec.unknown_fields + tag(77, 0) + varint(1));

  const auto back = l4q::parse_sentencepiece_model(l4q::serialize_sentencepiece_model(m), "y");
  EXPECT_EQ(back.unknown_fields, unknown);
  EXPECT_EQ(back.trainer_spec.unknown_fields, m.trainer_spec.unknown_fields);
  const l4q::SentencePieceTokenizer t(m, "x.model"), ref(kTok512);
  EXPECT_EQ(t.encode("Hello there, Lily!"), ref.encode("Hello there, Lily!"));
}

TEST(TextSentencePieceModel, PreciseErrors) {
  const auto parse = [](const std::string& bytes) {
    return l4q::parse_sentencepiece_model(bytes, "bad.model");
  };
  expect_error([&] { parse(""); }, {"bad.model", "empty"});
  expect_error([&] { parse(tag(1, 0) + varint(1)); },
               {"bad.model", "field 1 (pieces)", "expected wire type length-delimited, got varint"});
  expect_error([&] { parse(std::string(1, '\0')); }, {"invalid field number 0", "at byte 0"});
  expect_error([&] { parse(std::string(1, '\x0f')); }, {"invalid wire type 7"});
  expect_error([&] { parse(tag(9, 4)); }, {"end-group without a start-group"});
  expect_error([&] { parse(tag(9, 3) + tag(1, 0) + varint(1)); }, {"group 9 has no end-group"});
  expect_error([&] { parse(tag(9, 3) + tag(8, 4)); }, {"end-group 8 closes group 9"});
  expect_error([&] { parse(tag(9, 0) + std::string(11, '\xff')); }, {"varint"});
  expect_error([&] { parse(tag(9, 0) + "\x80"); }, {"varint runs past the end"});
  expect_error([&] { parse(tag(9, 5) + "ab"); }, {"fixed32 runs past the end"});
  expect_error([&] { parse(tag(9, 1) + "abc"); }, {"fixed64 runs past the end"});
  expect_error([&] { parse(len_field(1, "") + tag(1, 2) + varint(1000) + "xy"); },
               {"length 1000 runs past the end of the data (2 bytes left)", "at byte 3"});
  expect_error([&] { parse(len_field(1, len_field(1, "a") + tag(3, 0) + varint(9))); },
               {"bad.model: piece 0", "type", "expected 1..6", "got 9"});
  expect_error([&] { parse(len_field(1, tag(2, 0) + varint(1))); },
               {"piece 0", "field 2 (score)", "fixed32"});
  expect_error([&] { parse(len_field(2, tag(3, 0) + varint(7))); },
               {"bad.model: trainer_spec", "model_type", "got 7"});
  expect_error([&] { parse(len_field(3, tag(3, 2) + varint(0))); },
               {"bad.model: normalizer_spec", "add_dummy_prefix"});
  expect_error([&] { l4q::read_sentencepiece_model("/nonexistent/x.model"); },
               {"/nonexistent/x.model", "cannot open"});
}

// Every prefix of the file parses or fails with an error naming the file.
TEST(TextSentencePieceModel, TruncatedFiles) {
  const std::string original = slurp(kTok512);
  ASSERT_GT(original.size(), 1000u);
  int errors = 0, parsed = 0;
  for (size_t n = 0; n < original.size(); ++n) {
    try {
      const auto m = l4q::parse_sentencepiece_model(std::string_view(original).substr(0, n), "cut.model");
      ++parsed;
      EXPECT_LE(m.pieces.size(), 512u);
    } catch (const l4q::Error& e) {
      ++errors;
      ASSERT_NE(std::string(e.what()).find("cut.model"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(errors, 7000);  // almost every cut lands inside a field
  EXPECT_GT(parsed, 500);   // cuts between pieces leave a shorter, valid message
  // A cut model is then refused by the tokenizer (its byte pieces or specs are missing).
  expect_error([&] { l4q::SentencePieceTokenizer t(l4q::parse_sentencepiece_model(original.substr(0, 2000), "cut.model"), "cut.model"); },
               {"cut.model"});
}

// Seeded random mutations: each gives l4q::Error or a tokenizer that encodes and decodes.
TEST(TextSentencePieceModel, RandomMutationsNeverCrash) {
  const std::string original = slurp(kTok512);
  std::mt19937_64 rng(20240611);
  const std::string sample = "Once upon a time, Lily saw a big red ball.\n😀 日本 <s> ab\xff";
  int errors = 0, working = 0;
  constexpr int kCases = 4000;
  for (int c = 0; c < kCases; ++c) {
    std::string bytes = original;
    const int ops = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < ops && !bytes.empty(); ++k) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 6) {
        case 0: bytes[at] = static_cast<char>(bytes[at] ^ (1u << (rng() % 8))); break;
        case 1: bytes[at] = static_cast<char>(rng()); break;
        case 2: bytes.insert(at, std::string(1 + rng() % 8, static_cast<char>(rng()))); break;
        case 3: bytes.erase(at, 1 + rng() % 16); break;
        case 4: bytes.resize(at); break;
        case 5: bytes.insert(at, varint(rng() >> (rng() % 64))); break;
      }
    }
    try {
      const l4q::SentencePieceTokenizer t(l4q::parse_sentencepiece_model(bytes, "fuzz.model"), "fuzz.model");
      const auto ids = t.encode(sample, t.bos_id() >= 0, t.eos_id() >= 0);
      const std::string text = t.decode(ids);
      for (size_t i = 0; i < ids.size(); ++i) t.decode_stream(i ? ids[i - 1] : -1, ids[i]);
      EXPECT_FALSE(ids.empty());
      (void)text;
      ++working;
    } catch (const l4q::Error& e) {
      ++errors;
      ASSERT_NE(std::string(e.what()).find("fuzz.model"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(errors + working, kCases);
  // Both outcomes occur (most mutations break a length or a byte piece; some only touch
  // scores or piece text).
  EXPECT_GT(errors, kCases / 2);
  EXPECT_GT(working, kCases / 50);
}

}  // namespace
