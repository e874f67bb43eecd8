#include "l4q/data/shuffle.h"

#include <random>
#include <utility>

namespace l4q {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, n) without modulo bias: reject the 2^64 mod n lowest outputs.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;
  uint64_t x;
  do x = rng();
  while (x < threshold);
  return x % n;
}

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  return splitmix64(seed ^ splitmix64(stream));
}

std::vector<int64_t> random_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n > 0 ? n : 0));
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(seed);
  for (size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[uniform_below(rng, i)]);
  return p;
}

}  // namespace l4q
