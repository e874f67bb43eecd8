#include "l4q/infer/sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "l4q/error.h"

namespace l4q {

void SamplerOptions::validate(const std::string& where) const {
  if (!(temperature >= 0) || !std::isfinite(temperature))
    fail(where, ": temperature: expected a finite value >= 0, got ", temperature);
  if (!(top_p > 0 && top_p <= 1)) fail(where, ": top_p: expected a value in (0, 1], got ", top_p);
}

Sampler::Sampler(const SamplerOptions& options) : opt_(options), rng_(options.seed) {
  opt_.validate("Sampler");
}

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::sample(const at::Tensor& logits) {
  if (!logits.defined() || logits.dim() != 1 || logits.size(0) < 1)
    fail("[Sampler] logits: expected a non-empty 1-D tensor");
  const auto cpu = logits.detach().to(at::kCPU, at::kFloat).contiguous();
  return sample(cpu.data_ptr<float>(), cpu.size(0));
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (vocab < 1) fail("[Sampler] vocab: expected >= 1, got ", vocab);
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  if (opt_.temperature == 0) return static_cast<int32_t>(best);
  if (!std::isfinite(logits[best])) fail("[Sampler] logits: the largest logit is ", logits[best]);

  // softmax(logits / T) in double, shifted by the maximum.
  std::vector<double> p(vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    p[i] = std::exp((static_cast<double>(logits[i]) - logits[best]) / opt_.temperature);
    sum += p[i];
  }
  for (auto& x : p) x /= sum;

  const double u = uniform();
  if (opt_.top_p >= 1) {
    double cdf = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      cdf += p[i];
      if (u < cdf) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(best);  // u beyond the rounded total
  }
  // Nucleus: the most probable tokens (ties by lower id) until their mass exceeds top_p.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  double mass = 0;
  size_t keep = 0;
  while (keep < order.size()) {
    mass += p[order[keep++]];
    if (mass > opt_.top_p) break;
  }
  const double r = u * mass;
  double cdf = 0;
  for (size_t i = 0; i < keep; ++i) {
    cdf += p[order[i]];
    if (r < cdf) return order[i];
  }
  return order[keep - 1];
}

}  // namespace l4q
