// Learning-rate schedule: linear warm-up, then cosine, linear or constant.
#pragma once
#include <cstdint>

#include "l4q/train/config.h"

namespace l4q {

class LrSchedule {
 public:
  // warmup_steps from the config (warmup_steps >= 0 wins, else round(warmup_ratio * total)).
  LrSchedule(const OptimConfig& o, int64_t total_steps);
  // Multiplier of the base lr for optimizer step `step` (0-based). Warm-up ramps as
  // (step + 1) / warmup so the first step already learns; then
  //   cosine:   min + (1 - min) * 0.5 * (1 + cos(pi * p))
  //   linear:   min + (1 - min) * (1 - p)
  //   constant: 1
  // with p = (step - warmup) / max(1, total - warmup) and min = min_lr_ratio.
  double factor(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }

 private:
  ScheduleKind kind_;
  int64_t warmup_, total_;
  double min_;
};

}  // namespace l4q
