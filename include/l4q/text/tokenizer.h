// The tokenizer interface every model, dataset and CLI uses. Implementations:
// SentencePieceTokenizer (text/sentencepiece.h) and BpeTokenizer (text/bpe.h, byte-level BPE).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace l4q {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids, optionally with BOS first / EOS last.
  virtual std::vector<int32_t> encode(const std::string& text, bool add_bos = false,
                                      bool add_eos = false) const = 0;
  // Ids -> text (special tokens such as BOS/EOS are dropped).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // Text of one token as it should be printed after `prev` when streaming (for SentencePiece:
  // byte pieces become bytes, and a leading space is dropped right after BOS).
  virtual std::string decode_stream(int32_t prev, int32_t id) const = 0;

  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the vocabulary has none
  virtual int32_t eos_id() const = 0;
  virtual int32_t unk_id() const = 0;
  virtual std::string piece(int32_t id) const = 0;  // raw vocabulary entry
};

// Opens a tokenizer file by its content: a SentencePiece `.model`, or an HF tokenizer.json
// (JSON; byte-level BPE, with tokenizer_config.json beside it read for EOS). A directory: its
// tokenizer.model, else its tokenizer.json. Throws l4q::Error naming the path otherwise.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace l4q
