// Keys and values of past positions for incremental decoding. One cache serves one
// LlamaModel::forward sequence of calls with a fixed batch size; positions continue from
// length(). Storage grows by doubling, so appending one token costs O(1) amortised copies.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace l4q {

class KvCache {
 public:
  KvCache() = default;
  // Reserves room for `capacity` positions up front (optional; it grows when needed).
  explicit KvCache(int64_t capacity) : reserve_(capacity) {}

  // Positions held (the absolute position of the next token).
  int64_t length() const { return length_; }
  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }
  // Forgets everything (buffers kept).
  void clear() { length_ = 0; }
  // Drops positions >= `length` (e.g. to reuse a shared prompt prefix).
  void truncate(int64_t length);

  // Used by the model. Writes k, v [B, kv_heads, T, head_dim] of `layer` at positions
  // length() .. length()+T-1 and returns views of all keys and values of that layer,
  // [B, kv_heads, length()+T, head_dim]. length() only moves on commit(T), after every layer
  // has appended, so a forward pass that throws leaves the cache as it was.
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  void commit(int64_t count);

 private:
  int64_t reserve_ = 0;
  int64_t length_ = 0;
  std::vector<at::Tensor> keys_, values_;  // [B, kv_heads, capacity, head_dim]
};

}  // namespace l4q
