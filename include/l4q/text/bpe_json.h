// HF `tokenizers` tokenizer.json files with a byte-level BPE model (GPT-2, SmolLM/StarCoder,
// LLaMA-3) -> BpeVocab.
#pragma once
#include <string>

#include "l4q/text/bpe.h"

namespace l4q {

// Parses the JSON text of a tokenizer.json (`where` names it in errors). Accepted:
//   model: type BPE, vocab + merges ("a b" strings or [a, b] pairs), ignore_merges, no
//     byte_fallback / continuing_subword_prefix / end_of_word_suffix / dropout;
//   normalizer: null;
//   pre_tokenizer: ByteLevel(use_regex=true) -> gpt2; Sequence[Digits(individual_digits=true),
//     ByteLevel(use_regex=true)] -> smollm; Sequence[Split(LLaMA-3 regex, Isolated),
//     ByteLevel(use_regex=false)] -> llama3 (ByteLevel always with add_prefix_space=false);
//   added_tokens: special ones become control tokens, the others user-defined, both split out
//     of the text first (lstrip/rstrip/single_word are not supported);
//   post_processor: a TemplateProcessing (also inside a Sequence) whose single template starts
//     with a special token sets that token as BOS, added by encode(add_bos=true).
// EOS: `eos_token` of `tokenizer_config_json` when given (the tokenizer_config.json text), else
// the first of <|endoftext|>, <|end_of_text|>, </s> in the vocabulary. Throws l4q::Error
// naming `where` and the field for anything else.
BpeVocab parse_bpe_tokenizer_json(const std::string& json_text, const std::string& where,
                                  const std::string& tokenizer_config_json = "");

}  // namespace l4q

namespace l4q {

// The inverse of parse_bpe_tokenizer_json: an HF tokenizer.json for `v` (every token in
// model.vocab; control tokens as special added tokens, user-defined ones as non-special; the
// pre-tokenizer as above; a TemplateProcessing that prepends BOS when v.add_bos; unk_token when
// v.unk_for_missing_bytes) and the tokenizer_config.json that names its EOS, BOS and pad.
// parse_bpe_tokenizer_json(bpe_tokenizer_json(v), .., bpe_tokenizer_config_json(v)) gives v
// back, except that token types other than control and user-defined read back as normal and
// unk_id survives only with unk_for_missing_bytes. HF `tokenizers` loads both files.
std::string bpe_tokenizer_json(const BpeVocab& v);
std::string bpe_tokenizer_config_json(const BpeVocab& v);

}  // namespace l4q
