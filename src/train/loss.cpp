#include "l4q/train/loss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "l4q/data/example.h"
#include "l4q/train/linear_cross_entropy.h"

namespace l4q {

LossSum batch_loss(const LlamaModel& model, const Batch& batch) {
  const int64_t T = batch.input_ids.size(1);
  LossSum out;
  if (T < 2) {
    out.loss_sum = at::zeros({}, at::kFloat);
    return out;
  }
  const auto hidden = model.forward_hidden(batch.input_ids);  // [B, T, H]
  const int64_t H = hidden.size(-1);
  const auto targets = batch.labels.narrow(1, 1, T - 1).reshape(-1);
  const auto idx = (targets != kIgnoreIndex).nonzero().squeeze(1);
  const auto h = hidden.narrow(1, 0, T - 1).reshape({-1, H}).index_select(0, idx);
  out.tokens = idx.numel();
  out.loss_sum = linear_cross_entropy_sum(h, model.lm_head_weight(), targets.index_select(0, idx));
  return out;
}

EvalResult evaluate_loss(LlamaModel& model, DataLoader& loader, int64_t max_batches) {
  at::NoGradGuard ng;
  model.set_training(false);
  loader.seek({0, 0});
  int64_t n = loader.batches_per_epoch();
  if (max_batches > 0) n = std::min(n, max_batches);
  double sum = 0;
  int64_t tokens = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto r = batch_loss(model, loader.next());
    sum += r.loss_sum.item<double>();
    tokens += r.tokens;
  }
  model.set_training(true);
  loader.seek({0, 0});
  return {tokens > 0 ? sum / static_cast<double>(tokens) : 0.0, tokens};
}

}  // namespace l4q
