#include "l4q/export/gguf_export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "export/export_support.h"
#include "l4q/error.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/gguf.h"
#include "l4q/io/gguf_llama.h"
#include "l4q/io/qk_layout.h"
#include "l4q/quant/ggml_blocks.h"
#include "l4q/quant/lsq.h"

namespace l4q {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Heads whose rows a tensor holds when it needs the q/k permutation, else 0.
int64_t qk_heads(const std::string& name, const LlamaConfig& c) {
  if (ends_with(name, "self_attn.q_proj.weight")) return c.num_attention_heads;
  if (ends_with(name, "self_attn.k_proj.weight")) return c.num_key_value_heads;
  return 0;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0) return 0;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Groups notes by reason so that a 32-layer model gives one line per reason, not 32.
class NoteBook {
 public:
  void add(const std::string& reason, const std::string& layer) { by_reason_[reason].push_back(layer); }
  void flush_into(std::vector<std::string>& notes) const {
    for (const auto& [reason, layers] : by_reason_) {
      std::ostringstream os;
      os << reason << ": " << layers.size() << " layer" << (layers.size() == 1 ? "" : "s") << " (";
      for (size_t i = 0; i < layers.size(); ++i) os << (i ? ", " : "") << layers[i];
      os << ")";
      notes.push_back(os.str());
    }
  }

 private:
  std::map<std::string, std::vector<std::string>> by_reason_;
};

std::vector<int32_t> token_types(const SentencePieceVocab& v) {
  if (!v.types.empty()) return v.types;
  std::vector<int32_t> t(v.pieces.size(), static_cast<int32_t>(SentencePieceType::kNormal));
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    const auto& p = v.pieces[i];
    if (p.size() == 6 && p.rfind("<0x", 0) == 0 && p.back() == '>')
      t[i] = static_cast<int32_t>(SentencePieceType::kByte);
  }
  auto set = [&](int32_t id, SentencePieceType ty) {
    if (id >= 0 && static_cast<size_t>(id) < t.size()) t[id] = static_cast<int32_t>(ty);
  };
  set(v.unk_id, SentencePieceType::kUnknown);
  set(v.bos_id, SentencePieceType::kControl);
  set(v.eos_id, SentencePieceType::kControl);
  set(v.pad_id, SentencePieceType::kControl);
  return t;
}

// The special ids and BOS/EOS flags of tokenizer.ggml.*, the same keys for both vocabularies
// (an id < 0 is absent and not written).
template <typename Vocab>
void set_special_tokens(GgufWriter& w, const Vocab& v, bool add_bos) {
  auto id = [&](const char* key, int32_t value) {
    if (value >= 0) w.set_scalar<uint32_t>(key, static_cast<uint32_t>(value));
  };
  id("tokenizer.ggml.bos_token_id", v.bos_id);
  id("tokenizer.ggml.eos_token_id", v.eos_id);
  id("tokenizer.ggml.unknown_token_id", v.unk_id);
  id("tokenizer.ggml.padding_token_id", v.pad_id);
  w.set_scalar<bool>("tokenizer.ggml.add_bos_token", add_bos);
  w.set_scalar<bool>("tokenizer.ggml.add_eos_token", false);
}

// tokenizer.ggml.* as llama.cpp's converter writes them for a SentencePiece ("llama") model.
void add_vocabulary(GgufWriter& w, const export_detail::RunVocabulary& rv, int64_t vocab_size,
                    std::vector<std::string>& notes) {
  auto v = rv.vocab;
  auto types = token_types(v);
  const int64_t n = static_cast<int64_t>(v.pieces.size());
  if (v.scores.size() != v.pieces.size() || types.size() != v.pieces.size())
    fail(rv.source, ": vocabulary arrays disagree: ", v.pieces.size(), " pieces, ", v.scores.size(),
         " scores, ", types.size(), " types");
  if (n > vocab_size)
    fail(rv.source, ": the vocabulary has ", n, " pieces but the model's vocab_size is ", vocab_size);
  if (n < vocab_size) {
    // convert_hf_to_gguf.py pads the same way: llama.cpp needs one token per embedding row.
    for (int64_t i = n; i < vocab_size; ++i) {
      v.pieces.push_back("[PAD" + std::to_string(i) + "]");
      v.scores.push_back(-1000.f);
      types.push_back(static_cast<int32_t>(SentencePieceType::kUserDefined));
    }
    notes.push_back("vocabulary: " + std::to_string(n) + " pieces padded to vocab_size " +
                    std::to_string(vocab_size) + " with [PADi] user-defined tokens");
  }
  w.set_scalar<std::string>("tokenizer.ggml.model", "llama");
  w.set("tokenizer.ggml.tokens", GgufValue::array_of(v.pieces));
  w.set("tokenizer.ggml.scores", GgufValue::array_of(v.scores));
  w.set("tokenizer.ggml.token_type", GgufValue::array_of(types));
  set_special_tokens(w, v, true);
  w.set_scalar<bool>("tokenizer.ggml.add_space_prefix", v.add_dummy_prefix);
}

