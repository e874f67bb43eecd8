#include "l4q/export/gptq_export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "export/export_support.h"
#include "l4q/error.h"
#include "l4q/io/atomic_file.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/hf_config.h"
#include "l4q/io/safetensors.h"
#include "l4q/quant/lsq.h"

namespace l4q {

namespace {

// Rows one packing unit covers: 32/bits codes per word, or 32 codes per 3 words for 3 bits.
int64_t rows_per_unit(int bits) { return bits == 3 ? 32 : 32 / bits; }
int64_t words_per_unit(int bits) { return bits == 3 ? 3 : 1; }

void check_bits(int bits, const std::string& where) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    fail(where, ": GPTQ holds 2, 3, 4 or 8 bits, got ", bits);
}

}  // namespace

at::Tensor gptq_pack_rows(const at::Tensor& v, int bits) {
  check_bits(bits, "[gptq_pack_rows]");
  if (!v.defined() || v.dim() != 2) fail("[gptq_pack_rows] expected a 2-D tensor");
  const int64_t rows = v.size(0), cols = v.size(1), unit = rows_per_unit(bits);
  if (rows % unit != 0)
    fail("[gptq_pack_rows] ", rows, " rows: expected a multiple of ", unit, " for ", bits, "-bit packing");
  const auto vi = v.to(at::kLong).contiguous();
  const int64_t* src = vi.data_ptr<int64_t>();
  const uint32_t mask = (1u << bits) - 1;
  const int64_t max_v = vi.numel() ? vi.max().item<int64_t>() : 0, min_v = vi.numel() ? vi.min().item<int64_t>() : 0;
  if (min_v < 0 || max_v > static_cast<int64_t>(mask))
    fail("[gptq_pack_rows] values in [", min_v, ", ", max_v, "]: expected [0, ", mask, "]");
  auto out = at::zeros({rows / unit * words_per_unit(bits), cols}, at::TensorOptions().dtype(at::kInt));
  auto* dst = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  auto val = [&](int64_t r, int64_t c) { return static_cast<uint32_t>(src[r * cols + c]); };
  for (int64_t u = 0; u < rows / unit; ++u)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t r0 = u * unit;
      if (bits != 3) {
        uint32_t w = 0;
        for (int k = 0; k < unit; ++k) w |= val(r0 + k, c) << (bits * k);
        dst[u * cols + c] = w;
        continue;
      }
      // AutoGPTQ's 3-bit layout: v0..v9 | v10 split 2+1 | v11..v20 | v21 split 1+2 | v22..v31.
      uint32_t w0 = 0, w1 = 0, w2 = 0;
      for (int j = 0; j < 10; ++j) w0 |= val(r0 + j, c) << (3 * j);
      w0 |= val(r0 + 10, c) << 30;
      w1 |= (val(r0 + 10, c) >> 2) & 1u;
      for (int j = 0; j < 10; ++j) w1 |= val(r0 + 11 + j, c) << (3 * j + 1);
      w1 |= val(r0 + 21, c) << 31;
      w2 |= (val(r0 + 21, c) >> 1) & 3u;
      for (int j = 0; j < 10; ++j) w2 |= val(r0 + 22 + j, c) << (3 * j + 2);
      dst[(3 * u) * cols + c] = w0;
      dst[(3 * u + 1) * cols + c] = w1;
      dst[(3 * u + 2) * cols + c] = w2;
    }
  return out;
}

at::Tensor gptq_unpack_rows(const at::Tensor& packed, int bits, int64_t rows) {
  check_bits(bits, "[gptq_unpack_rows]");
  const int64_t unit = rows_per_unit(bits), wpu = words_per_unit(bits);
  if (!packed.defined() || packed.dim() != 2 || packed.scalar_type() != at::kInt || rows % unit != 0 ||
      packed.size(0) != rows / unit * wpu)
    fail("[gptq_unpack_rows] expected int32 [", rows / unit * wpu, ", cols] for ", rows, " ", bits,
         "-bit rows");
  const int64_t cols = packed.size(1);
  const auto p = packed.contiguous();
  const auto* src = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  auto out = at::empty({rows, cols}, at::TensorOptions().dtype(at::kInt));
  int32_t* dst = out.data_ptr<int32_t>();
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t u = 0; u < rows / unit; ++u)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t r0 = u * unit;
      auto put = [&](int64_t r, uint32_t v) { dst[(r0 + r) * cols + c] = static_cast<int32_t>(v & mask); };
      if (bits != 3) {
        const uint32_t w = src[u * cols + c];
        for (int k = 0; k < unit; ++k) put(k, w >> (bits * k));
        continue;
      }
      const uint32_t w0 = src[3 * u * cols + c], w1 = src[(3 * u + 1) * cols + c],
                     w2 = src[(3 * u + 2) * cols + c];
      for (int j = 0; j < 10; ++j) put(j, w0 >> (3 * j));
      put(10, (w0 >> 30) | ((w1 & 1u) << 2));
      for (int j = 0; j < 10; ++j) put(11 + j, w1 >> (3 * j + 1));
      put(21, (w1 >> 31) | ((w2 & 3u) << 1));
      for (int j = 0; j < 10; ++j) put(22 + j, w2 >> (3 * j + 2));
    }
  return out;
}

