// Perplexity of a causal LM over one token stream, under a stated protocol.
//
// Token accounting: target j (1 <= j < N) is "token j predicted from the tokens before it
// inside its window"; every target is scored at most once, and the result says how many were.
//
// Protocol::Sliding (transformers' "perplexity of fixed-length models", exact accounting):
//   windows [b, min(b + context, N)) with b = 0, stride, 2*stride, ...; a window scores the
//   targets after its first token that no earlier window scored, and the last window is the
//   one reaching N. With stride < context every scored target but those of the first window
//   sees at least context - stride tokens of context. stride == context: disjoint windows, and
//   the first token of each later window is not scored (it has no context in its window).
// Protocol::LlamaCpp (llama.cpp's `perplexity` tool): floor(N / context) disjoint chunks of
//   context tokens (the tail is dropped); the chunk's first token is replaced by BOS (when
//   add_bos), and targets context/2 + 1 .. context - 1 of each chunk are scored, i.e.
//   context - 1 - context/2 per chunk, each with at least context/2 tokens of context.
// add_bos: BOS is prepended to the stream once (so the text's first token is a target), as
//   llama.cpp and a LLaMA tokenizer with add_bos_token do.
//
// Windows of equal length are batched, `batch` per forward pass; the lm_head runs only on
// scored positions; log-softmax in the model's dtype, sums in double. No autograd.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace l4q {

class LlamaModel;

struct PerplexityProtocol {
  enum class Kind { Sliding, LlamaCpp };
  Kind kind = Kind::Sliding;
  int64_t context = 512;  // tokens per window, >= 2
  int64_t stride = 0;     // Sliding only: 1..context; 0 means context
  bool add_bos = true;
  int64_t batch = 4;      // windows per forward pass, >= 1

  // Throws l4q::Error naming the field.
  void validate() const;
  // e.g. "sliding window: context 512, stride 256, BOS first".
  std::string describe() const;
};

struct PerplexityResult {
  double nll_sum = 0.0;        // natural log
  int64_t tokens_scored = 0;
  int64_t tokens_total = 0;    // stream length including an added BOS
  int64_t windows = 0;
  double mean_nll() const { return tokens_scored > 0 ? nll_sum / tokens_scored : 0.0; }
  double perplexity() const;   // exp(mean_nll)
  std::string to_json() const;  // {"nll_sum", "mean_nll", "perplexity", "tokens_scored", ...}
};

// The windows the protocol makes for a stream of `n_tokens` (add_bos already applied): each
// is [begin, end) of the stream with the targets [first_target, end) it scores.
struct PerplexityWindow {
  int64_t begin, end, first_target;
};
std::vector<PerplexityWindow> perplexity_windows(int64_t n_tokens, const PerplexityProtocol& p);

// Called after each forward pass with windows done and total.
using PerplexityProgress = std::function<void(int64_t done, int64_t total, const PerplexityResult& so_far)>;

// `tokens`: the text's ids without BOS (add_bos adds it; bos_id < 0: the model config's).
// Throws l4q::Error for an id outside the vocabulary, or a stream too short for one window
// that scores anything.
PerplexityResult evaluate_perplexity(const LlamaModel& model, const std::vector<int32_t>& tokens,
                                     const PerplexityProtocol& protocol,
                                     const PerplexityProgress& progress = {}, int32_t bos_id = -1);

}  // namespace l4q
