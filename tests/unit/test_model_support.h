// Random small LLaMA models for the model and generation tests.
#pragma once
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <string>

#include "l4q/model/config.h"
#include "l4q/model/llama.h"

namespace l4q::test {

inline LlamaConfig tiny_llama_config(int64_t heads = 4, int64_t kv_heads = 2, bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = 32 / heads;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = tied;
  return c;
}

// Weights by HF name, N(0, 0.2) projections and norms near 1 so that every part matters.
inline NamedTensors random_llama_weights(const LlamaConfig& c, at::ScalarType dt, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto o = at::TensorOptions().dtype(dt);
  auto randn = [&](std::vector<int64_t> shape, double scale) {
    return at::normal(0.0, scale, shape, gen, o);
  };
  const int64_t H = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, I = c.intermediate_size;
  NamedTensors w;
  w.emplace_back("model.embed_tokens.weight", randn({c.vocab_size, H}, 1.0));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w.emplace_back(p + "input_layernorm.weight", 1 + randn({H}, 0.1));
    w.emplace_back(p + "self_attn.q_proj.weight", randn({q, H}, 0.3));
    w.emplace_back(p + "self_attn.k_proj.weight", randn({kv, H}, 0.3));
    w.emplace_back(p + "self_attn.v_proj.weight", randn({kv, H}, 0.3));
    w.emplace_back(p + "self_attn.o_proj.weight", randn({H, q}, 0.3));
    w.emplace_back(p + "post_attention_layernorm.weight", 1 + randn({H}, 0.1));
    w.emplace_back(p + "mlp.gate_proj.weight", randn({I, H}, 0.3));
    w.emplace_back(p + "mlp.up_proj.weight", randn({I, H}, 0.3));
    w.emplace_back(p + "mlp.down_proj.weight", randn({H, I}, 0.3));
  }
  w.emplace_back("model.norm.weight", 1 + randn({H}, 0.1));
  if (!c.tie_word_embeddings) w.emplace_back("lm_head.weight", randn({c.vocab_size, H}, 0.3));
  return w;
}

inline at::Tensor tensor_named(const NamedTensors& w, const std::string& name) {
  for (const auto& [n, t] : w)
    if (n == name) return t;
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

}  // namespace l4q::test
