// A small byte-level BPE vocabulary shared by the tokenizer and export tests.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "l4q/text/bpe.h"

namespace l4q::test {

// Specials, the 256 byte characters in byte order, then merge results.
inline BpeVocab small_vocab() {
  BpeVocab v;
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int b = 0; b < 256; ++b) v.tokens.push_back(bpe_byte_to_unicode(static_cast<uint8_t>(b)));
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"b", "c"}, {"a", "b"}, {"a", "a"}, {"h", "e"}, {"\xC4\xA0", "t"}, {"\xC4\xA0t", "he"},
      {"x", "y"}, {"xy", "z"}};
  for (const auto& m : merges) {
    v.merges.push_back(m);
    v.tokens.push_back(m.first + m.second);
  }
  v.tokens.push_back("USER");  // a user-defined (added, non-special) token
  v.types.assign(v.tokens.size(), BpeTokenType::normal);
  v.types[0] = v.types[1] = v.types[2] = BpeTokenType::control;
  v.types.back() = BpeTokenType::user_defined;
  v.pre = BpePreTokenizer::smollm;
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  return v;
}

}  // namespace l4q::test
