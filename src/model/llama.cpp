#include "l4q/model/llama.h"

#include <ATen/ATen.h>

#include <set>
#include <sstream>

#include <ATen/core/grad_mode.h>

#include "l4q/error.h"
#include "quant/tensor_checks.h"
#include "l4q/model/activation_checkpoint.h"
#include "l4q/model/attention.h"
#include "nn/row_matmul.h"

namespace l4q {

namespace {

using detail::shape_str;

// transformers LlamaRMSNorm: weight * (x * rsqrt(mean(x^2) + eps)).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const auto variance = x.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x * at::rsqrt(variance + eps));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

const std::vector<std::string>& llama_projection_names() {
  static const std::vector<std::string> names = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  return names;
}

struct LlamaModel::Layer {
  at::Tensor input_norm, post_norm;
  // q, k, v, o, gate, up, down (llama_projection_names order)
  std::vector<std::pair<std::string, std::unique_ptr<Linear>>> proj;
  const Linear& q() const { return *proj[0].second; }
  const Linear& k() const { return *proj[1].second; }
  const Linear& v() const { return *proj[2].second; }
  const Linear& o() const { return *proj[3].second; }
  const Linear& gate() const { return *proj[4].second; }
  const Linear& up() const { return *proj[5].second; }
  const Linear& down() const { return *proj[6].second; }
};

LlamaModel::LlamaModel(const LlamaConfig& config, const NamedTensors& weights,
                       const LinearFactory& factory)
    : config_(config), rope_((config.validate("LlamaModel"), config)) {
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, t] : weights)
    if (!by_name.emplace(name, t).second) fail("LlamaModel: tensor '", name, "' given twice");
  build(by_name, factory);
}

LlamaModel::LlamaModel(const LlamaConfig& config, const std::map<std::string, at::Tensor>& weights,
                       const LinearFactory& factory)
    : config_(config), rope_((config.validate("LlamaModel"), config)) {
  build(weights, factory);
}

LlamaModel::~LlamaModel() = default;
LlamaModel::LlamaModel(LlamaModel&&) noexcept = default;
LlamaModel& LlamaModel::operator=(LlamaModel&&) noexcept = default;

void LlamaModel::build(const std::map<std::string, at::Tensor>& weights,
                       const LinearFactory& factory) {
  if (!factory) fail("LlamaModel: the LinearFactory is empty");
  const auto& c = config_;
  const int64_t H = c.hidden_size, hd = c.head_dim;
  std::set<std::string> used;
  at::ScalarType dtype = at::ScalarType::Undefined;
  std::string dtype_from;

  auto check = [&](const std::string& name, const at::Tensor& t, std::vector<int64_t> shape) {
    if (!t.defined()) fail("LlamaModel: tensor '", name, "' is undefined");
    if (!t.sizes().equals(shape))
      fail("LlamaModel: tensor '", name, "': expected shape ", shape_str(shape), ", got ",
           shape_str(t.sizes()));
    if (!at::isFloatingType(t.scalar_type()))
      fail("LlamaModel: tensor '", name, "': expected a floating dtype, got ", t.scalar_type());
    if (dtype == at::ScalarType::Undefined) {
      dtype = t.scalar_type();
      dtype_from = name;
    } else if (t.scalar_type() != dtype) {
      fail("LlamaModel: tensor '", name, "': dtype ", t.scalar_type(), " differs from '",
           dtype_from, "' (", dtype, ")");
    }
  };
  auto require = [&](const std::string& name, std::vector<int64_t> shape) {
    const auto it = weights.find(name);
    if (it == weights.end())
      fail("LlamaModel: missing tensor '", name, "' (expected shape ", shape_str(shape), ")");
    check(name, it->second, shape);
    used.insert(name);
    return it->second.detach();
  };
  auto optional = [&](const std::string& name, std::vector<int64_t> shape) {
    const auto it = weights.find(name);
    if (it == weights.end()) return at::Tensor();
    check(name, it->second, shape);
    used.insert(name);
    return it->second.detach();
  };

  embed_ = require("model.embed_tokens.weight", {c.vocab_size, H});
  final_norm_ = require("model.norm.weight", {H});
  if (c.tie_word_embeddings) {
    const auto head = optional("lm_head.weight", {c.vocab_size, H});
    if (head.defined() && !head.equal(embed_))
      fail("LlamaModel: tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' while "
           "tie_word_embeddings is true");
    lm_head_ = embed_;
  } else {
    lm_head_ = require("lm_head.weight", {c.vocab_size, H});
  }

  const int64_t q_out = c.num_attention_heads * hd, kv_out = c.num_key_value_heads * hd;
  const std::vector<std::pair<int64_t, int64_t>> proj_shape = {
      {q_out, H}, {kv_out, H}, {kv_out, H}, {H, q_out},
      {c.intermediate_size, H}, {c.intermediate_size, H}, {H, c.intermediate_size}};
  layers_.clear();
  layers_.reserve(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    Layer layer;
    layer.input_norm = require(prefix + "input_layernorm.weight", {H});
    layer.post_norm = require(prefix + "post_attention_layernorm.weight", {H});
    for (size_t p = 0; p < proj_shape.size(); ++p) {
      const std::string module = prefix + llama_projection_names()[p];
      const auto [out, in] = proj_shape[p];
      const auto w = require(module + ".weight", {out, in});
      const auto b = optional(module + ".bias", {out});
      auto lin = factory(module, w, b);
      if (!lin) fail("LlamaModel: the LinearFactory returned no layer for '", module, "'");
      if (lin->in_features() != in || lin->out_features() != out)
        fail("LlamaModel: the LinearFactory built '", module, "' as ", lin->in_features(), " -> ",
             lin->out_features(), ", expected ", in, " -> ", out);
      layer.proj.emplace_back(module, std::move(lin));
    }
    layers_.push_back(std::move(layer));
  }

  for (const auto& kv : weights) {
    if (used.count(kv.first) || ends_with(kv.first, ".rotary_emb.inv_freq")) continue;
    fail("LlamaModel: unexpected tensor '", kv.first, "' ", shape_str(kv.second.sizes()),
         " (not part of a LLaMA model with ", c.num_hidden_layers, " layers",
         c.tie_word_embeddings ? ", tied embeddings" : "", ")");
  }
}

