// Finds the tokenizer that belongs to a model checkpoint.
#pragma once
#include <memory>
#include <string>

#include "l4q/text/sentencepiece_model.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

class GgufFile;

// `tokenizer_path` when non-empty; otherwise, for an HF directory its tokenizer.model or
// tokenizer.json; for a GGUF file its own vocabulary (tokenizer.ggml.model "llama" or "gpt2");
// for any file a tokenizer.model or tok512.model beside it. Throws l4q::Error listing the places it looked.
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path,
                                                const std::string& tokenizer_path = "");

// The vocabulary of a GGUF file (tokenizer.ggml.*): a SentencePiece tokenizer for model
// "llama", a byte-level BpeTokenizer (text/bpe.h) for "gpt2".
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const std::string& gguf_path);

// The SentencePiece vocabulary held in a GGUF file's tokenizer.ggml.* keys (model "llama"):
// pieces, scores (0 when absent), types, bos/eos/unk/pad ids, add_space_prefix.
SentencePieceVocab sentencepiece_vocab_from_gguf(const GgufFile& f);

}  // namespace l4q
