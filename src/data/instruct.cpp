#include "l4q/data/instruct.h"

#include <algorithm>
#include <limits>

#include "l4q/error.h"

namespace l4q {

LossOn parse_loss_on(const std::string& s, const std::string& where) {
  if (s == "response") return LossOn::response;
  if (s == "all") return LossOn::all;
  fail(where, ": loss_on: expected 'response' or 'all', got '", s, "'");
}

const char* to_string(LossOn l) { return l == LossOn::response ? "response" : "all"; }

TokenizedSet tokenize_instruct(const std::vector<InstructRecord>& records,
                               const Tokenizer& tokenizer, const PromptTemplate& tmpl,
                               const InstructOptions& opts, const std::string& where) {
  // Two tokens at least: one prompt token and one response token (the shortest example that
  // has a target under the shifted loss).
  if (opts.max_length < 2) fail(where, ": max_length: expected >= 2, got ", opts.max_length);
  if (records.empty()) fail(where, ": empty dataset (no records)");
  const int32_t bos = tokenizer.bos_id();
  const int32_t eos = tokenizer.eos_id();
  if (eos < 0) fail(where, ": the tokenizer has no EOS token; responses must end with one");

  TokenizedSet out;
  auto& st = out.stats;
  st.records = static_cast<int64_t>(records.size());
  out.examples.reserve(records.size());
  int64_t shortest_prompt = std::numeric_limits<int64_t>::max();
  for (const auto& r : records) {
    auto prompt = tokenizer.encode(tmpl.prompt(r), /*add_bos=*/bos >= 0, /*add_eos=*/false);
    auto response = tokenizer.encode(tmpl.response(r), false, false);
    response.push_back(eos);
    const auto P = static_cast<int64_t>(prompt.size());
    const auto R = static_cast<int64_t>(response.size());
    shortest_prompt = std::min(shortest_prompt, P);
    st.longest = std::max(st.longest, P + R);
    if (P >= opts.max_length) {
      ++st.dropped;
      continue;
    }
    const int64_t keep = std::min(R, opts.max_length - P);
    if (keep < R) ++st.truncated;

    Example e;
    e.ids = std::move(prompt);
    e.ids.insert(e.ids.end(), response.begin(), response.begin() + keep);
    e.labels = e.ids;
    if (opts.loss_on == LossOn::response)
      std::fill(e.labels.begin(), e.labels.begin() + P, kIgnoreIndex);
    st.tokens += static_cast<int64_t>(e.ids.size());
    st.loss_tokens += count_loss_tokens(e);
    out.examples.push_back(std::move(e));
  }
  st.examples = static_cast<int64_t>(out.examples.size());
  if (out.examples.empty())
    fail(where, ": all ", st.records, " examples are longer than max_length ", opts.max_length,
         " tokens: even the shortest prompt takes ", shortest_prompt,
         " tokens, leaving no room for a response; raise max_length");
  return out;
}

}  // namespace l4q