at::ScalarType LlamaModel::dtype() const { return embed_.scalar_type(); }
at::Device LlamaModel::device() const { return embed_.device(); }

at::Tensor LlamaModel::forward_hidden(const at::Tensor& tokens_in, KvCache* cache) const {
  const auto& c = config_;
  if (!tokens_in.defined() || tokens_in.dim() != 2)
    fail("[LlamaModel::forward] tokens: expected [batch, seq], got ",
         tokens_in.defined() ? shape_str(tokens_in.sizes()) : std::string("undefined"));
  if (!at::isIntegralType(tokens_in.scalar_type(), /*includeBool=*/false))
    fail("[LlamaModel::forward] tokens: expected an integer dtype, got ", tokens_in.scalar_type());
  const int64_t B = tokens_in.size(0), T = tokens_in.size(1);
  if (B < 1 || T < 1)
    fail("[LlamaModel::forward] tokens: expected a non-empty [batch, seq], got ",
         shape_str(tokens_in.sizes()));
  const auto tokens = tokens_in.to(embed_.device(), at::kLong);
  const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
  if (lo < 0 || hi >= c.vocab_size)
    fail("[LlamaModel::forward] tokens: ids must lie in [0, ", c.vocab_size, "), got ",
         lo < 0 ? lo : hi);
  const int64_t start = cache ? cache->length() : 0;

  const auto [cos, sin] = rope_.cos_sin(start, T, dtype(), device());
  auto x = at::embedding(embed_, tokens);
  const bool checkpoint = checkpoint_blocks_ && !cache && at::GradMode::is_enabled();
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (checkpoint) {
      // cos and sin are captured by value: the recompute in backward outlives this call.
      x = checkpointed([this, l, cos = cos, sin = sin](
                           const at::Tensor& in) { return block(l, in, cos, sin, nullptr); },
                       x, block_trainables(l));
    } else {
      x = block(l, x, cos, sin, cache);
    }
  }
  if (cache) cache->commit(T);
  return rms_norm(x, final_norm_, c.rms_norm_eps);
}

