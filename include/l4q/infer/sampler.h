// Next-token choice from logits: greedy (temperature 0) or temperature + nucleus (top-p)
// sampling with l4q's own seeded generator, so a seed gives the same tokens whatever torch's
// RNG state, thread count or platform.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>
#include <string>

namespace l4q {

struct SamplerOptions {
  double temperature = 0.0;  // 0: greedy (argmax, lowest id on ties)
  double top_p = 1.0;        // in (0, 1]; 1 samples from the whole distribution
  uint64_t seed = 0;
  void validate(const std::string& where) const;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);

  // logits [vocab] (any floating dtype, any device) -> token id.
  int32_t sample(const at::Tensor& logits);
  // The same on a plain array (the logits are read in double precision).
  int32_t sample(const float* logits, int64_t vocab);

  // A uniform double in [0, 1) from 53 random bits (std::uniform_real_distribution is not
  // specified bit for bit across standard libraries).
  double uniform();

 private:
  SamplerOptions opt_;
  std::mt19937_64 rng_;
};

}  // namespace l4q
