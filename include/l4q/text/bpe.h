// Byte-level BPE (GPT-2 family: GPT-2, StarCoder/SmolLM, LLaMA-3), the tokenizer of GGUF files
// with tokenizer.ggml.model "gpt2" and of HF tokenizer.json files with a ByteLevel BPE model.
// Encoding, as HF `tokenizers` does it: special/added tokens are split out first (leftmost,
// longest), each remaining span is cut into words by the pre-tokenizer (bpe_pretokenize.h),
// each word's bytes go through GPT-2's byte->unicode map and are merged pairwise, always the
// pair of lowest merge rank first (leftmost among equals). Decoding maps the characters back to
// bytes; special (control) tokens are dropped.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "l4q/text/bpe_pretokenize.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

// GGUF token types (llama.cpp's llama_token_type).
enum class BpeTokenType : int32_t {
  normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

struct BpeVocab {
  std::vector<std::string> tokens;  // as stored: byte-mapped text for normal tokens
  std::vector<BpeTokenType> types;  // empty: every token normal
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  BpePreTokenizer pre = BpePreTokenizer::gpt2;
  // LLaMA-3: a word that is a vocabulary entry as a whole is not merged (HF ignore_merges).
  bool ignore_merges = false;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = false;  // whether encode(add_bos=true) prepends bos_id
  // A byte whose character is not in the vocabulary becomes unk_id when set (HF BPE with an
  // unk_token), else it is dropped (HF with unk_token null, as SmolLM2's: its vocabulary lacks
  // the character of byte 0x1D).
  bool unk_for_missing_bytes = false;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Checks the vocabulary (unique tokens, merges whose halves and result are tokens, all 256
  // byte characters present, special ids in range); throws l4q::Error naming `where`.
  BpeTokenizer(BpeVocab vocab, const std::string& where);
  ~BpeTokenizer() override;

  std::vector<int32_t> encode(const std::string& text, bool add_bos = false,
                              bool add_eos = false) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string decode_stream(int32_t prev, int32_t id) const override;

  int64_t vocab_size() const override;
  // The BOS that encode(add_bos=true) prepends: -1 when the model adds none (SmolLM2), even if
  // its vocabulary names one (see vocab().bos_id).
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t unk_id() const override;
  std::string piece(int32_t id) const override;

  const BpeVocab& vocab() const;
  // Encodes one pre-tokenized word (no special-token splitting): for tests and tools.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  // The bytes token `id` stands for ("" for special tokens).
  std::string token_bytes(int32_t id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace l4q
