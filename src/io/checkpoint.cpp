#include "l4q/io/checkpoint.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "l4q/error.h"
#include "quant/tensor_checks.h"
#include "l4q/io/atomic_file.h"
#include "l4q/io/gguf.h"
#include "l4q/io/gguf_llama.h"
#include "l4q/io/hf_config.h"
#include "l4q/io/llama2c.h"
#include "l4q/io/qk_layout.h"

namespace fs = std::filesystem;

namespace l4q {

namespace {

using detail::shape_str;

[[noreturn]] void wrong_shape(const std::string& where, const std::string& name, at::IntArrayRef expected,
                              at::IntArrayRef got) {
  fail(where, ": tensor '", name, "' has wrong shape; expected ", shape_str(expected), ", got ", shape_str(got));
}

bool is_q_or_k(const std::string& hf_name) {
  const auto ends = [&](const char* s) {
    const size_t n = std::strlen(s);
    return hf_name.size() >= n && hf_name.compare(hf_name.size() - n, n, s) == 0;
  };
  return ends(".self_attn.q_proj.weight") || ends(".self_attn.k_proj.weight");
}

int64_t heads_of(const LlamaConfig& c, const std::string& hf_name) {
  return hf_name.find(".k_proj.") != std::string::npos ? c.num_key_value_heads : c.num_attention_heads;
}

// Older HF conversions saved RoPE's inverse frequencies; transformers recomputes and ignores them.
bool ignorable(const std::string& name) {
  const std::string s = ".rotary_emb.inv_freq";
  return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
}

// --- HF directory ------------------------------------------------------------------------------

Checkpoint load_hf_directory(const std::string& dir) {
  Checkpoint ck;
  ck.config = read_hf_config(dir + "/config.json");
  const auto expected = llama_tensor_shapes(ck.config);

  // One view over a single file or a sharded set.
  std::vector<SafetensorsFile> files;
  std::map<std::string, const SafetensorsFile*> where;
  c10::optional<ShardedSafetensors> sharded;
  if (fs::is_regular_file(dir + "/model.safetensors")) {
    files.push_back(SafetensorsFile::open(dir + "/model.safetensors"));
    for (const auto& t : files[0].tensors()) where[t.name] = &files[0];
  } else if (fs::is_regular_file(dir + "/model.safetensors.index.json")) {
    sharded = ShardedSafetensors::open_index(dir + "/model.safetensors.index.json");
    for (const auto& n : sharded->names()) where[n] = &sharded->file_of(n);
  } else {
    fail(dir, ": no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)");
  }

  std::set<std::string> wanted;
  for (const auto& e : expected) wanted.insert(e.first);
  for (const auto& [name, file] : where)
    if (!wanted.count(name) && !ignorable(name))
      fail(file->path(), ": unexpected tensor '", name, "'",
           name == "lm_head.weight" ? " (config.json says tie_word_embeddings: true)" : "");

  for (const auto& [name, shape] : expected) {
    const auto it = where.find(name);
    if (it == where.end()) fail(dir, ": missing tensor '", name, "'");
    const SafetensorsFile& f = *it->second;
    const auto& info = f.info(name);
    if (info.shape != shape) wrong_shape(f.path(), name, shape, info.shape);
    if (info.dtype == SafetensorsDtype::F32) {
      ck.tensors.emplace_back(name, f.tensor(name));
    } else if (info.dtype == SafetensorsDtype::F16 || info.dtype == SafetensorsDtype::BF16 ||
               info.dtype == SafetensorsDtype::F64) {
      ck.tensors.emplace_back(name, f.tensor_f32(name));
      f.release(info);
    } else {
      fail(f.path(), ": tensor '", name, "': dtype ", to_string(info.dtype), " is not supported (F32, F16, BF16, F64)");
    }
  }
  return ck;
}

// --- GGUF --------------------------------------------------------------------------------------

Checkpoint load_gguf(const std::string& path) {
  const auto f = GgufFile::open(path);
  Checkpoint ck;
  ck.config = config_from_gguf(f);
  const auto expected = llama_tensor_shapes(ck.config);

  std::set<std::string> wanted;
  for (const auto& e : expected) wanted.insert(gguf_name_from_hf(e.first));
  if (ck.config.tie_word_embeddings) {
    wanted.insert("output.weight");  // absent, or a byte-identical duplicate: not loaded
    if (const auto* out = f.find_tensor("output.weight")) f.release(*out);  // compared by config_from_gguf
  }
  for (const auto& t : f.tensors())
    if (!wanted.count(t.name)) fail(path, ": unexpected tensor '", t.name, "'");

  for (const auto& [hf, shape] : expected) {
    const std::string name = gguf_name_from_hf(hf);
    const auto* ti = f.find_tensor(name);
    if (ti == nullptr) fail(path, ": missing tensor '", name, "'");
    const std::vector<int64_t> ne(shape.rbegin(), shape.rend());
    if (ti->ne != ne) wrong_shape(path, name, ne, ti->ne);
    auto t = f.tensor_f32(name);
    const bool converted = ti->type != GgmlType::F32;
    if (is_q_or_k(hf)) t = interleaved_to_rotate_half(t, heads_of(ck.config, hf));
    if (converted || is_q_or_k(hf)) f.release(*ti);
    ck.tensors.emplace_back(hf, std::move(t));
  }
  return ck;
}

// --- llama2.c ----------------------------------------------------------------------------------

Checkpoint load_llama2c(const std::string& path) {
  const auto f = Llama2cFile::open(path);
  Checkpoint ck;
  ck.config = config_from_llama2c(f.header());
  const auto& c = ck.config;
  auto& out = ck.tensors;
  out.emplace_back("model.embed_tokens.weight", f.tensor("token_embedding_table"));
  const auto rms_att = f.tensor("rms_att_weight"), wq = f.tensor("wq"), wk = f.tensor("wk"), wv = f.tensor("wv"),
             wo = f.tensor("wo"), rms_ffn = f.tensor("rms_ffn_weight"), w1 = f.tensor("w1"), w2 = f.tensor("w2"),
             w3 = f.tensor("w3");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.emplace_back(p + "input_layernorm.weight", rms_att[l]);
    out.emplace_back(p + "self_attn.q_proj.weight", interleaved_to_rotate_half(wq[l], c.num_attention_heads));
    out.emplace_back(p + "self_attn.k_proj.weight", interleaved_to_rotate_half(wk[l], c.num_key_value_heads));
    out.emplace_back(p + "self_attn.v_proj.weight", wv[l]);
    out.emplace_back(p + "self_attn.o_proj.weight", wo[l]);
    out.emplace_back(p + "post_attention_layernorm.weight", rms_ffn[l]);
    out.emplace_back(p + "mlp.gate_proj.weight", w1[l]);
    out.emplace_back(p + "mlp.up_proj.weight", w3[l]);
    out.emplace_back(p + "mlp.down_proj.weight", w2[l]);
  }
  f.release("wq");
  f.release("wk");
  out.emplace_back("model.norm.weight", f.tensor("rms_final_weight"));
  if (!c.tie_word_embeddings) out.emplace_back("lm_head.weight", f.tensor("wcls"));
  return ck;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

const at::Tensor& Checkpoint::get(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  fail("checkpoint: no tensor named '", name, "'");
}

std::vector<std::pair<std::string, std::vector<int64_t>>> llama_tensor_shapes(const LlamaConfig& c) {
  c.validate("llama_tensor_shapes");
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  std::vector<std::pair<std::string, std::vector<int64_t>>> s;
  s.push_back({"model.embed_tokens.weight", {V, H}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "input_layernorm.weight", {H}});
    s.push_back({p + "self_attn.q_proj.weight", {q, H}});
    s.push_back({p + "self_attn.k_proj.weight", {kv, H}});
    s.push_back({p + "self_attn.v_proj.weight", {kv, H}});
    s.push_back({p + "self_attn.o_proj.weight", {H, q}});
    s.push_back({p + "post_attention_layernorm.weight", {H}});
    s.push_back({p + "mlp.gate_proj.weight", {I, H}});
    s.push_back({p + "mlp.up_proj.weight", {I, H}});
    s.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  s.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", {V, H}});
  return s;
}

void check_llama_tensors(const LlamaConfig& config, const NamedTensors& tensors, const std::string& where) {
  const auto expected = llama_tensor_shapes(config);
  std::map<std::string, const at::Tensor*> have;
  for (const auto& [n, t] : tensors)
    if (!have.emplace(n, &t).second) fail(where, ": duplicate tensor '", n, "'");
  std::set<std::string> wanted;
  for (const auto& [name, shape] : expected) {
    wanted.insert(name);
    const auto it = have.find(name);
    if (it == have.end()) fail(where, ": missing tensor '", name, "'");
    const auto& t = *it->second;
    if (!t.defined()) fail(where, ": tensor '", name, "' is undefined");
    if (t.sizes() != at::IntArrayRef(shape)) wrong_shape(where, name, shape, t.sizes());
    if (t.scalar_type() != at::kFloat) fail(where, ": tensor '", name, "': expected float32, got ", t.scalar_type());
  }
  for (const auto& [n, t] : tensors)
    if (!wanted.count(n)) fail(where, ": unexpected tensor '", n, "'");
}

Checkpoint load_checkpoint(const std::string& path) {
  Checkpoint ck;
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, ": no such file or directory");
  if (fs::is_directory(st)) {
    ck = load_hf_directory(path);
  } else {
    char magic[4] = {0, 0, 0, 0};
    std::ifstream(path, std::ios::binary).read(magic, 4);
    const std::string base = fs::path(path).filename().string();
    if (std::memcmp(magic, "GGUF", 4) == 0) {
      ck = load_gguf(path);
    } else if (base == "config.json" || base == "model.safetensors.index.json" || ends_with(base, ".safetensors")) {
      const auto parent = fs::path(path).parent_path().string();
      ck = load_hf_directory(parent.empty() ? "." : parent);
    } else {
      try {
        ck = load_llama2c(path);
      } catch (const Error& e) {
        fail(path, ": not a GGUF file, an HF directory or a valid llama2.c checkpoint (", e.what(), ")");
      }
    }
  }
  check_llama_tensors(ck.config, ck.tensors, path);
  return ck;
}

void save_hf_directory(const Checkpoint& ckpt, const std::string& dir, const std::string& tokenizer_model,
                       uint64_t max_shard_bytes) {
  check_llama_tensors(ckpt.config, ckpt.tensors, "save_hf_directory " + dir);
  if (!tokenizer_model.empty() && !fs::is_regular_file(tokenizer_model))
    fail("save_hf_directory ", dir, ": tokenizer model '", tokenizer_model, "' is not a file");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) fail("save_hf_directory: cannot create directory '", dir, "': ", ec.message());
  // Canonical order, so files are identical whatever order the caller used.
  NamedTensors ordered;
  for (const auto& [name, shape] : llama_tensor_shapes(ckpt.config)) ordered.emplace_back(name, ckpt.get(name));
  write_safetensors_sharded(dir, ordered, max_shard_bytes);
  if (!tokenizer_model.empty()) copy_file_atomic(tokenizer_model, dir + "/tokenizer.model");
  write_file_atomic(dir + "/config.json", to_hf_config_json(ckpt.config));
}

}  // namespace l4q