// tokenizer.ggml.* for a byte-level BPE ("gpt2"), as llama.cpp's converter writes them for
// SmolLM2 / LLaMA-3: tokens in their byte-mapped form, types, merges "left right", the
// pre-tokenizer's name, special ids and add_bos_token.
void add_bpe_vocabulary(GgufWriter& w, const BpeVocab& v, int64_t vocab_size,
                        std::vector<std::string>& notes) {
  auto tokens = v.tokens;
  std::vector<int32_t> types(tokens.size(), static_cast<int32_t>(BpeTokenType::normal));
  for (size_t i = 0; i < v.types.size() && i < types.size(); ++i) types[i] = static_cast<int32_t>(v.types[i]);
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n > vocab_size)
    fail("[gguf export] the tokenizer has ", n, " tokens but the model's vocab_size is ", vocab_size);
  for (int64_t i = n; i < vocab_size; ++i) {
    tokens.push_back("[PAD" + std::to_string(i) + "]");
    types.push_back(static_cast<int32_t>(BpeTokenType::user_defined));
  }
  if (n < vocab_size)
    notes.push_back("vocabulary: " + std::to_string(n) + " tokens padded to vocab_size " +
                    std::to_string(vocab_size) + " with [PADi] user-defined tokens");
  std::vector<std::string> merges;
  merges.reserve(v.merges.size());
  for (const auto& [a, b] : v.merges) merges.push_back(a + " " + b);
  w.set_scalar<std::string>("tokenizer.ggml.model", "gpt2");
  w.set_scalar<std::string>("tokenizer.ggml.pre", to_string(v.pre));
  w.set("tokenizer.ggml.tokens", GgufValue::array_of(tokens));
  w.set("tokenizer.ggml.token_type", GgufValue::array_of(types));
  w.set("tokenizer.ggml.merges", GgufValue::array_of(merges));
  set_special_tokens(w, v, v.add_bos);
}

struct Errors {
  double weight = 0, scale = 0, offset = 0;
};

// fp32 view of the step and the unsigned offset m = b + s*Qn the formats store.
struct UnsignedGroups {
  at::Tensor s, m;  // fp32 [out, groups], contiguous
};
UnsignedGroups unsigned_groups(const MergedWeight& w) {
  return {w.s.clamp_min(min_step()).to(at::kFloat).contiguous(),
          w.min_offset().to(at::kFloat).contiguous()};
}

using export_detail::fmt_g;

}  // namespace

bool fits_q4_1(const QuantGrid& grid, int64_t in, std::string* why) {
  const int64_t gs = grid.group_size_for(in);
  std::string reason;
  if (grid.bits > 4) reason = std::to_string(grid.bits) + "-bit codes do not fit a nibble";
  else if (gs % kQK4_1 != 0) reason = "group " + std::to_string(gs) + " is not a multiple of 32";
  else if (in % kQK4_1 != 0) reason = "in_features " + std::to_string(in) + " is not a multiple of 32";
  if (why) *why = reason;
  return reason.empty();
}

bool fits_q8_0(const MergedWeight& w, std::string* why) {
  const int64_t in = w.w_int.size(1), gs = w.grid.group_size_for(in);
  std::string reason;
  if (w.grid.bits != 8) reason = "Q8_0 holds 8-bit codes, got " + std::to_string(w.grid.bits) + "-bit";
  else if (gs % kQK8_0 != 0) reason = "group " + std::to_string(gs) + " is not a multiple of 32";
  else if (w.b.ne(0).any().item<bool>())
    reason = "8-bit with a nonzero offset (Q8_0 is symmetric: x = q*d)";
  if (why) *why = reason;
  return reason.empty();
}

MergedWeight permute_rows_to_interleaved(const MergedWeight& w, int64_t n_heads) {
  return {rotate_half_to_interleaved(w.w_int, n_heads), rotate_half_to_interleaved(w.s, n_heads),
          rotate_half_to_interleaved(w.b, n_heads), w.grid};
}

