#include "l4q/model/rope.h"

#include <ATen/ATen.h>

#include <cmath>

#include "l4q/error.h"

namespace l4q {

namespace {

// transformers _compute_default_rope_parameters: 1.0 / (base ** (arange(0, d, 2).float() / d))
at::Tensor default_inv_freq(double theta, int64_t dim) {
  const auto exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / dim;
  return at::reciprocal(at::pow(theta, exponent));
}

// transformers _compute_llama3_parameters, op for op in fp32.
at::Tensor llama3_inv_freq(const at::Tensor& inv_freq, const RopeScaling& rs) {
  const double factor = rs.factor;
  const double low = rs.low_freq_factor, high = rs.high_freq_factor;
  const double old_context = static_cast<double>(rs.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / low;
  const double high_freq_wavelen = old_context / high;

  const auto wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
  auto scaled = at::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
  const auto smooth = (at::reciprocal(wavelen) * old_context - low) / (high - low);
  const auto smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
  const auto is_medium = (wavelen < high_freq_wavelen).logical_not() *
                         (wavelen > low_freq_wavelen).logical_not();
  return at::where(is_medium, smoothed, scaled);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const LlamaConfig& config) {
  const int64_t d = config.head_dim;
  if (d < 2 || d % 2 != 0)
    fail("[RotaryEmbedding] head_dim: expected an even number >= 2, got ", d);
  if (!(config.rope_theta > 0))
    fail("[RotaryEmbedding] rope_theta: expected > 0, got ", config.rope_theta);
  const auto& rs = config.rope_scaling;
  inv_freq_ = default_inv_freq(config.rope_theta, d);
  if (rs.type == "none") {
  } else if (rs.type == "linear") {
    if (!(rs.factor > 0)) fail("[RotaryEmbedding] rope_scaling.factor: expected > 0, got ", rs.factor);
    inv_freq_ = inv_freq_ / rs.factor;
  } else if (rs.type == "llama3") {
    if (!(rs.factor > 0)) fail("[RotaryEmbedding] rope_scaling.factor: expected > 0, got ", rs.factor);
    if (!(rs.low_freq_factor > 0) || rs.high_freq_factor == rs.low_freq_factor)
      fail("[RotaryEmbedding] rope_scaling: llama3 needs low_freq_factor > 0 and "
           "high_freq_factor != low_freq_factor, got ", rs.low_freq_factor, " and ",
           rs.high_freq_factor);
    if (rs.original_max_position_embeddings < 1)
      fail("[RotaryEmbedding] rope_scaling.original_max_position_embeddings: expected >= 1, got ",
           rs.original_max_position_embeddings);
    inv_freq_ = llama3_inv_freq(inv_freq_, rs);
  } else {
    fail("[RotaryEmbedding] rope_scaling.type: expected none, linear or llama3, got '", rs.type, "'");
  }
  inv_freq_ = inv_freq_.contiguous();
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::cos_sin(int64_t start, int64_t count,
                                                           at::ScalarType dtype,
                                                           at::Device device) const {
  if (start < 0 || count < 0)
    fail("[RotaryEmbedding] positions: expected start >= 0 and count >= 0, got ", start, ", ", count);
  // Positions as fp32 times fp32 frequencies: one rounding per angle, as transformers'
  // inv_freq @ position_ids (an outer product) does.
  const auto pos = at::arange(start, start + count, at::kLong).to(at::kFloat);
  const auto freqs = at::outer(pos, inv_freq_);
  const auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(device, dtype), emb.sin().to(device, dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t d = x.size(-1);
  const auto x1 = x.narrow(-1, 0, d / 2);
  const auto x2 = x.narrow(-1, d / 2, d - d / 2);
  const auto rotated = at::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

}  // namespace l4q
