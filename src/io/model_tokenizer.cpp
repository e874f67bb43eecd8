#include "l4q/io/model_tokenizer.h"

#include <filesystem>

#include "l4q/error.h"
#include "l4q/io/gguf.h"
#include "l4q/text/bpe.h"
#include "l4q/text/sentencepiece.h"

namespace l4q {

namespace fs = std::filesystem;

namespace {

// tokenizer.ggml.model "gpt2": byte-level BPE (llama.cpp's LLAMA_VOCAB_TYPE_BPE).
std::unique_ptr<Tokenizer> bpe_from_gguf(const GgufFile& f, const std::string& gguf_path) {
  BpeVocab v;
  v.tokens = f.get_array<std::string>("tokenizer.ggml.tokens");
  if (f.contains("tokenizer.ggml.token_type")) {
    const auto types = f.get_array<int32_t>("tokenizer.ggml.token_type");
    v.types.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 1 || types[i] > 6)
        fail(gguf_path, ": tokenizer.ggml.token_type[", i, "] = ", types[i], ": expected 1..6");
      v.types.push_back(static_cast<BpeTokenType>(types[i]));
    }
  }
  const auto merges = f.get_array<std::string>("tokenizer.ggml.merges");
  v.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto sp = merges[i].find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= merges[i].size())
      fail(gguf_path, ": tokenizer.ggml.merges[", i, "] = '", merges[i], "': expected 'left right'");
    v.merges.emplace_back(merges[i].substr(0, sp), merges[i].substr(sp + 1));
  }
  const std::string pre = f.get_or<std::string>("tokenizer.ggml.pre", "gpt2");
  v.pre = parse_bpe_pre_tokenizer(pre, gguf_path + ": tokenizer.ggml.pre");
  // llama.cpp sets ignore_merges for exactly the LLaMA-3 pre-tokenizer (as its tokenizer.json).
  v.ignore_merges = v.pre == BpePreTokenizer::llama3;
  auto id = [&](const char* key) {
    return f.contains(key) ? static_cast<int32_t>(f.get<uint32_t>(key)) : -1;
  };
  v.bos_id = id("tokenizer.ggml.bos_token_id");
  v.eos_id = id("tokenizer.ggml.eos_token_id");
  v.unk_id = id("tokenizer.ggml.unknown_token_id");
  v.pad_id = id("tokenizer.ggml.padding_token_id");
  // llama.cpp's default for BPE vocabularies is to add BOS; SmolLM2 says false.
  v.add_bos = v.bos_id >= 0 && f.get_or<bool>("tokenizer.ggml.add_bos_token", true);
  return std::make_unique<BpeTokenizer>(std::move(v), gguf_path);
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const std::string& gguf_path) {
  const auto f = GgufFile::open(gguf_path);
  const auto model = f.get_or<std::string>("tokenizer.ggml.model", "");
  if (model == "gpt2") return bpe_from_gguf(f, gguf_path);
  if (model != "llama")
    fail(gguf_path, ": key 'tokenizer.ggml.model': expected \"llama\" (SentencePiece) or \"gpt2\" "
         "(byte-level BPE), got \"", model, "\"");
  return std::make_unique<SentencePieceTokenizer>(sentencepiece_vocab_from_gguf(f), gguf_path);
}

SentencePieceVocab sentencepiece_vocab_from_gguf(const GgufFile& f) {
  SentencePieceVocab v;
  v.pieces = f.get_array<std::string>("tokenizer.ggml.tokens");
  v.scores = f.contains("tokenizer.ggml.scores") ? f.get_array<float>("tokenizer.ggml.scores")
                                                 : std::vector<float>(v.pieces.size(), 0.f);
  if (f.contains("tokenizer.ggml.token_type"))
    v.types = f.get_array<int32_t>("tokenizer.ggml.token_type");
  v.bos_id = static_cast<int32_t>(f.get_or<uint32_t>("tokenizer.ggml.bos_token_id", 1));
  v.eos_id = static_cast<int32_t>(f.get_or<uint32_t>("tokenizer.ggml.eos_token_id", 2));
  v.unk_id = static_cast<int32_t>(f.get_or<uint32_t>("tokenizer.ggml.unknown_token_id", 0));
  if (f.contains("tokenizer.ggml.padding_token_id"))
    v.pad_id = static_cast<int32_t>(f.get<uint32_t>("tokenizer.ggml.padding_token_id"));
  v.add_dummy_prefix = f.get_or<bool>("tokenizer.ggml.add_space_prefix", true);
  return v;
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path,
                                                const std::string& tokenizer_path) {
  if (!tokenizer_path.empty()) return load_tokenizer(tokenizer_path);
  const fs::path p(model_path);
  std::string looked;
  auto try_file = [&](const fs::path& f) -> std::unique_ptr<Tokenizer> {
    looked += (looked.empty() ? "" : ", ") + f.string();
    if (fs::is_regular_file(f)) return load_tokenizer(f.string());
    return nullptr;
  };
  if (fs::is_directory(p)) {
    if (auto t = try_file(p / "tokenizer.model")) return t;
    if (auto t = try_file(p / "tokenizer.json")) return t;
  } else {
    if (p.extension() == ".gguf") {
      looked = p.string() + " (tokenizer.ggml.*)";
      const auto f = GgufFile::open(p.string());
      if (f.contains("tokenizer.ggml.tokens")) return tokenizer_from_gguf(p.string());
    }
    for (const char* name : {"tokenizer.model", "tok512.model"})
      if (auto t = try_file(p.parent_path() / name)) return t;
  }
  fail(model_path, ": no tokenizer found (looked at ", looked,
       "); pass one with --tokenizer FILE.model");
}

}  // namespace l4q
