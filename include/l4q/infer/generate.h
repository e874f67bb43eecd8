// Autoregressive generation with a LlamaModel: the prompt in one forward pass, then one token
// per step through the KV cache. Greedy at temperature 0, seeded sampling otherwise
// (infer/sampler.h).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace l4q {

class LlamaModel;

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;        // nucleus sampling mass, (0, 1]
  uint64_t seed = 0;
  bool stop_at_eos = true;   // stop after emitting eos_id (which is returned)
  int32_t eos_id = -1;       // < 0: the model config's eos_token_id
  // false recomputes the whole sequence every step (no KV cache): the reference path the
  // cache is checked and benchmarked against.
  bool use_cache = true;
};

// Called with each new token as soon as it is chosen; return false to stop.
using TokenCallback = std::function<bool(int32_t id)>;

// Returns the new tokens only (not the prompt). `prompt` must be non-empty (start from BOS for
// an unconditioned sample) with ids below the vocabulary size. Throws l4q::Error on bad
// options or ids.
std::vector<int32_t> generate(const LlamaModel& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options = {},
                              const TokenCallback& on_token = {});

}  // namespace l4q
