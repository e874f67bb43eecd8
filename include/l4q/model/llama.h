// LlamaModel: the LLaMA decoder (token embedding, pre-norm blocks of GQA attention with RoPE
// and a SwiGLU MLP, final RMSNorm, lm_head), as transformers' LlamaForCausalLM computes it.
//
// Weights are given by their HF names (model.embed_tokens.weight,
// model.layers.N.self_attn.q_proj.weight, ...; q/k rows in HF rotate-half order) and shared,
// not copied. Every projection of the blocks (q, k, v, o, gate, up, down) is built by the
// LinearFactory from its module name, e.g. "model.layers.3.self_attn.q_proj", so a training
// method replaces layers without the model knowing which. Embedding, norms and lm_head stay
// plain tensors (lm_head is the embedding when tie_word_embeddings).
//
// Training: forward(tokens) without a cache; gradients flow into whatever the linear layers
// (or a caller who sets requires_grad on named_float_parameters()) make trainable.
// Inference: forward(tokens, &cache) appends keys/values and continues positions from
// cache.length().
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "l4q/model/config.h"
#include "l4q/model/kv_cache.h"
#include "l4q/model/rope.h"
#include "l4q/nn/linear.h"

namespace l4q {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

class LlamaModel {
 public:
  // Checks the config and every tensor: names (missing and unexpected ones), shapes, floating
  // dtype shared by all. Optional tensors: lm_head.weight when tied (must then equal the
  // embedding), a bias for any projection; `*.rotary_emb.inv_freq` buffers are ignored.
  // Throws l4q::Error naming the tensor, the shape expected and the shape found.
  LlamaModel(const LlamaConfig& config, const NamedTensors& weights,
             const LinearFactory& factory = float_linear_factory());
  LlamaModel(const LlamaConfig& config, const std::map<std::string, at::Tensor>& weights,
             const LinearFactory& factory = float_linear_factory());
  ~LlamaModel();
  LlamaModel(LlamaModel&&) noexcept;
  LlamaModel& operator=(LlamaModel&&) noexcept;

  // tokens [B, T] (integer) -> logits [B, T, vocab].
  at::Tensor forward(const at::Tensor& tokens, KvCache* cache = nullptr) const;
  // The same split in two, so callers that need few positions (generation, a masked loss)
  // apply the lm_head only there: hidden states after the final norm [B, T, hidden] ...
  at::Tensor forward_hidden(const at::Tensor& tokens, KvCache* cache = nullptr) const;
  // ... and hidden [..., hidden] -> logits [..., vocab].
  at::Tensor logits(const at::Tensor& hidden) const;
  // The [vocab, hidden] weight logits() multiplies by (the embedding when tied): for heads
  // that never form all the logits (train/linear_cross_entropy.h).
  const at::Tensor& lm_head_weight() const { return lm_head_; }

  const LlamaConfig& config() const { return config_; }
  at::ScalarType dtype() const;
  at::Device device() const;

  // Every block projection by HF module name, in layer order (q, k, v, o, gate, up, down).
  std::vector<std::pair<std::string, Linear*>> named_linears();
  std::vector<std::pair<std::string, const Linear*>> named_linears() const;
  Linear& linear(const std::string& name);  // throws l4q::Error for an unknown name

  // Embedding, the norms and (untied) lm_head by HF tensor name: the model's own tensors,
  // not copies.
  NamedTensors named_float_parameters() const;
  // Every tensor by HF name as a float checkpoint: the float parameters plus each
  // projection's effective_weight() (and bias). lm_head.weight is omitted when tied.
  NamedTensors effective_state_dict() const;

  // Forwards to every linear layer (dropout in the training methods).
  void set_training(bool training);
  // Deployed mode for every projection (nn/linear.h: lora-rtn and qat-lora then run on their
  // exported weights), and whether any projection's exported weight differs from its
  // training-time one.
  void set_deployed(bool deployed);
  bool rounds_at_export() const;

  // Activation checkpointing per decoder block (off by default): while gradients are wanted
  // (grad mode on, no cache), each block keeps only its input and recomputes its activations
  // in backward (see model/activation_checkpoint.h). Same loss and gradients, less memory,
  // one more forward pass of the blocks. The model must outlive that backward.
  void set_activation_checkpointing(bool on) { checkpoint_blocks_ = on; }
  bool activation_checkpointing() const { return checkpoint_blocks_; }

 private:
  struct Layer;
  void build(const std::map<std::string, at::Tensor>& weights, const LinearFactory& factory);
  // One decoder block: x [B, T, hidden] -> x + attention + MLP. `l` indexes layers_ and the
  // cache's layer.
  at::Tensor block(size_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                   KvCache* cache) const;
  // Every tensor of block l that requires grad (its projections' parameters, its norms).
  std::vector<at::Tensor> block_trainables(size_t l) const;

  LlamaConfig config_;
  RotaryEmbedding rope_;
  at::Tensor embed_, final_norm_, lm_head_;  // lm_head_ aliases embed_ when tied
  std::vector<Layer> layers_;
  bool checkpoint_blocks_ = false;
};

// HF names of the seven projections of one block, relative to "model.layers.N.".
const std::vector<std::string>& llama_projection_names();

}  // namespace l4q
