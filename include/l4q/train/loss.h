// The causal language-model loss over a batch, and validation loss over a loader.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "l4q/data/loader.h"
#include "l4q/model/llama.h"

namespace l4q {

struct LossSum {
  at::Tensor loss_sum;  // summed token cross-entropy (differentiable), scalar
  int64_t tokens = 0;   // positions scored
};

// cross_entropy(logits[:, :-1], labels[:, 1:]) summed over positions whose label is not
// kIgnoreIndex. The lm_head runs only at those positions.
LossSum batch_loss(const LlamaModel& model, const Batch& batch);

struct EvalResult {
  double mean_loss = 0;  // per scored token
  int64_t tokens = 0;
};

// Mean token loss over the loader's whole epoch 0 (or its first max_batches batches), without
// autograd and with the model in evaluation mode; the loader is rewound first and the
// model's training flag restored after.
EvalResult evaluate_loss(LlamaModel& model, DataLoader& loader, int64_t max_batches = 0);

}  // namespace l4q
