// Held-out validation split by fraction, deterministic given the seed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace l4q {

struct SplitIndices {
  std::vector<int64_t> train;  // ascending
  std::vector<int64_t> val;    // ascending
};

// round(fraction * n) items (at least 1 when fraction > 0) drawn at random for validation;
// both sides keep the original order. fraction must lie in [0, 1) and leave at least one
// training item; otherwise l4q::Error naming `where` and val_fraction.
SplitIndices split_validation(int64_t n, double fraction, uint64_t seed, const std::string& where);

template <typename T>
std::vector<T> select(const std::vector<T>& items, const std::vector<int64_t>& indices) {
  std::vector<T> out;
  out.reserve(indices.size());
  for (const auto i : indices) out.push_back(items[static_cast<size_t>(i)]);
  return out;
}

}  // namespace l4q
