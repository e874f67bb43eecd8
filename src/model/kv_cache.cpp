#include "l4q/model/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "l4q/error.h"
#include "quant/tensor_checks.h"

namespace l4q {

namespace {

using detail::shape_str;

// Buffer with room for `capacity` positions holding the first `keep` positions of `old`.
at::Tensor grow(const at::Tensor& old, const at::Tensor& like, int64_t capacity, int64_t keep) {
  auto buf = at::empty({like.size(0), like.size(1), capacity, like.size(3)}, like.options());
  if (old.defined() && keep > 0) buf.narrow(2, 0, keep).copy_(old.narrow(2, 0, keep));
  return buf;
}

}  // namespace

void KvCache::truncate(int64_t length) {
  if (length < 0 || length > length_)
    fail("[KvCache] truncate: expected a length in [0, ", length_, "], got ", length);
  length_ = length;
}

std::pair<at::Tensor, at::Tensor> KvCache::append(int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v) {
  if (layer < 0) fail("[KvCache] append: layer ", layer, " is negative");
  if (k.dim() != 4 || !k.sizes().equals(v.sizes()))
    fail("[KvCache] append: keys and values must both be [B, kv_heads, T, head_dim], got ",
         shape_str(k.sizes()), " and ", shape_str(v.sizes()));
  if (layer >= num_layers()) {
    keys_.resize(layer + 1);
    values_.resize(layer + 1);
  }
  auto& kb = keys_[layer];
  auto& vb = values_[layer];
  const int64_t t = k.size(2);
  if (kb.defined() && length_ > 0) {
    const bool same = kb.size(0) == k.size(0) && kb.size(1) == k.size(1) &&
                      kb.size(3) == k.size(3) && kb.scalar_type() == k.scalar_type() &&
                      kb.device() == k.device();
    if (!same)
      fail("[KvCache] layer ", layer, ": cached keys are [", kb.size(0), ", ", kb.size(1), ", *, ",
           kb.size(3), "] ", kb.scalar_type(), ", new keys ", shape_str(k.sizes()), " ",
           k.scalar_type(), " (a cache serves one batch of sequences; clear() it first)");
  }
  const bool fits = kb.defined() && kb.size(0) == k.size(0) && kb.size(1) == k.size(1) &&
                    kb.size(3) == k.size(3) && kb.scalar_type() == k.scalar_type() &&
                    kb.device() == k.device() && kb.size(2) >= length_ + t;
  if (!fits) {
    const int64_t old_cap = kb.defined() ? kb.size(2) : 0;
    const int64_t capacity = std::max({reserve_, 2 * old_cap, length_ + t, int64_t{16}});
    kb = grow(kb, k, capacity, length_);
    vb = grow(vb, v, capacity, length_);
  }
  kb.narrow(2, length_, t).copy_(k);
  vb.narrow(2, length_, t).copy_(v);
  return {kb.narrow(2, 0, length_ + t), vb.narrow(2, 0, length_ + t)};
}

void KvCache::commit(int64_t count) {
  if (count < 0) fail("[KvCache] commit: count ", count, " is negative");
  for (size_t l = 0; l < keys_.size(); ++l)
    if (!keys_[l].defined() || keys_[l].size(2) < length_ + count)
      fail("[KvCache] commit: layer ", l, " holds fewer than ", length_ + count, " positions");
  length_ += count;
}

}  // namespace l4q
