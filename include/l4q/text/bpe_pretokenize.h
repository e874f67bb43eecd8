// The two halves of byte-level BPE that come before the merges: GPT-2's byte <-> unicode map
// (every byte becomes one printable code point, so a vocabulary is a list of text strings) and
// the pre-tokenizers that cut text into words, each a hand-written matcher for one regex of HF
// `tokenizers` / llama.cpp (no std::regex: too slow, and it has no Unicode classes). Classes
// (\p{L}, \p{N}, \s) come from a generated table (src/text/bpe_unicode_data.py). Bytes that are
// not valid UTF-8 count as one "other" character each, so any input splits and round-trips.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace l4q {

enum class BpePreTokenizer {
  // GPT-2 (ByteLevel use_regex=true):
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  gpt2,
  // SmolLM / StarCoder (GGUF tokenizer.ggml.pre "smollm"): every \p{N} character on its own
  // (HF Digits individual_digits=true), then the GPT-2 regex inside each remaining span.
  smollm,
  // LLaMA-3 (GGUF "llama-bpe"):
  //   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  //   \s*[\r\n]+|\s+(?!\S)|\s+
  llama3,
};

// GGUF tokenizer.ggml.pre -> pre-tokenizer: "gpt2"; "smollm", "starcoder", "refact",
// "codeshell", "command-r"; "llama-bpe", "llama3". Throws l4q::Error naming `where` otherwise.
BpePreTokenizer parse_bpe_pre_tokenizer(const std::string& name, const std::string& where);
const char* to_string(BpePreTokenizer p);

// The regex of `p` exactly as HF tokenizer.json spells it (Split pattern / ByteLevel).
const char* bpe_pre_tokenizer_regex(BpePreTokenizer p);

// Cuts `text` into the words the BPE merges run on; the words tile `text` exactly.
std::vector<std::string_view> bpe_pre_tokenize(std::string_view text, BpePreTokenizer p);

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order (space -> U+0120 'Ġ', '\n' -> U+010A 'Ċ'). Returned as UTF-8.
const std::string& bpe_byte_to_unicode(uint8_t byte);
// The inverse for one code point; -1 when it is not in the map.
int bpe_unicode_to_byte(uint32_t codepoint);
// Maps every byte of `bytes` (the UTF-8 of the result is what vocabularies store).
std::string bpe_bytes_to_unicode(std::string_view bytes);
// The inverse; code points outside the map are kept as their UTF-8 (as HF's decoder does for
// added tokens), malformed UTF-8 is kept byte for byte.
std::string bpe_unicode_to_bytes(std::string_view text);

}  // namespace l4q
