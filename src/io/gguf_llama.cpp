#include "l4q/io/gguf_llama.h"

#include <charconv>
#include <cstring>
#include <limits>

#include "l4q/error.h"

namespace l4q {

namespace {

// The double nearest to the shortest decimal that reads back as `f`: GGUF stores eps as f32,
// and 1e-5f should become 1e-5 (as Python prints it), not 9.999999747378752e-06.
double shortest_double(float f) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, f);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

uint32_t to_u32(int64_t v, const char* key) {
  if (v < 0 || v > static_cast<int64_t>(std::numeric_limits<uint32_t>::max()))
    fail("add_llama_metadata: ", key, " = ", v, " does not fit in a u32");
  return static_cast<uint32_t>(v);
}

// HF suffix <-> GGUF suffix of the per-layer tensors.
const std::pair<const char*, const char*> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
const std::pair<const char*, const char*> kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// Splits "<prefix><N>.<rest>" into N and rest.
bool split_layer(const std::string& name, const std::string& prefix, int64_t& layer, std::string& rest) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  const char* b = name.data() + prefix.size();
  const char* e = name.data() + name.size();
  const auto r = std::from_chars(b, e, layer);
  if (r.ec != std::errc() || r.ptr == b || r.ptr == e || *r.ptr != '.' || layer < 0) return false;
  if (*b == '0' && r.ptr - b > 1) return false;  // no leading zeros
  rest.assign(r.ptr + 1, e);
  return true;
}

}  // namespace

std::string gguf_name_from_hf(const std::string& hf) {
  for (const auto& [h, g] : kGlobalNames)
    if (hf == h) return g;
  int64_t layer = 0;
  std::string rest;
  if (split_layer(hf, "model.layers.", layer, rest))
    for (const auto& [h, g] : kLayerNames)
      if (rest == h) return "blk." + std::to_string(layer) + "." + g;
  fail("tensor '", hf, "': not a LLaMA weight name");
}

std::string hf_name_from_gguf(const std::string& gg) {
  for (const auto& [h, g] : kGlobalNames)
    if (gg == g) return h;
  int64_t layer = 0;
  std::string rest;
  if (split_layer(gg, "blk.", layer, rest))
    for (const auto& [h, g] : kLayerNames)
      if (rest == g) return "model.layers." + std::to_string(layer) + "." + h;
  fail("tensor '", gg, "': not a LLaMA GGUF tensor name");
}

