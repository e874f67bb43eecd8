// Plain-text corpus mode: a text tokenised as one stream and cut into fixed-length blocks for
// language-model loss; the blocks are Examples like instruction data, so the same loader,
// trainer and evaluation take them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "l4q/data/example.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

struct TextCorpusOptions {
  int64_t block_size = 512;  // tokens per block, BOS included
  // Text tokens between the starts of consecutive blocks; 0 means no overlap (block_size, less
  // one with BOS). With a smaller stride blocks overlap and the repeated tokens are labelled
  // kIgnoreIndex, so every text token is scored at most once and a block's first tokens serve
  // as context only (the sliding-window scheme of Hugging Face's perplexity guide).
  int64_t stride = 0;
  // Start every block with BOS, so each block is scored from the state a generation starts in
  // and the first text token of every block is a target.
  bool add_bos = true;
};

// Blocks over `tokens` (text ids without BOS/EOS). The last block may be shorter. Throws
// l4q::Error naming `where` when no block would hold a target or the options are invalid.
std::vector<Example> make_text_blocks(const std::vector<int32_t>& tokens, int32_t bos_id,
                                      const TextCorpusOptions& opts, const std::string& where);

// Reads a UTF-8 text file whole and tokenises it as one stream (no BOS/EOS). Errors name the
// path (unreadable, empty).
std::vector<int32_t> tokenize_text_file(const std::string& path, const Tokenizer& tokenizer);

}  // namespace l4q