GptqTensors gptq_layer(const MergedWeight& w, const std::string& name) {
  const int bits = w.grid.bits;
  check_bits(bits, name);
  const int64_t out = w.w_int.size(0), in = w.w_int.size(1), gs = w.grid.group_size_for(in);
  const int64_t unit = rows_per_unit(bits);
  if (in % unit != 0)
    fail(name, ": in_features ", in, " is not a multiple of ", unit, " (", bits, "-bit GPTQ packs ", unit,
         " input rows per unit)");
  if (out % unit != 0)
    fail(name, ": out_features ", out, " is not a multiple of ", unit, " (", bits,
         "-bit GPTQ packs zero points along out)");
  at::NoGradGuard no_grad;
  GptqTensors t;
  t.qweight = gptq_pack_rows(w.unsigned_codes().t(), bits);
  const auto s = w.s.clamp_min(min_step()).to(at::kFloat);
  const auto b = w.b.to(at::kFloat);
  const int qn = w.grid.qn(), qp = w.grid.qp();
  // z = -Qn - k must be a code: k in [-Qp, -Qn].
  const auto k = at::round(b / s).clamp(-qp, -qn);
  t.max_offset_error = b.numel() ? (b - s * k).abs().max().item<double>() : 0.0;
  const auto z = (-qn - k).to(at::kLong);  // [out, groups]
  t.qzeros = gptq_pack_rows(z, bits).t().contiguous();
  t.scales = s.t().to(at::kHalf).contiguous();
  t.g_idx = at::div(at::arange(in, at::TensorOptions().dtype(at::kLong)), gs, "floor").to(at::kInt);
  return t;
}

at::Tensor gptq_dequantize(const GptqTensors& t, int bits) {
  const int64_t in = t.g_idx.size(0), out = t.scales.size(1), groups = t.scales.size(0);
  const auto q = gptq_unpack_rows(t.qweight, bits, in);                      // [in, out]
  const auto z = gptq_unpack_rows(t.qzeros.t().contiguous(), bits, out).t();  // [groups, out]
  (void)groups;
  const auto g = t.g_idx.to(at::kLong);
  const auto W = t.scales.to(at::kFloat).index_select(0, g) * (q - z.index_select(0, g)).to(at::kFloat);
  return W.t().contiguous();  // [out, in]
}

namespace {

std::string leaf_of_block(const std::string& lname) {
  // "model.layers.3.self_attn.q_proj" -> "self_attn.q_proj"
  const auto p = lname.find('.', std::string("model.layers.").size());
  return p == std::string::npos ? lname : lname.substr(p + 1);
}

}  // namespace

