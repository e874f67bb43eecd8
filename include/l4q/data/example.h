// A tokenised training example: token ids and the label of each position.
#pragma once
#include <cstdint>
#include <vector>

namespace l4q {

// Label of a position that takes no part in the loss (PyTorch's cross_entropy ignore_index).
inline constexpr int32_t kIgnoreIndex = -100;

// `labels` are aligned with `ids` (Hugging Face convention): labels[t] is either ids[t] or
// kIgnoreIndex, and the causal-LM loss is cross_entropy(logits[:, :-1], labels[:, 1:]), i.e.
// the logits at position t are scored against the token at t + 1. labels[0] is never scored.
struct Example {
  std::vector<int32_t> ids;
  std::vector<int32_t> labels;
};

// Positions the shifted loss scores: t >= 1 with labels[t] != kIgnoreIndex.
int64_t count_loss_tokens(const Example& e);

// FNV-1a over every id and label (and the sizes): identifies a tokenised dataset, e.g. to
// refuse resuming a run on different data.
uint64_t fingerprint(const std::vector<Example>& examples);

}  // namespace l4q
