#include "l4q/data/text_corpus.h"

#include <algorithm>

#include "data/read_file.h"
#include "l4q/error.h"

namespace l4q {

std::vector<Example> make_text_blocks(const std::vector<int32_t>& tokens, int32_t bos_id,
                                      const TextCorpusOptions& opts, const std::string& where) {
  const bool bos = opts.add_bos;
  if (bos && bos_id < 0) fail(where, ": add_bos: the tokenizer has no BOS token");
  const int64_t min_block = 2;  // one position of context, one target
  if (opts.block_size < min_block)
    fail(where, ": block size (max_length): expected >= ", min_block, ", got ", opts.block_size);
  const int64_t content = opts.block_size - (bos ? 1 : 0);  // text tokens per block
  const int64_t stride = opts.stride == 0 ? content : opts.stride;
  if (stride < 1 || stride > content)
    fail(where, ": stride: expected 1..", content, " (text tokens per block), got ", opts.stride);

  const auto n = static_cast<int64_t>(tokens.size());
  std::vector<Example> out;
  int64_t scored_until = 0;  // text tokens [0, scored_until) already targets of earlier blocks
  for (int64_t start = 0; start < n; start += stride) {
    const int64_t end = std::min(n, start + content);
    const int64_t offset = bos ? 1 : 0;
    Example e;
    e.ids.resize(static_cast<size_t>(offset + end - start));
    if (bos) e.ids[0] = bos_id;
    std::copy(tokens.begin() + start, tokens.begin() + end, e.ids.begin() + offset);
    e.labels = e.ids;
    if (bos) e.labels[0] = kIgnoreIndex;
    for (int64_t i = start; i < std::min(scored_until, end); ++i)
      e.labels[static_cast<size_t>(offset + i - start)] = kIgnoreIndex;
    const auto targets = count_loss_tokens(e);
    scored_until = std::max(scored_until, end);
    if (targets > 0) out.push_back(std::move(e));
    if (end == n) break;
  }
  if (out.empty())
    fail(where, ": the text is too short for a training block (", n,
         " tokens give no target)");
  return out;
}

std::vector<int32_t> tokenize_text_file(const std::string& path, const Tokenizer& tokenizer) {
  const auto text = data_detail::read_file(path);
  if (text.empty()) fail(path, ": empty text file");
  auto ids = tokenizer.encode(text, false, false);
  if (ids.empty()) fail(path, ": the text encodes to no tokens");
  return ids;
}

}  // namespace l4q