ExportReport export_gptq(const TrainedRun& run, const std::string& out_dir, const ExportOptions& opt) {
  export_detail::check_output_path(out_dir, opt, "gptq");
  if (!run.model) fail("[gptq export] ", run.checkpoint_dir, ": the run has no model");
  at::NoGradGuard no_grad;
  const LlamaModel& model = *run.model;
  const LlamaConfig& cfg = model.config();
  ExportReport rep = export_detail::start_report(run, "gptq", out_dir);

  // One bits / group_size for the model (quantization_config has one of each).
  int bits = 0;
  int64_t group = 0;  // -1: per-channel
  std::vector<std::string> problems;
  std::vector<std::pair<std::string, MergedWeight>> quantized;
  std::vector<std::string> float_leaves, quant_leaves;
  for (const auto& [lname, lin] : model.named_linears()) {
    if (lin->bias().defined()) problems.push_back(lname + ": has a bias (not supported)");
    auto mw = lin->quantized_weight();
    const std::string leaf = leaf_of_block(lname);
    if (!mw) {
      if (std::find(float_leaves.begin(), float_leaves.end(), leaf) == float_leaves.end())
        float_leaves.push_back(leaf);
      continue;
    }
    if (std::find(quant_leaves.begin(), quant_leaves.end(), leaf) == quant_leaves.end())
      quant_leaves.push_back(leaf);
    const int64_t in = mw->w_int.size(1);
    const int64_t g = mw->grid.group_size_for(in) == in ? -1 : mw->grid.group_size_for(in);
    if (bits == 0) {
      bits = mw->grid.bits;
      group = g;
    }
    if (mw->grid.bits != bits || g != group) {
      problems.push_back(lname + ": " + mw->grid.describe() + " differs from the model's " +
                         std::to_string(bits) + "-bit, group " + std::to_string(group) +
                         " (quantization_config holds one of each)");
      continue;
    }
    quantized.emplace_back(lname, std::move(*mw));
  }
  for (const auto& f : float_leaves)
    if (std::find(quant_leaves.begin(), quant_leaves.end(), f) != quant_leaves.end())
      problems.push_back(f + ": quantized in some blocks and float in others");

  NamedTensors tensors;
  for (const auto& [name, t] : model.named_float_parameters()) tensors.emplace_back(name, t.to(at::kFloat).contiguous());
  double max_w = 0, max_s = 0, max_o = 0;
  for (const auto& [lname, mw] : quantized) {
    try {
      auto t = gptq_layer(mw, lname);
      const auto trained = mw.dequantize().to(at::kFloat);
      max_w = std::max(max_w, (gptq_dequantize(t, bits).to(at::kDouble) - trained.to(at::kDouble)).abs().max().item<double>());
      const auto s = mw.s.clamp_min(min_step()).to(at::kFloat);
      max_s = std::max(max_s, (s.to(at::kHalf).to(at::kDouble) - s.to(at::kDouble)).abs().max().item<double>());
      max_o = std::max(max_o, t.max_offset_error);
      tensors.emplace_back(lname + ".qweight", t.qweight);
      tensors.emplace_back(lname + ".qzeros", t.qzeros);
      tensors.emplace_back(lname + ".scales", t.scales);
      tensors.emplace_back(lname + ".g_idx", t.g_idx);
      ++rep.quantized_layers;
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  if (!problems.empty()) {
    std::ostringstream os;
    os << "[gptq export] " << problems.size() << " layer" << (problems.size() == 1 ? "" : "s")
       << " cannot be written as GPTQ:";
    for (const auto& p : problems) os << "\n  " << p;
    os << "\n(train those modules with a GPTQ-compatible grid, or leave them out of target_modules)";
    fail(os.str());
  }
  if (quantized.empty()) fail("[gptq export] ", run.checkpoint_dir, ": no quantized layer (method ",
                              to_string(run.config.method.method), ")");
  for (const auto& [lname, lin] : model.named_linears())
    if (!lin->quantized_weight()) {
      tensors.emplace_back(lname + ".weight", lin->effective_weight().to(at::kFloat).contiguous());
      ++rep.float_layers;
    }

  nlohmann::json qc = {{"quant_method", "gptq"},    {"bits", bits},
                       {"group_size", group},       {"desc_act", false},
                       {"sym", false},              {"checkpoint_format", "gptq_v2"},
                       {"true_sequential", true},   {"damp_percent", 0.01},
                       {"static_groups", false},    {"lm_head", false},
                       {"quantizer", {"l4q"}}};
  if (!float_leaves.empty()) {
    // transformers/optimum: which modules of a block are quantized; GPTQModel: skip the rest.
    qc["modules_in_block_to_quantize"] = nlohmann::json::array({quant_leaves});
    nlohmann::json dyn = nlohmann::json::object();
    for (const auto& f : float_leaves) {
      std::string re = f;
      for (size_t p = 0; (p = re.find('.', p)) != std::string::npos; p += 2) re.replace(p, 1, "\\.");
      dyn["-:.*\\." + re + "$"] = nlohmann::json::object();
    }
    qc["dynamic"] = dyn;
    rep.notes.push_back(std::to_string(rep.float_layers) + " float layers written as F32 .weight, excluded via "
                        "modules_in_block_to_quantize and dynamic");
  }
  auto config = nlohmann::json::parse(to_hf_config_json(cfg));
  // GPTQ kernels compute in fp16; loaders cast the F32 embedding, norms and float layers.
  config["torch_dtype"] = "float16";
  config["quantization_config"] = qc;

  export_detail::StagedDirectory stage(out_dir);
  write_safetensors_sharded(stage.dir(), tensors, 5'000'000'000ull);
  export_detail::write_run_tokenizer(run, stage.dir());
  write_file_atomic(stage.dir() + "/quantize_config.json", qc.dump(2) + "\n");
  write_file_atomic(stage.dir() + "/config.json", config.dump(2) + "\n");
  stage.commit();

  rep.max_weight_error = max_w;
  rep.max_scale_error = max_s;
  rep.max_offset_error = max_o;
  if (max_o > 0)
    rep.notes.push_back("offsets rounded to integer zero points (max |b - s*round(b/s)| " +
                        export_detail::fmt_g(max_o) + "; train with quant.integer_offset for 0)");
  rep.notes.push_back("steps stored as fp16 scales; embedding, norms and float layers as F32 "
                      "(config torch_dtype float16: loaders cast them)");
  rep.bytes = export_detail::bytes_on_disk(out_dir);
  return rep;
}

}  // namespace l4q
