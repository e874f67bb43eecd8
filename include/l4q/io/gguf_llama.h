// The `llama` architecture inside GGUF: llama.* metadata <-> LlamaConfig and GGUF tensor names
// <-> HF tensor names (gguf-py constants.py / tensor_mapping.py). Tensors in GGUF keep Meta's
// interleaved q/k row order (see qk_layout.h).
#pragma once
#include <string>

#include "l4q/io/gguf.h"
#include "l4q/model/config.h"

namespace l4q {

// Reads llama.* keys with the exact types llama.cpp requires (u32 sizes, f32 epsilon and
// frequency base): embedding_length, block_count, feed_forward_length, attention.head_count,
// context_length and attention.layer_norm_rms_epsilon are required; head_count_kv defaults to
// head_count, rope.dimension_count must equal head_dim (attention.key_length if given, else
// embedding/heads), rope.freq_base defaults to 10000, rope.scaling.type none|linear (+factor).
// vocab_size: llama.vocab_size, else token_embd.weight's rows, else tokenizer.ggml.tokens.
// BOS/EOS: tokenizer.ggml.{bos,eos}_token_id (defaults 1, 2). Embeddings are tied when
// output.weight is absent or byte-identical to token_embd.weight (llama.cpp's llama2.c
// converter duplicates a shared classifier). Throws l4q::Error naming the file and key.
LlamaConfig config_from_gguf(const GgufFile& file);

// Writes the llama.* and general.architecture keys for `config` (the types llama.cpp checks).
// Throws for llama3 rope scaling, which GGUF expresses with a rope_freqs tensor instead.
void add_llama_metadata(GgufWriter& writer, const LlamaConfig& config);

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight", and back. Throw
// l4q::Error for a name that is not a LLaMA weight.
std::string gguf_name_from_hf(const std::string& hf_name);
std::string hf_name_from_gguf(const std::string& gguf_name);

}  // namespace l4q