std::vector<uint8_t> pack_q4_1(const MergedWeight& w) {
  const int64_t out = w.w_int.size(0), in = w.w_int.size(1);
  std::string why;
  if (!fits_q4_1(w.grid, in, &why)) fail("[pack_q4_1] ", w.grid.describe(), ": ", why);
  const int64_t gs = w.grid.group_size_for(in), groups = in / gs, blocks = in / kQK4_1;
  const auto q = w.unsigned_codes().contiguous();
  const auto ug = unsigned_groups(w);
  const uint8_t* qp = q.data_ptr<uint8_t>();
  const float* sp = ug.s.data_ptr<float>();
  const float* mp = ug.m.data_ptr<float>();
  std::vector<uint8_t> bytes(static_cast<size_t>(out * blocks) * sizeof(BlockQ4_1));
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < blocks; ++j) {
      const int64_t g = (j * kQK4_1) / gs;
      BlockQ4_1 blk;
      blk.d = fp32_to_fp16(sp[r * groups + g]);
      blk.m = fp32_to_fp16(mp[r * groups + g]);
      const uint8_t* c = qp + r * in + j * kQK4_1;
      // Byte t: element t in the low nibble, element t + 16 in the high nibble.
      for (int t = 0; t < kQK4_1 / 2; ++t)
        blk.qs[t] = static_cast<uint8_t>((c[t] & 0xF) | ((c[t + kQK4_1 / 2] & 0xF) << 4));
      std::memcpy(bytes.data() + (r * blocks + j) * sizeof(BlockQ4_1), &blk, sizeof(blk));
    }
  return bytes;
}

std::vector<uint8_t> pack_q8_0(const MergedWeight& w) {
  std::string why;
  if (!fits_q8_0(w, &why)) fail("[pack_q8_0] ", w.grid.describe(), ": ", why);
  const int64_t out = w.w_int.size(0), in = w.w_int.size(1);
  const int64_t gs = w.grid.group_size_for(in), groups = in / gs, blocks = in / kQK8_0;
  const auto codes = w.w_int.contiguous();
  const auto s = w.s.clamp_min(min_step()).to(at::kFloat).contiguous();
  const int8_t* cp = codes.data_ptr<int8_t>();
  const float* sp = s.data_ptr<float>();
  std::vector<uint8_t> bytes(static_cast<size_t>(out * blocks) * sizeof(BlockQ8_0));
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < blocks; ++j) {
      BlockQ8_0 blk;
      blk.d = fp32_to_fp16(sp[r * groups + (j * kQK8_0) / gs]);
      std::memcpy(blk.qs, cp + r * in + j * kQK8_0, kQK8_0);
      std::memcpy(bytes.data() + (r * blocks + j) * sizeof(BlockQ8_0), &blk, sizeof(blk));
    }
  return bytes;
}

