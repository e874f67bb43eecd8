// Seeded permutations that depend on nothing but the seed: std::mt19937_64 (whose output the
// C++ standard fixes) with our own unbiased bounded draw, not std::uniform_int_distribution
// (implementation-defined) nor torch's generator. Results match across compilers and runs.
#pragma once
#include <cstdint>
#include <vector>

namespace l4q {

// An independent 64-bit seed for stream `stream` of `seed` (SplitMix64 finaliser).
uint64_t derive_seed(uint64_t seed, uint64_t stream);

// Fisher-Yates permutation of 0..n-1 drawn from std::mt19937_64(seed).
std::vector<int64_t> random_permutation(int64_t n, uint64_t seed);

}  // namespace l4q
