// l4q-convert: turns a llama2.c `.bin` or a GGUF file (or an HF directory) into an HF model
// directory (config.json + model.safetensors [+ tokenizer.model]) that transformers and every
// l4q tool load. Q/K rows are permuted from Meta's interleaved order to HF's rotate-half order.
// tokenizer.model is the --tokenizer file, or else, for a GGUF source with a SentencePiece
// vocabulary (tokenizer.ggml.model "llama"), one built from that vocabulary.
//
//   l4q-convert --in stories260K.gguf --out models/stories260K --tokenizer tok512.model
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

#include "l4q/error.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/gguf.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/runtime.h"
#include "l4q/text/sentencepiece_model.h"

namespace {

// The SentencePiece model of a GGUF file's vocabulary, or nothing when it has none.
bool write_gguf_tokenizer(const std::string& gguf_path, const std::string& out_path) {
  const auto f = l4q::GgufFile::open(gguf_path);
  if (f.get_or<std::string>("tokenizer.ggml.model", "") != "llama" || !f.contains("tokenizer.ggml.tokens"))
    return false;
  const auto v = l4q::sentencepiece_vocab_from_gguf(f);
  l4q::write_sentencepiece_model(l4q::sentencepiece_model_from_vocab(v, gguf_path), out_path);
  return true;
}

bool is_gguf(const std::string& path) {
  char magic[4] = {};
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  const bool ok = std::fread(magic, 1, 4, f) == 4 && std::string(magic, 4) == "GGUF";
  std::fclose(f);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Convert a llama2.c or GGUF checkpoint into an HF model directory"};
  std::string in, out, tokenizer;
  bool force = false;
  app.add_option("--in", in, "llama2.c .bin, GGUF file or HF directory")->required()->check(CLI::ExistingPath);
  app.add_option("--out", out, "output HF directory")->required();
  app.add_option("--tokenizer", tokenizer, "SentencePiece tokenizer.model to copy into the output")
      ->check(CLI::ExistingFile);
  app.add_flag("--force", force, "replace the files of an existing output directory");
  CLI11_PARSE(app, argc, argv);

  try {
    l4q::init_runtime();
    if (std::filesystem::exists(out) && !force)
      l4q::fail("output '", out, "' already exists (use --force to replace its files)");
    if (std::filesystem::exists(out) && !std::filesystem::is_directory(out))
      l4q::fail("output '", out, "' exists and is not a directory");
    const auto ck = l4q::load_checkpoint(in);
    l4q::save_hf_directory(ck, out, tokenizer);
    const bool gguf_vocab = tokenizer.empty() && std::filesystem::is_regular_file(in) && is_gguf(in) &&
                            write_gguf_tokenizer(in, out + "/tokenizer.model");
    const auto& c = ck.config;
    int64_t params = 0;
    for (const auto& nt : ck.tensors) params += nt.second.numel();
    std::printf("wrote %s: %zu tensors, %lld parameters (hidden %lld, layers %lld, heads %lld/%lld kv, vocab %lld, %s)\n",
                out.c_str(), ck.tensors.size(), static_cast<long long>(params), static_cast<long long>(c.hidden_size),
                static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.num_attention_heads),
                static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.vocab_size),
                c.tie_word_embeddings ? "tied embeddings" : "separate lm_head");
    if (!tokenizer.empty()) std::printf("tokenizer.model: copied from %s\n", tokenizer.c_str());
    else if (gguf_vocab) std::printf("tokenizer.model: built from the GGUF vocabulary\n");
    else std::printf("no tokenizer.model written (pass --tokenizer FILE.model)\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q-convert: %s\n", e.what());
    return 1;
  }
}
