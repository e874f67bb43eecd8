// karpathy/llama2.c checkpoints, version 0 (`.bin` from export.py legacy_export / run.c):
//   7 x int32 header: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//   (vocab_size > 0: the classifier shares the token embedding; < 0: a separate classifier
//   follows), then fp32 arrays in this order:
//   token_embedding_table [V, dim]     rms_att_weight [L, dim]
//   wq [L, n_heads*hd, dim]   wk [L, n_kv_heads*hd, dim]   wv [L, n_kv_heads*hd, dim]
//   wo [L, dim, n_heads*hd]   rms_ffn_weight [L, dim]
//   w1 [L, hidden, dim]   w2 [L, dim, hidden]   w3 [L, hidden, dim]   rms_final_weight [dim]
//   freq_cis_real, freq_cis_imag [seq_len, hd/2] (skipped)   wcls [V, dim] (separate only)
// Q/K rows are in Meta's interleaved RoPE order (pairs 2i, 2i+1).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "l4q/model/config.h"

namespace l4q {

struct Llama2cHeader {
  int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0;
  int32_t vocab_size = 0;  // as stored: negative means a separate classifier
  int32_t seq_len = 0;
  bool shared_classifier() const { return vocab_size > 0; }
  int64_t vocab() const { return vocab_size < 0 ? -static_cast<int64_t>(vocab_size) : vocab_size; }
  int64_t head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }
};

class Llama2cFile {
 public:
  // Maps `path` and checks the header (positive sizes, heads dividing dim, kv heads dividing
  // heads, even head size) and that the file has exactly the bytes the header implies.
  // Throws l4q::Error naming the file, the field and the expected and actual values.
  static Llama2cFile open(const std::string& path);

  const std::string& path() const;
  const Llama2cHeader& header() const;
  // Array names in file order (see above; wcls only with a separate classifier).
  const std::vector<std::string>& names() const;
  // The whole fp32 array in the shape listed above: a zero-copy view of the copy-on-write
  // mapping, which it keeps alive.
  at::Tensor tensor(const std::string& name) const;
  // Drops the resident pages of an array (after converting it to a new buffer).
  void release(const std::string& name) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// The model hyper-parameters a llama2.c checkpoint implies (run.c: rms eps 1e-5, RoPE theta
// 10000, context seq_len, BOS 1, EOS 2; tied embeddings when the classifier is shared).
LlamaConfig config_from_llama2c(const Llama2cHeader& header);

}  // namespace l4q
