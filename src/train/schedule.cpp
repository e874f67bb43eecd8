#include "l4q/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace l4q {

LrSchedule::LrSchedule(const OptimConfig& o, int64_t total_steps)
    : kind_(o.schedule),
      warmup_(o.warmup_steps >= 0 ? o.warmup_steps
                                  : static_cast<int64_t>(std::llround(o.warmup_ratio * total_steps))),
      total_(total_steps),
      min_(o.min_lr_ratio) {}

double LrSchedule::factor(int64_t step) const {
  if (step < warmup_) return static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (kind_ == ScheduleKind::constant) return 1.0;
  const double p = std::clamp(static_cast<double>(step - warmup_) /
                                  static_cast<double>(std::max<int64_t>(1, total_ - warmup_)),
                              0.0, 1.0);
  const double shape = kind_ == ScheduleKind::cosine ? 0.5 * (1.0 + std::cos(M_PI * p)) : 1.0 - p;
  return min_ + (1.0 - min_) * shape;
}

}  // namespace l4q