ExportReport export_gguf(const TrainedRun& run, const std::string& out_path, const ExportOptions& opt) {
  export_detail::check_output_path(out_path, opt, "gguf");
  if (std::filesystem::is_directory(out_path))
    fail("[gguf export] output '", out_path, "' is a directory; expected a .gguf file path");
  if (!run.model) fail("[gguf export] ", run.checkpoint_dir, ": the run has no model");
  at::NoGradGuard no_grad;
  const LlamaModel& model = *run.model;
  const LlamaConfig& cfg = model.config();

  ExportReport rep = export_detail::start_report(run, "gguf", out_path);

  GgufWriter w;
  add_llama_metadata(w, cfg);
  w.set_scalar<std::string>("general.name", "l4q export of " + run.checkpoint_dir);
  w.set_scalar<uint32_t>("general.alignment", 32);
  w.set_scalar<uint32_t>("general.file_type", 0);  // replaced below once the types are known
  if (const auto* bpe = export_detail::run_bpe_vocab(run))
    add_bpe_vocabulary(w, *bpe, cfg.vocab_size, rep.notes);
  else
    add_vocabulary(w, export_detail::find_run_vocabulary(run), cfg.vocab_size, rep.notes);

  std::map<std::string, at::Tensor> floats;
  for (const auto& [name, t] : model.named_float_parameters()) floats[name] = t;
  std::map<std::string, const Linear*> linears;
  for (const auto& [name, l] : model.named_linears()) linears[name] = l;
  const std::string suffix = ".weight";

  NoteBook book;
  Errors err;
  bool any_q4_1 = false, any_q8_0 = false, any_quantized = false;
  auto shapes = llama_tensor_shapes(cfg);
  if (cfg.tie_word_embeddings) {
    // llama.cpp reuses token_embd when output.weight is absent, but transformers' GGUF loader
    // does not tie (it leaves lm_head random): write the classifier out, as llama.cpp's
    // llama2.c converter does. Our reader recognises the byte-identical copy as tied.
    shapes.emplace_back("lm_head.weight", std::vector<int64_t>{cfg.vocab_size, cfg.hidden_size});
    floats["lm_head.weight"] = floats.at("model.embed_tokens.weight");
  }
  for (const auto& [name, shape] : shapes) {
    const std::string gname = gguf_name_from_hf(name);
    if (auto it = floats.find(name); it != floats.end()) {
      w.add_tensor(gname, it->second.to(at::kFloat).contiguous(), GgmlType::F32);
      continue;
    }
    if (!ends_with(name, suffix)) fail("[gguf export] unexpected tensor '", name, "'");
    const std::string lname = name.substr(0, name.size() - suffix.size());
    const auto lit = linears.find(lname);
    if (lit == linears.end()) fail("[gguf export] the model has no linear layer '", lname, "'");
    const Linear& lin = *lit->second;
    if (lin.bias().defined()) fail("[gguf export] ", lname, ": biases are not supported by llama GGUF");
    const int64_t heads = qk_heads(name, cfg);
    auto mw = lin.quantized_weight();
    std::string why;
    if (mw) {
      MergedWeight m = heads ? permute_rows_to_interleaved(*mw, heads) : *mw;
      const auto ug = unsigned_groups(m);
      const bool finite = ug.s.numel() == 0 ||
                          (at::isfinite(ug.s.to(at::kHalf)).all().item<bool>() &&
                           at::isfinite(ug.m.to(at::kHalf)).all().item<bool>());
      GgmlType type = GgmlType::F32;
      if (fits_q4_1(m.grid, m.w_int.size(1), &why)) type = GgmlType::Q4_1;
      else if (m.grid.bits == 8) {
        std::string why8;
        if (fits_q8_0(m, &why8)) type = GgmlType::Q8_0;
        else why = why8;
      }
      if (type != GgmlType::F32 && !finite) {
        why = "a step or offset overflows fp16";
        type = GgmlType::F32;
      }
      if (type != GgmlType::F32) {
        auto bytes = type == GgmlType::Q4_1 ? pack_q4_1(m) : pack_q8_0(m);
        // Measure what a reader gets back: ggml's own reference dequantization of our bytes.
        const auto trained = m.dequantize().to(at::kFloat).contiguous();
        auto back = at::empty_like(trained);
        ggml_traits(type).to_float(bytes.data(), back.data_ptr<float>(), back.numel());
        err.weight = std::max(err.weight, max_abs_diff(back, trained));
        err.scale = std::max(err.scale, max_abs_diff(ug.s.to(at::kHalf), ug.s));
        if (type == GgmlType::Q4_1) err.offset = std::max(err.offset, max_abs_diff(ug.m.to(at::kHalf), ug.m));
        w.add_tensor_bytes(gname, type, {shape[0], shape[1]}, std::move(bytes));
        ++rep.quantized_layers;
        any_q4_1 |= type == GgmlType::Q4_1;
        any_q8_0 |= type == GgmlType::Q8_0;
        any_quantized = true;
        continue;
      }
    } else {
      why = "method " + lin.method() + " has no integer weight";
    }
    // Fallback: the trained W_q itself, F16 where that is lossless.
    auto W = lin.effective_weight().to(at::kFloat);
    if (heads) W = rotate_half_to_interleaved(W, heads);
    W = W.contiguous();
    const bool f16_exact = at::equal(W.to(at::kHalf).to(at::kFloat), W);
    const GgmlType type = f16_exact ? GgmlType::F16 : GgmlType::F32;
    book.add((mw ? mw->grid.describe() + " written as " : std::string("written as ")) +
                 to_string(type) + " (" + why + ")",
             lname);
    w.add_tensor(gname, W, type);
    ++rep.float_layers;
  }
  book.flush_into(rep.notes);
  // llama_ftype: 3 MOSTLY_Q4_1, 7 MOSTLY_Q8_0, 0 ALL_F32.
  w.set_scalar<uint32_t>("general.file_type", any_q4_1 ? 3u : (any_q8_0 ? 7u : 0u));
  if (any_quantized) w.set_scalar<uint32_t>("general.quantization_version", 2);
  if (err.scale > 0 || err.offset > 0)
    rep.notes.push_back("steps and offsets rounded to fp16 (max |s - fp16(s)| " + fmt_g(err.scale) +
                        ", max |m - fp16(m)| " + fmt_g(err.offset) + ")");
  rep.max_weight_error = err.weight;
  rep.max_scale_error = err.scale;
  rep.max_offset_error = err.offset;
  w.write(out_path);
  rep.bytes = export_detail::bytes_on_disk(out_path);
  return rep;
}

}  // namespace l4q
