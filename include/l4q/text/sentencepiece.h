// SentencePiece BPE tokenizer, implemented natively (no libsentencepiece: Debian's copy
// embeds protobuf-lite symbols that clash with libtorch's libprotobuf). It reproduces
// sentencepiece 0.2.0's SentencePieceProcessor for BPE models:
//   normalize  identity rules only: optional dummy prefix (or suffix), ' ' -> U+2581,
//              optional squeezing of extra whitespace, malformed UTF-8 -> U+FFFD;
//              user-defined pieces are matched first and kept whole
//   encode     bpe_model.cc: one symbol per character (user-defined pieces frozen), then
//              repeatedly merge the adjacent pair whose concatenation is a vocabulary piece
//              with the highest score (ties: leftmost), merges into UNUSED pieces split back;
//              characters outside the vocabulary become <0xXX> byte pieces (byte_fallback)
//              or one <unk> per run
//   decode     control pieces vanish, byte pieces are reassembled into UTF-8 (invalid bytes
//              -> U+FFFD), U+2581 -> ' ', the dummy-prefix space of the first piece dropped
// Refused with l4q::Error (rather than mis-encoding): unigram/word/char models, a non-empty
// precompiled_charsmap (e.g. nmt_nfkc normalization) or denormalizer, and models
// sentencepiece itself rejects (no or two <unk>, duplicate or empty pieces, byte pieces
// without byte_fallback, byte_fallback without all 256 byte pieces).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "l4q/text/sentencepiece_model.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Reads a `.model` file.
  explicit SentencePieceTokenizer(const std::string& model_path);
  // A parsed model; `source` names it in error messages.
  SentencePieceTokenizer(SentencePieceModel model, const std::string& source);
  // A GGUF-style vocabulary (see sentencepiece_model_from_vocab); its bos/eos/unk/pad ids
  // are used as given.
  explicit SentencePieceTokenizer(const SentencePieceVocab& vocab,
                                  const std::string& source = "vocabulary");
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;

  std::vector<int32_t> encode(const std::string& text, bool add_bos = false,
                              bool add_eos = false) const override;
  // Throws l4q::Error for an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const override;
  // llama2.c's decode(): U+2581 -> ' ', one leading space dropped when prev is BOS, a byte
  // piece gives its byte, control pieces give "" and <unk> the unk surface (" \u2047 ").
  std::string decode_stream(int32_t prev, int32_t id) const override;

  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t unk_id() const override;
  int32_t pad_id() const;
  std::string piece(int32_t id) const override;

  // The pieces of encode() as strings (byte pieces spelled <0xXX>).
  std::vector<std::string> encode_pieces(const std::string& text) const;
  // The text the BPE step sees (the normalizer's output).
  std::string normalize(std::string_view text) const;
  // sentencepiece's PieceToId: the id of `piece`, or the <unk> id when it is not a piece.
  int32_t piece_to_id(std::string_view piece) const;
  float score(int32_t id) const;
  SentencePieceType type(int32_t id) const;
  // The model this tokenizer runs, e.g. to write it as an HF directory's tokenizer.model.
  const SentencePieceModel& model() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace l4q
