#include "l4q/eval/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "l4q/error.h"
#include "l4q/model/llama.h"

namespace l4q {

void PerplexityProtocol::validate() const {
  if (context < 2) fail("[perplexity] context: expected >= 2, got ", context);
  if (batch < 1) fail("[perplexity] batch: expected >= 1, got ", batch);
  if (kind == Kind::Sliding && (stride < 0 || stride > context))
    fail("[perplexity] stride: expected 1..context (", context, ") or 0 for context, got ", stride);
}

std::string PerplexityProtocol::describe() const {
  char buf[160];
  if (kind == Kind::LlamaCpp)
    std::snprintf(buf, sizeof buf,
                  "llama.cpp: disjoint chunks of %lld tokens, %s, second half scored (%lld tokens per chunk)",
                  (long long)context, add_bos ? "first token of each chunk replaced by BOS" : "no BOS",
                  (long long)(context - 1 - context / 2));
  else
    std::snprintf(buf, sizeof buf, "sliding window: context %lld, stride %lld, %s", (long long)context,
                  (long long)(stride > 0 ? stride : context), add_bos ? "BOS first" : "no BOS");
  return buf;
}

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

std::string PerplexityResult::to_json() const {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "{\"perplexity\": %.10g, \"mean_nll\": %.10g, \"nll_sum\": %.17g, \"tokens_scored\": %lld, "
                "\"tokens_total\": %lld, \"windows\": %lld}",
                perplexity(), mean_nll(), nll_sum, (long long)tokens_scored, (long long)tokens_total,
                (long long)windows);
  return buf;
}

std::vector<PerplexityWindow> perplexity_windows(int64_t n, const PerplexityProtocol& p) {
  p.validate();
  std::vector<PerplexityWindow> w;
  const int64_t ctx = p.context;
  if (p.kind == PerplexityProtocol::Kind::LlamaCpp) {
    for (int64_t b = 0; b + ctx <= n; b += ctx) w.push_back({b, b + ctx, b + ctx / 2 + 1});
    return w;
  }
  const int64_t stride = p.stride > 0 ? p.stride : ctx;
  int64_t scored_to = 1;  // targets below this are done; target 0 has no context
  for (int64_t b = 0; b < n; b += stride) {
    const int64_t e = std::min(b + ctx, n);
    const int64_t first = std::max(b + 1, scored_to);
    if (first < e) w.push_back({b, e, first});
    scored_to = std::max(scored_to, e);
    if (e == n) break;
  }
  return w;
}

PerplexityResult evaluate_perplexity(const LlamaModel& model, const std::vector<int32_t>& text_tokens,
                                     const PerplexityProtocol& p, const PerplexityProgress& progress,
                                     int32_t bos_id) {
  p.validate();
  const auto& cfg = model.config();
  if (bos_id < 0) bos_id = static_cast<int32_t>(cfg.bos_token_id);
  std::vector<int32_t> ids;
  ids.reserve(text_tokens.size() + 1);
  if (p.add_bos) ids.push_back(bos_id);
  ids.insert(ids.end(), text_tokens.begin(), text_tokens.end());
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= cfg.vocab_size)
      fail("[perplexity] token ", i, ": id ", ids[i], " outside the vocabulary [0, ", cfg.vocab_size, ")");
  const int64_t n = static_cast<int64_t>(ids.size());
  const auto windows = perplexity_windows(n, p);
  if (windows.empty())
    fail("[perplexity] ", n, " tokens make no window that scores a token (", p.describe(), ")");

  at::NoGradGuard no_grad;
  const auto all = at::from_blob(ids.data(), {n}, at::kInt).to(at::kLong);
  const bool llama_cpp = p.kind == PerplexityProtocol::Kind::LlamaCpp;

  PerplexityResult r;
  r.tokens_total = n;
  // Batch windows of equal length, in order (only the last window can be shorter).
  size_t i = 0;
  while (i < windows.size()) {
    const int64_t len = windows[i].end - windows[i].begin;
    size_t j = i;
    while (j < windows.size() && j - i < static_cast<size_t>(p.batch) &&
           windows[j].end - windows[j].begin == len)
      ++j;
    const int64_t B = static_cast<int64_t>(j - i);
    std::vector<at::Tensor> rows;
    // The positions scored: all windows of one batch share them except under Sliding, where
    // the first window and the last may score more or fewer.
    std::vector<at::Tensor> hidden_rows, targets;
    for (size_t k = i; k < j; ++k) {
      auto row = all.slice(0, windows[k].begin, windows[k].end).clone();
      if (llama_cpp && p.add_bos) row[0] = bos_id;
      rows.push_back(row);
    }
    const auto tokens = at::stack(rows);                 // [B, len]
    const auto hidden = model.forward_hidden(tokens);    // [B, len, H]
    for (int64_t b = 0; b < B; ++b) {
      const auto& w = windows[i + b];
      // target t (stream index) is predicted at window position t - 1 - begin
      hidden_rows.push_back(hidden[b].slice(0, w.first_target - 1 - w.begin, w.end - 1 - w.begin));
      targets.push_back(all.slice(0, w.first_target, w.end));
    }
    const auto h = at::cat(hidden_rows);
    const auto t = at::cat(targets);
    const auto logp = at::log_softmax(model.logits(h), -1);
    const auto nll = -logp.gather(1, t.unsqueeze(1)).squeeze(1);
    r.nll_sum += nll.to(at::kDouble).sum().item<double>();
    r.tokens_scored += t.size(0);
    r.windows += B;
    if (progress) progress(r.windows, static_cast<int64_t>(windows.size()), r);
    i = j;
  }
  return r;
}

}  // namespace l4q
