#include "l4q/data/split.h"

#include <algorithm>
#include <cmath>

#include "l4q/data/shuffle.h"
#include "l4q/error.h"

namespace l4q {

// Separate from the epoch streams (0, 1, 2, ...) that the loader draws from the same seed.
static constexpr uint64_t kSplitStream = 0x73706c6974ull;  // "split"

SplitIndices split_validation(int64_t n, double fraction, uint64_t seed, const std::string& where) {
  if (!(fraction >= 0.0 && fraction < 1.0))
    fail(where, ": val_fraction: expected a value in [0, 1), got ", fraction);
  SplitIndices out;
  if (fraction == 0.0) {
    out.train.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out.train[static_cast<size_t>(i)] = i;
    return out;
  }
  const auto n_val = std::max<int64_t>(1, std::llround(fraction * static_cast<double>(n)));
  if (n_val >= n)
    fail(where, ": val_fraction ", fraction, " of ", n, " items leaves no training data (",
         n_val, " for validation)");
  const auto perm = random_permutation(n, derive_seed(seed, kSplitStream));
  out.val.assign(perm.begin(), perm.begin() + n_val);
  out.train.assign(perm.begin() + n_val, perm.end());
  std::sort(out.val.begin(), out.val.end());
  std::sort(out.train.begin(), out.train.end());
  return out;
}

}  // namespace l4q
