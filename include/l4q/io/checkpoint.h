// Loading a LLaMA checkpoint from any supported source into one form, and saving it as an HF
// directory. Sources, recognised by content:
//   - an HF directory: config.json + model.safetensors (or model.safetensors.index.json and
//     its shards); F32 tensors are used in place, F16/BF16/F64 converted to fp32;
//   - a GGUF file (llama architecture; F32, F16, BF16, Q4_0, Q4_1, Q8_0 tensors);
//   - a llama2.c v0 `.bin` checkpoint.
// GGUF and llama2.c q/k rows are permuted from Meta's interleaved order to HF's rotate-half
// order (qk_layout.h), the order l4q's model uses.
//
// Memory: fp32 tensors alias the file's copy-on-write mapping (no copy); converted tensors
// are new buffers, and the pages of their source are dropped from the resident set as soon
// as each is converted, so a load never holds two copies of the weights.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "l4q/io/safetensors.h"
#include "l4q/model/config.h"

namespace l4q {

struct Checkpoint {
  LlamaConfig config;
  // HF names in canonical order: model.embed_tokens.weight, then per layer
  // input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj,
  // then model.norm.weight and lm_head.weight (absent when config.tie_word_embeddings).
  // fp32, CPU, q/k rows in rotate-half order.
  NamedTensors tensors;

  const at::Tensor& get(const std::string& name) const;  // throws l4q::Error if absent
};

// The tensors a model with `config` has, with their PyTorch shapes, in canonical order.
std::vector<std::pair<std::string, std::vector<int64_t>>> llama_tensor_shapes(const LlamaConfig& config);

// Throws l4q::Error naming `where` for a missing or unexpected tensor, a wrong shape
// ("tensor 'x' has wrong shape; expected [a, b], got [c, d]") or a tensor that is not fp32.
void check_llama_tensors(const LlamaConfig& config, const NamedTensors& tensors, const std::string& where);

// Loads `path` (see above). Throws l4q::Error naming the file and tensor for anything
// missing, unexpected, of the wrong shape or type, or malformed.
Checkpoint load_checkpoint(const std::string& path);

// Writes `ckpt` to directory `dir` (created if needed; existing files replaced):
// model.safetensors (sharded with an index when the tensors exceed max_shard_bytes),
// config.json (to_hf_config_json), and a copy of `tokenizer_model` as tokenizer.model when
// non-empty. Every file is written atomically; config.json last.
void save_hf_directory(const Checkpoint& ckpt, const std::string& dir, const std::string& tokenizer_model = "",
                       uint64_t max_shard_bytes = 5'000'000'000ull);

}  // namespace l4q
