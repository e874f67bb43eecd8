// AdamW (decoupled weight decay) over parameter groups, written out rather than taken from
// torch::optim so its state is plain tensors we checkpoint exactly (bit-identical resume) and
// the public headers stay light. The update is torch.optim.AdamW's (non-fused, non-amsgrad):
//   p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
//   p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace l4q {

struct AdamWGroup {
  std::string name;                 // "adapter", "quantizer", "weight"
  std::vector<std::string> names;   // one per tensor, for checkpoints and messages
  std::vector<at::Tensor> params;
  double lr = 1e-3;                 // base lr; the schedule multiplies it
  double weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(std::vector<AdamWGroup> groups, double beta1, double beta2, double eps);

  // One update with lr = group.lr * lr_factor. Parameters without a gradient are skipped.
  void step(double lr_factor);
  void zero_grad();

  // sqrt(sum of squared gradients) over every parameter; scales gradients down to
  // max_norm when above it (max_norm <= 0: no scaling). Returns the norm before scaling.
  double clip_grad_norm(double max_norm);

  int64_t steps() const { return t_; }
  const std::vector<AdamWGroup>& groups() const { return groups_; }

  // State as named tensors ("exp_avg/<name>", "exp_avg_sq/<name>") and the step count.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, int64_t steps);

 private:
  std::vector<AdamWGroup> groups_;
  double b1_, b2_, eps_;
  int64_t t_ = 0;
  std::vector<std::vector<at::Tensor>> m_, v_;
};

}  // namespace l4q
