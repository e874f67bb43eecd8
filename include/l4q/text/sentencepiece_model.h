// SentencePiece's model file (`.model`: a serialized `sentencepiece.ModelProto`, see
// google/sentencepiece src/sentencepiece_model.proto), read and written without libprotobuf.
//
// Only the fields that change how text is encoded or decoded are typed below; every other
// field (training corpus, coverage, self-test data, ...) is kept as raw wire bytes in
// `unknown_fields` and written back unchanged, so read -> write keeps the model's meaning.
// The reader checks every length against the data: a truncated or corrupt file gives
// l4q::Error naming the file, the message, the field and the byte offset.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace l4q {

// ModelProto.SentencePiece.Type. GGUF's `tokenizer.ggml.token_type` uses the same numbers.
enum class SentencePieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,      // exactly one per model: <unk>
  kControl = 3,      // <s>, </s>: never produced from text, decode to nothing
  kUserDefined = 4,  // always one token wherever the text contains it
  kUnused = 5,       // a merge may form it, but it is split back into its parts
  kByte = 6,         // <0x00>..<0xFF>, the byte fallback for characters not in the vocabulary
};
const char* sentencepiece_type_name(SentencePieceType t);

// TrainerSpec.ModelType.
enum class SentencePieceModelType : int32_t { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };
const char* sentencepiece_model_type_name(SentencePieceModelType t);

struct SentencePieceEntry {
  std::string piece;  // field 1
  float score = 0.f;  // field 2; BPE merges the pair whose merged piece scores highest
  SentencePieceType type = SentencePieceType::kNormal;  // field 3
  std::string unknown_fields;
};

// TrainerSpec (ModelProto field 2): defaults are the .proto's.
struct SentencePieceTrainerSpec {
  SentencePieceModelType model_type = SentencePieceModelType::kUnigram;  // 3
  std::optional<int32_t> vocab_size;                                       // 4 (informative)
  bool treat_whitespace_as_suffix = false;                                 // 24
  bool byte_fallback = false;                                              // 35
  int32_t unk_id = 0;                                                      // 40
  int32_t bos_id = 1;                                                      // 41
  int32_t eos_id = 2;                                                      // 42
  int32_t pad_id = -1;                                                     // 43
  std::optional<std::string> unk_surface;  // 44; decode writes it for <unk> (default " \u2047 ")
  std::string unk_piece;  // 45; empty means "<unk>"
  std::string bos_piece;  // 46; empty means "<s>"
  std::string eos_piece;  // 47; empty means "</s>"
  std::string pad_piece;  // 48; empty means "<pad>"
  std::string unknown_fields;
};

// NormalizerSpec (ModelProto fields 3 and 5).
struct SentencePieceNormalizerSpec {
  std::optional<std::string> name;       // 1: "identity" (LLaMA), "nmt_nfkc", ...
  std::string precompiled_charsmap;      // 2: the compiled NFKC-style rules; empty for identity
  bool add_dummy_prefix = true;          // 3: "world" encodes like the "world" in "hello world"
  bool remove_extra_whitespaces = true;  // 4: strip leading/trailing, squeeze repeated spaces
  bool escape_whitespaces = true;        // 5: ' ' -> U+2581
  std::string unknown_fields;
};

struct SentencePieceModel {
  std::vector<SentencePieceEntry> pieces;  // field 1; the index is the token id
  SentencePieceTrainerSpec trainer_spec;   // field 2
  bool has_trainer_spec = false;
  SentencePieceNormalizerSpec normalizer_spec;  // field 3
  bool has_normalizer_spec = false;
  std::optional<SentencePieceNormalizerSpec> denormalizer_spec;  // field 5
  std::string unknown_fields;  // incl. self_test_data (field 4)
};

// Parses a serialized ModelProto; `source` (usually the path) prefixes every error message.
SentencePieceModel parse_sentencepiece_model(std::string_view bytes, const std::string& source);
// Reads and parses a `.model` file.
SentencePieceModel read_sentencepiece_model(const std::string& path);

// Serializes `model` (typed fields in field-number order, then the kept unknown fields).
std::string serialize_sentencepiece_model(const SentencePieceModel& model);
// Writes `model` to `path` through a temporary file in the same directory and a rename, so
// `path` is never left half-written.
void write_sentencepiece_model(const SentencePieceModel& model, const std::string& path);

// A vocabulary as GGUF stores it (`tokenizer.ggml.tokens`, `.scores`, `.token_type`,
// `.bos_token_id`, `.eos_token_id`, `.unknown_token_id`, `.padding_token_id`,
// `.add_space_prefix`). Pieces use U+2581 for spaces, byte pieces are spelled <0xXX>.
struct SentencePieceVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;   // one per piece
  std::vector<int32_t> types;  // one per piece (SentencePieceType numbers), or empty: then
                               // <0xXX> pieces are BYTE, unk/bos/eos/pad get their types and
                               // the rest are NORMAL
  int32_t bos_id = 1;          // -1: none
  int32_t eos_id = 2;          // -1: none
  int32_t unk_id = 0;
  int32_t pad_id = -1;
  bool add_dummy_prefix = true;
};

// The ModelProto of a LLaMA-style BPE tokenizer with this vocabulary: model_type BPE,
// byte_fallback when the vocabulary has byte pieces, the special ids and pieces, and the
// identity normalizer (add_dummy_prefix as given, no whitespace squeezing, spaces escaped to
// U+2581). Throws l4q::Error naming `source` when the arrays disagree in length, a type is
// not 1..6, or a special id is out of range or of the wrong type.
SentencePieceModel sentencepiece_model_from_vocab(const SentencePieceVocab& vocab,
                                                  const std::string& source = "vocabulary");

}  // namespace l4q
