#include "l4q/model/attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "l4q/error.h"

namespace l4q {

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail("[causal_attention] expected 4-D q, k, v, got ", q.dim(), "-D, ", k.dim(), "-D, ",
         v.dim(), "-D");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), d = q.size(3);
  const int64_t KV = k.size(1), S = k.size(2);
  if (!k.sizes().equals(v.sizes()) || k.size(0) != B || k.size(3) != d || KV < 1 || H % KV != 0 ||
      S < T)
    fail("[causal_attention] shapes: q [", B, ", ", H, ", ", T, ", ", d, "] needs k, v [", B,
         ", KV dividing ", H, ", S >= ", T, ", ", d, "], got k ", k.sizes(), ", v ", v.sizes());
  const int64_t g = H / KV;
  // The g query heads sharing a key/value head are adjacent, so folding them into the row
  // dimension lets one matmul per KV head serve them all without repeating k and v.
  const auto qg = q.reshape({B, KV, g * T, d});
  auto scores = at::matmul(qg, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d));
  if (T > 1) {
    // masked[i, j] = key j lies after query i's position S - T + i
    const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    const auto qpos = at::arange(S - T, S, opts).unsqueeze(1);
    const auto kpos = at::arange(0, S, opts).unsqueeze(0);
    const auto masked = kpos > qpos;
    scores = scores.view({B, KV, g, T, S})
                 .masked_fill(masked, -std::numeric_limits<double>::infinity())
                 .view({B, KV, g * T, S});
  }
  const auto probs = at::softmax(scores, -1);
  return at::matmul(probs, v).view({B, H, T, d});
}

}  // namespace l4q
