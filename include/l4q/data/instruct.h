// Instruction records -> examples: BOS + prompt + response + EOS, the prompt masked from the
// loss unless loss_on = all.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "l4q/data/alpaca.h"
#include "l4q/data/example.h"
#include "l4q/data/prompt_template.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

enum class LossOn {
  response,  // prompt tokens (and BOS) labelled kIgnoreIndex
  all,       // every token is a target
};
// "response" | "all"; throws l4q::Error naming `where` otherwise.
LossOn parse_loss_on(const std::string& s, const std::string& where);
const char* to_string(LossOn l);

struct InstructOptions {
  int64_t max_length = 512;  // tokens per example, BOS and EOS included
  LossOn loss_on = LossOn::response;
};

struct TokenizeStats {
  int64_t records = 0;      // records given
  int64_t examples = 0;     // examples kept
  int64_t dropped = 0;      // prompt alone fills max_length: no response token would remain
  int64_t truncated = 0;    // kept, with the end of the response (EOS first) cut off
  int64_t tokens = 0;       // tokens in the kept examples
  int64_t loss_tokens = 0;  // positions the shifted loss scores (see example.h)
  int64_t longest = 0;      // longest example before truncation, in tokens
};

struct TokenizedSet {
  std::vector<Example> examples;
  TokenizeStats stats;
};

// The prompt and the response are encoded separately (ids = [BOS] + encode(prompt) +
// encode(response) + [EOS]) so the mask boundary falls exactly between them. With a
// SentencePiece tokenizer that adds a dummy-prefix space, the response then starts with a
// word-initial piece; inference encodes the same prompt the same way, so both sides agree.
// A tokenizer without BOS (bos_id() < 0) gets none; one without EOS is an error.
// Examples longer than max_length lose the end of their response; those whose prompt alone
// reaches max_length are dropped and counted. Throws l4q::Error naming `where` and the limit
// when every record is dropped, or when `records` is empty.
TokenizedSet tokenize_instruct(const std::vector<InstructRecord>& records,
                               const Tokenizer& tokenizer, const PromptTemplate& tmpl,
                               const InstructOptions& opts, const std::string& where);

}  // namespace l4q