LlamaConfig config_from_gguf(const GgufFile& f) {
  const std::string arch = f.get<std::string>("general.architecture");
  if (arch != "llama") fail(f.path(), ": general.architecture '", arch, "': expected 'llama'");
  LlamaConfig c;
  c.hidden_size = f.get<uint32_t>("llama.embedding_length");
  c.num_hidden_layers = f.get<uint32_t>("llama.block_count");
  c.intermediate_size = f.get<uint32_t>("llama.feed_forward_length");
  c.num_attention_heads = f.get<uint32_t>("llama.attention.head_count");
  c.num_key_value_heads = f.get_or<uint32_t>("llama.attention.head_count_kv",
                                              static_cast<uint32_t>(c.num_attention_heads));
  c.max_position_embeddings = f.get<uint32_t>("llama.context_length");
  if (c.num_attention_heads < 1) fail(f.path(), ": llama.attention.head_count: expected >= 1, got 0");
  c.head_dim = f.get_or<uint32_t>("llama.attention.key_length",
                                  static_cast<uint32_t>(c.hidden_size / c.num_attention_heads));
  const int64_t n_rot = f.get_or<uint32_t>("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  if (n_rot != c.head_dim)
    fail(f.path(), ": llama.rope.dimension_count ", n_rot, ": expected head_dim ", c.head_dim,
         " (partial rotary embeddings are not supported)");
  c.rms_norm_eps = shortest_double(f.get<float>("llama.attention.layer_norm_rms_epsilon"));
  c.rope_theta = shortest_double(f.get_or<float>("llama.rope.freq_base", 10000.0f));

  const std::string scaling = f.get_or<std::string>("llama.rope.scaling.type", "none");
  if (scaling == "linear") {
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = shortest_double(f.get<float>("llama.rope.scaling.factor"));
  } else if (scaling != "none") {
    fail(f.path(), ": llama.rope.scaling.type '", scaling, "' is not supported (expected none or linear)");
  }
  if (f.contains("llama.rope.scale_linear")) {  // older converters
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = shortest_double(f.get<float>("llama.rope.scale_linear"));
  }
  if (f.find_tensor("rope_freqs.weight") != nullptr)
    fail(f.path(), ": tensor 'rope_freqs.weight' (llama3 rope scaling) is not supported");

  const auto* embd = f.find_tensor("token_embd.weight");
  if (f.contains("llama.vocab_size")) c.vocab_size = f.get<uint32_t>("llama.vocab_size");
  else if (embd != nullptr && embd->ne.size() == 2) c.vocab_size = embd->ne[1];
  else if (f.contains("tokenizer.ggml.tokens")) c.vocab_size = static_cast<int64_t>(f.find("tokenizer.ggml.tokens")->size());
  else fail(f.path(), ": cannot tell the vocabulary size (no llama.vocab_size, token_embd.weight or tokenizer.ggml.tokens)");
  c.bos_token_id = f.get_or<uint32_t>("tokenizer.ggml.bos_token_id", 1);
  c.eos_token_id = f.get_or<uint32_t>("tokenizer.ggml.eos_token_id", 2);

  const auto* out = f.find_tensor("output.weight");
  c.tie_word_embeddings = out == nullptr ||
                          (embd != nullptr && out->type == embd->type && out->ne == embd->ne &&
                           std::memcmp(f.data(*out), f.data(*embd), out->nbytes) == 0);
  c.validate(f.path());
  return c;
}

void add_llama_metadata(GgufWriter& w, const LlamaConfig& c) {
  c.validate("add_llama_metadata");
  if (c.rope_scaling.type == "llama3")
    fail("add_llama_metadata: llama3 rope scaling needs a rope_freqs tensor, which l4q does not write");
  w.set_scalar<std::string>("general.architecture", "llama");
  w.set_scalar<uint32_t>("llama.context_length", to_u32(c.max_position_embeddings, "context_length"));
  w.set_scalar<uint32_t>("llama.embedding_length", to_u32(c.hidden_size, "embedding_length"));
  w.set_scalar<uint32_t>("llama.block_count", to_u32(c.num_hidden_layers, "block_count"));
  w.set_scalar<uint32_t>("llama.feed_forward_length", to_u32(c.intermediate_size, "feed_forward_length"));
  w.set_scalar<uint32_t>("llama.attention.head_count", to_u32(c.num_attention_heads, "head_count"));
  w.set_scalar<uint32_t>("llama.attention.head_count_kv", to_u32(c.num_key_value_heads, "head_count_kv"));
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    w.set_scalar<uint32_t>("llama.attention.key_length", to_u32(c.head_dim, "key_length"));
    w.set_scalar<uint32_t>("llama.attention.value_length", to_u32(c.head_dim, "value_length"));
  }
  w.set_scalar<uint32_t>("llama.rope.dimension_count", to_u32(c.head_dim, "rope.dimension_count"));
  w.set_scalar<float>("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.set_scalar<float>("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  if (c.rope_scaling.type == "linear") {
    w.set_scalar<std::string>("llama.rope.scaling.type", "linear");
    w.set_scalar<float>("llama.rope.scaling.factor", static_cast<float>(c.rope_scaling.factor));
  }
  w.set_scalar<uint32_t>("llama.vocab_size", to_u32(c.vocab_size, "vocab_size"));
}

}  // namespace l4q
