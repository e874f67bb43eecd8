#include "l4q/io/llama2c.h"

#include <ATen/ATen.h>

#include <cstring>
#include <map>

#include "io/mapped_file.h"
#include "l4q/error.h"

namespace l4q {

namespace {

struct Array {
  uint64_t offset;  // bytes from the start of the file
  std::vector<int64_t> shape;
  uint64_t numel() const {
    uint64_t n = 1;
    for (const auto d : shape) n *= static_cast<uint64_t>(d);
    return n;
  }
};

constexpr uint64_t kHeaderBytes = 7 * sizeof(int32_t);

}  // namespace

struct Llama2cFile::Impl {
  std::shared_ptr<const detail::MappedFile> file;
  Llama2cHeader header;
  std::vector<std::string> names;
  std::map<std::string, Array> arrays;
};

Llama2cFile Llama2cFile::open(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->file = detail::MappedFile::open(path);
  const uint64_t size = impl->file->size();
  if (size < kHeaderBytes) fail(path, ": ", size, " bytes is too short for the llama2.c header (28 bytes)");
  int32_t h[7];
  std::memcpy(h, impl->file->data(), sizeof h);
  if (static_cast<uint32_t>(h[0]) == 0x616b3432u)  // "ak42": export.py version 1/2 files
    fail(path, ": llama2.c export version ", h[1], " (magic ak42) is not supported; expected the v0 format");
  auto& hd = impl->header;
  hd = {h[0], h[1], h[2], h[3], h[4], h[5], h[6]};
  const std::pair<const char*, int32_t> positive[] = {{"dim", hd.dim},         {"hidden_dim", hd.hidden_dim},
                                                      {"n_layers", hd.n_layers}, {"n_heads", hd.n_heads},
                                                      {"n_kv_heads", hd.n_kv_heads}, {"seq_len", hd.seq_len}};
  for (const auto& [name, v] : positive)
    if (v < 1) fail(path, ": llama2.c header field '", name, "': expected >= 1, got ", v);
  if (hd.vocab_size == 0 || hd.vocab_size == INT32_MIN)
    fail(path, ": llama2.c header field 'vocab_size': expected non-zero, got ", hd.vocab_size);
  if (hd.dim % hd.n_heads != 0)
    fail(path, ": llama2.c header: n_heads ", hd.n_heads, " does not divide dim ", hd.dim);
  if (hd.n_heads % hd.n_kv_heads != 0)
    fail(path, ": llama2.c header: n_kv_heads ", hd.n_kv_heads, " does not divide n_heads ", hd.n_heads);
  if (hd.head_dim() % 2 != 0) fail(path, ": llama2.c header: head size ", hd.head_dim(), " is odd");

  const int64_t dim = hd.dim, hidden = hd.hidden_dim, L = hd.n_layers, V = hd.vocab();
  const int64_t q_rows = hd.n_heads * hd.head_dim(), kv_rows = hd.n_kv_heads * hd.head_dim();
  // Fields up to 2^31 multiply past 2^64 bytes: every step is overflow-checked, and no
  // array may end past the end of the file.
  uint64_t offset = kHeaderBytes;
  const auto skip = [&](const std::vector<int64_t>& shape) {
    uint64_t bytes = sizeof(float);
    bool overflow = false;
    for (const auto d : shape) overflow |= __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes);
    overflow |= __builtin_add_overflow(offset, bytes, &offset);
    if (overflow || offset > size)
      fail(path, ": llama2.c header {dim ", hd.dim, ", hidden_dim ", hd.hidden_dim, ", n_layers ", hd.n_layers,
           ", n_heads ", hd.n_heads, ", n_kv_heads ", hd.n_kv_heads, ", vocab_size ", hd.vocab_size,
           ", seq_len ", hd.seq_len, "} implies more bytes than the file's ", size);
  };
  const auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    const uint64_t begin = offset;
    skip(shape);
    impl->names.push_back(name);
    impl->arrays.emplace(name, Array{begin, std::move(shape)});
  };
  add("token_embedding_table", {V, dim});
  add("rms_att_weight", {L, dim});
  add("wq", {L, q_rows, dim});
  add("wk", {L, kv_rows, dim});
  add("wv", {L, kv_rows, dim});
  add("wo", {L, dim, q_rows});
  add("rms_ffn_weight", {L, dim});
  add("w1", {L, hidden, dim});
  add("w2", {L, dim, hidden});
  add("w3", {L, hidden, dim});
  add("rms_final_weight", {dim});
  skip({hd.seq_len, hd.head_dim()});  // freq_cis_real and freq_cis_imag, hd/2 each
  if (!hd.shared_classifier()) add("wcls", {V, dim});
  if (offset != size)
    fail(path, ": llama2.c header {dim ", hd.dim, ", hidden_dim ", hd.hidden_dim, ", n_layers ", hd.n_layers,
         ", n_heads ", hd.n_heads, ", n_kv_heads ", hd.n_kv_heads, ", vocab_size ", hd.vocab_size, ", seq_len ",
         hd.seq_len, "} implies ", offset, " bytes, but the file has ", size);

  Llama2cFile f;
  f.impl_ = std::move(impl);
  return f;
}

const std::string& Llama2cFile::path() const { return impl_->file->path(); }
const Llama2cHeader& Llama2cFile::header() const { return impl_->header; }
const std::vector<std::string>& Llama2cFile::names() const { return impl_->names; }

at::Tensor Llama2cFile::tensor(const std::string& name) const {
  const auto it = impl_->arrays.find(name);
  if (it == impl_->arrays.end()) fail(path(), ": no llama2.c array named '", name, "'");
  auto keep = impl_;
  // Offsets are 28 + 4k: always 4-byte aligned in the page-aligned mapping.
  return at::from_blob(const_cast<uint8_t*>(impl_->file->data()) + it->second.offset, it->second.shape,
                       [keep](void*) {}, at::kFloat);
}

void Llama2cFile::release(const std::string& name) const {
  const auto it = impl_->arrays.find(name);
  if (it == impl_->arrays.end()) fail(path(), ": no llama2.c array named '", name, "'");
  impl_->file->release(it->second.offset, it->second.numel() * sizeof(float));
}

LlamaConfig config_from_llama2c(const Llama2cHeader& h) {
  LlamaConfig c;
  c.vocab_size = h.vocab();
  c.hidden_size = h.dim;
  c.intermediate_size = h.hidden_dim;
  c.num_hidden_layers = h.n_layers;
  c.num_attention_heads = h.n_heads;
  c.num_key_value_heads = h.n_kv_heads;
  c.head_dim = h.head_dim();
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = h.seq_len;
  c.tie_word_embeddings = h.shared_classifier();
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.validate("llama2.c header");
  return c;
}

}  // namespace l4q
