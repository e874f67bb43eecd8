// HF transformers `config.json` for LLaMA models <-> LlamaConfig (fields and defaults of
// transformers' configuration_llama.py; see docs/formats.md).
#pragma once
#include <string>

#include "l4q/model/config.h"

namespace l4q {

// Parses config.json text. Missing fields take transformers' defaults (num_key_value_heads =
// num_attention_heads, head_dim = hidden_size / num_attention_heads, ...); rope_scaling may be
// null, {"rope_type" or "type": "default" | "linear" | "llama3", ...}; transformers v5's
// "rope_parameters" is read too; eos_token_id may be a list (the first id is used).
// Throws l4q::Error naming `where` and the key when a field has the wrong JSON type or value,
// or describes something the model cannot run (hidden_act other than silu, attention or MLP
// biases, model_type other than llama, unsupported rope scaling).
LlamaConfig config_from_hf_json(const std::string& json_text, const std::string& where = "config.json");
// Reads and parses the file at `path`.
LlamaConfig read_hf_config(const std::string& path);

// config.json text for `config`: model_type llama, architectures [LlamaForCausalLM],
// torch_dtype float32, rope_theta and rope_scaling (null when none) as top-level keys, which
// both transformers v4 and v5 read.
std::string to_hf_config_json(const LlamaConfig& config);

}  // namespace l4q