at::Tensor LlamaModel::block(size_t l, const at::Tensor& x, const at::Tensor& cos,
                             const at::Tensor& sin, KvCache* cache) const {
  const auto& c = config_;
  const auto& layer = layers_[l];
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const auto h = rms_norm(x, layer.input_norm, c.rms_norm_eps);
  auto q = layer.q().forward(h).view({B, T, nh, hd}).transpose(1, 2);
  auto k = layer.k().forward(h).view({B, T, nkv, hd}).transpose(1, 2);
  auto v = layer.v().forward(h).view({B, T, nkv, hd}).transpose(1, 2);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  if (cache) std::tie(k, v) = cache->append(static_cast<int64_t>(l), k, v);
  const auto a = causal_attention(q, k, v).transpose(1, 2).reshape({B, T, nh * hd});
  const auto x2 = x + layer.o().forward(a);
  const auto h2 = rms_norm(x2, layer.post_norm, c.rms_norm_eps);
  return x2 + layer.down().forward(at::silu(layer.gate().forward(h2)) * layer.up().forward(h2));
}

std::vector<at::Tensor> LlamaModel::block_trainables(size_t l) const {
  const auto& layer = layers_[l];
  std::vector<at::Tensor> out;
  for (const auto& t : {layer.input_norm, layer.post_norm})
    if (t.requires_grad()) out.push_back(t);
  for (const auto& [name, lin] : layer.proj) {
    for (const auto& p : lin->parameters())
      if (p.tensor.requires_grad()) out.push_back(p.tensor);
  }
  return out;
}

at::Tensor LlamaModel::logits(const at::Tensor& hidden) const {
  if (!hidden.defined() || hidden.dim() < 1 || hidden.size(-1) != config_.hidden_size)
    fail("[LlamaModel::logits] hidden: expected [..., ", config_.hidden_size, "], got ",
         hidden.defined() ? shape_str(hidden.sizes()) : std::string("undefined"));
  return detail::matmul_weight_t(hidden, lm_head_);  // a GEMV when decoding one position
}

at::Tensor LlamaModel::forward(const at::Tensor& tokens, KvCache* cache) const {
  return logits(forward_hidden(tokens, cache));
}

std::vector<std::pair<std::string, Linear*>> LlamaModel::named_linears() {
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& layer : layers_)
    for (auto& [name, lin] : layer.proj) out.emplace_back(name, lin.get());
  return out;
}

std::vector<std::pair<std::string, const Linear*>> LlamaModel::named_linears() const {
  std::vector<std::pair<std::string, const Linear*>> out;
  for (const auto& layer : layers_)
    for (const auto& [name, lin] : layer.proj) out.emplace_back(name, lin.get());
  return out;
}

Linear& LlamaModel::linear(const std::string& name) {
  for (auto& layer : layers_)
    for (auto& [n, lin] : layer.proj)
      if (n == name) return *lin;
  fail("LlamaModel: no linear layer named '", name, "' (names look like 'model.layers.0.self_attn.q_proj')");
}

NamedTensors LlamaModel::named_float_parameters() const {
  NamedTensors out;
  out.emplace_back("model.embed_tokens.weight", embed_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    out.emplace_back(prefix + "input_layernorm.weight", layers_[l].input_norm);
    out.emplace_back(prefix + "post_attention_layernorm.weight", layers_[l].post_norm);
  }
  out.emplace_back("model.norm.weight", final_norm_);
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", lm_head_);
  return out;
}

NamedTensors LlamaModel::effective_state_dict() const {
  NamedTensors out = named_float_parameters();
  for (const auto& layer : layers_)
    for (const auto& [name, lin] : layer.proj) {
      out.emplace_back(name + ".weight", lin->effective_weight().detach());
      const auto b = lin->bias();
      if (b.defined()) out.emplace_back(name + ".bias", b.detach());
    }
  return out;
}

void LlamaModel::set_training(bool training) {
  for (auto& layer : layers_)
    for (auto& [name, lin] : layer.proj) lin->set_training(training);
}

void LlamaModel::set_deployed(bool deployed) {
  for (auto& layer : layers_)
    for (auto& [name, lin] : layer.proj) lin->set_deployed(deployed);
}

bool LlamaModel::rounds_at_export() const {
  for (const auto& layer : layers_)
    for (const auto& [name, lin] : layer.proj)
      if (lin->rounds_at_export()) return true;
  return false;
}

}  // namespace l4q
