// Hyper-parameters of a LLaMA-architecture model, whatever file they came from.
#pragma once
#include <cstdint>
#include <string>

namespace l4q {

// RoPE frequency scaling. "llama3" is Meta's LLaMA-3.1 scheme (factor, low/high frequency
// factors, original context length); "linear" divides positions by `factor`.
struct RopeScaling {
  std::string type = "none";  // none | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 128;  // hidden_size / num_attention_heads unless given
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  // Throws l4q::Error naming `where` and the field if the numbers cannot describe a model
  // (non-positive sizes, heads not dividing, kv heads not dividing heads, ...).
  void validate(const std::string& where) const;
};

}  // namespace l4q
