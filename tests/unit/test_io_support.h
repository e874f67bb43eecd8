// Helpers shared by the checkpoint I/O tests (test_io_*.cpp): scratch directories, raw file
// bytes, small random LLaMA checkpoints and test-only writers for formats l4q only reads.
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "l4q/io/checkpoint.h"
#include "l4q/io/gguf.h"
#include "l4q/io/gguf_llama.h"
#include "l4q/io/qk_layout.h"
#include "l4q/model/config.h"

namespace l4q::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it. With
// in_memory, under /dev/shm when it is usable: tests that write thousands of small files run
// ~10x faster on tmpfs than on a disk.
class TempDir {
 public:
  explicit TempDir(bool in_memory = false) {
    const char* env = std::getenv("TMPDIR");
    std::string base = env != nullptr && *env ? env : "/tmp";
    if (in_memory && ::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    std::string tmpl = base + "/l4q-io-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_text(const std::string& path) {
  const auto b = read_bytes(path);
  return {b.begin(), b.end()};
}

inline void write_text(const std::string& path, const std::string& s) {
  write_bytes(path, std::vector<uint8_t>(s.begin(), s.end()));
}

template <typename T>
void put(std::vector<uint8_t>& b, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}

inline void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

// A safetensors file from a literal header and data bytes (no validation: for bad inputs).
inline std::vector<uint8_t> safetensors_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b;
  put<uint64_t>(b, header.size());
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// A small GQA config: 2 layers, 4 heads of 8, 2 KV heads.
inline LlamaConfig tiny_config(bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = tied;
  return c;
}

inline Checkpoint random_checkpoint(const LlamaConfig& c, uint64_t seed) {
  at::manual_seed(seed);
  Checkpoint ck;
  ck.config = c;
  for (const auto& [name, shape] : llama_tensor_shapes(c)) ck.tensors.emplace_back(name, at::randn(shape));
  return ck;
}

inline void expect_same_tensors(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].first, b.tensors[i].first);
    EXPECT_TRUE(at::equal(a.tensors[i].second, b.tensors[i].second)) << a.tensors[i].first;
  }
}

inline void expect_same_config(const LlamaConfig& a, const LlamaConfig& b) {
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_DOUBLE_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_DOUBLE_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_DOUBLE_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
}

// A llama.cpp-style GGUF of `ck` (q/k back in interleaved order), every matrix stored as
// `matrix_type`, norms as F32. `skip` / `extra` let tests drop or add a tensor.
inline void write_llama_gguf(const std::string& path, const Checkpoint& ck, GgmlType matrix_type = GgmlType::F32,
                             const std::string& skip = "", bool extra = false) {
  GgufWriter w;
  add_llama_metadata(w, ck.config);
  w.set_scalar<uint32_t>("general.alignment", 32);
  w.set_scalar<uint32_t>("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(ck.config.bos_token_id));
  w.set_scalar<uint32_t>("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(ck.config.eos_token_id));
  for (const auto& [name, t] : ck.tensors) {
    if (name == skip) continue;
    at::Tensor v = t;
    if (name.find(".q_proj.") != std::string::npos) v = rotate_half_to_interleaved(t, ck.config.num_attention_heads);
    if (name.find(".k_proj.") != std::string::npos) v = rotate_half_to_interleaved(t, ck.config.num_key_value_heads);
    w.add_tensor(gguf_name_from_hf(name), v, t.dim() == 1 ? GgmlType::F32 : matrix_type);
  }
  if (extra) w.add_tensor("blk.0.attn_extra.weight", at::zeros({4}), GgmlType::F32);
  w.write(path);
}

// A llama2.c v0 `.bin` of `ck` (shared classifier when tied), with freq_cis tables filled
// with a recognisable pattern that the reader must skip.
inline void write_llama2c(const std::string& path, const Checkpoint& ck, int32_t seq_len = 16) {
  const auto& c = ck.config;
  std::vector<uint8_t> b;
  const int32_t vocab = static_cast<int32_t>(c.tie_word_embeddings ? c.vocab_size : -c.vocab_size);
  for (const int64_t v : {c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
                          c.num_key_value_heads})
    put<int32_t>(b, static_cast<int32_t>(v));
  put<int32_t>(b, vocab);
  put<int32_t>(b, seq_len);
  const auto append = [&](const at::Tensor& t) {
    const auto f = t.contiguous();
    const auto* p = reinterpret_cast<const uint8_t*>(f.data_ptr<float>());
    b.insert(b.end(), p, p + f.numel() * 4);
  };
  const auto stack = [&](const char* suffix, bool permute, int64_t heads) {
    std::vector<at::Tensor> ts;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      auto t = ck.get("model.layers." + std::to_string(l) + "." + suffix);
      ts.push_back(permute ? rotate_half_to_interleaved(t, heads) : t);
    }
    append(at::stack(ts));
  };
  append(ck.get("model.embed_tokens.weight"));
  stack("input_layernorm.weight", false, 0);
  stack("self_attn.q_proj.weight", true, c.num_attention_heads);
  stack("self_attn.k_proj.weight", true, c.num_key_value_heads);
  stack("self_attn.v_proj.weight", false, 0);
  stack("self_attn.o_proj.weight", false, 0);
  stack("post_attention_layernorm.weight", false, 0);
  stack("mlp.gate_proj.weight", false, 0);
  stack("mlp.down_proj.weight", false, 0);
  stack("mlp.up_proj.weight", false, 0);
  append(ck.get("model.norm.weight"));
  append(at::full({seq_len, c.head_dim}, 123.0f));
  if (!c.tie_word_embeddings) append(ck.get("lm_head.weight"));
  write_bytes(path, b);
}

inline std::string asset(const std::string& name) {
  return std::string(L4Q_SOURCE_DIR) + "/assets/stories260K/" + name;
}

}  // namespace l4q::test
