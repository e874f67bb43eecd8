#include "l4q/infer/generate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "l4q/error.h"
#include "l4q/infer/sampler.h"
#include "l4q/model/llama.h"

namespace l4q {

std::vector<int32_t> generate(const LlamaModel& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options, const TokenCallback& on_token) {
  if (options.max_new_tokens < 0)
    fail("generate: max_new_tokens: expected >= 0, got ", options.max_new_tokens);
  if (prompt.empty()) fail("generate: prompt: expected at least one token (e.g. BOS)");
  const int64_t vocab = model.config().vocab_size;
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= vocab)
      fail("generate: prompt token ", i, ": id ", prompt[i], " outside [0, ", vocab, ")");
  Sampler sampler({options.temperature, options.top_p, options.seed});
  const int64_t eos = options.eos_id >= 0 ? options.eos_id : model.config().eos_token_id;

  at::NoGradGuard no_grad;
  const auto ids_tensor = [](const int32_t* p, int64_t n) {
    return at::from_blob(const_cast<int32_t*>(p), {1, n}, at::kInt).to(at::kLong);
  };
  KvCache cache(options.use_cache ? static_cast<int64_t>(prompt.size()) + options.max_new_tokens : 0);
  std::vector<int32_t> seq = prompt;
  std::vector<int32_t> out;
  out.reserve(options.max_new_tokens);
  int64_t fed = 0;  // tokens of `seq` already in the cache
  while (static_cast<int64_t>(out.size()) < options.max_new_tokens) {
    at::Tensor hidden;
    if (options.use_cache) {
      hidden = model.forward_hidden(ids_tensor(seq.data() + fed, seq.size() - fed), &cache);
      fed = static_cast<int64_t>(seq.size());
    } else {
      hidden = model.forward_hidden(ids_tensor(seq.data(), seq.size()));
    }
    const auto logits = model.logits(hidden.select(1, hidden.size(1) - 1)).select(0, 0);
    const int32_t next = sampler.sample(logits);
    out.push_back(next);
    seq.push_back(next);
    if (on_token && !on_token(next)) break;
    if (options.stop_at_eos && next == eos) break;
  }
  return out;
}

}  // namespace l4q
