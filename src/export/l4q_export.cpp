#include "l4q/export/l4q_export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <system_error>

#include "export/export_support.h"
#include "io/packed_model_layout.h"
#include "l4q/error.h"
#include "l4q/infer/packed_weight.h"
#include "l4q/io/atomic_file.h"
#include "l4q/io/hf_config.h"
#include "l4q/io/safetensors.h"
#include "l4q/text/sentencepiece.h"
#include "l4q/text/sentencepiece_model.h"

namespace l4q {

namespace fs = std::filesystem;
using json = nlohmann::json;
namespace lay = packed_layout;

namespace {

// Where the run's tokenizer comes from: the configured file, the model directory's
// tokenizer.model, the loaded SentencePiece model itself (e.g. a GGUF vocabulary), or a
// tokenizer.model / tok512.model beside a model file.
// Writes OUT/tokenizer.model (OUT/tokenizer.json and tokenizer_config.json for a byte-level
// BPE); returns a note when there was none.
std::string write_tokenizer(const TrainedRun& run, const fs::path& dir) {
  if (export_detail::run_bpe_vocab(run)) {  // byte-level BPE: tokenizer.json + its config
    export_detail::write_run_tokenizer(run, dir.string());
    return {};
  }
  const auto dst = (dir / lay::kTokenizerFile).string();
  const auto& c = run.config;
  if (!c.tokenizer.empty() && fs::is_regular_file(c.tokenizer) &&
      fs::path(c.tokenizer).extension() == ".model") {
    copy_file_atomic(c.tokenizer, dst);
    return {};
  }
  if (!c.model.empty() && fs::is_directory(c.model) && fs::is_regular_file(fs::path(c.model) / "tokenizer.model")) {
    copy_file_atomic((fs::path(c.model) / "tokenizer.model").string(), dst);
    return {};
  }
  if (const auto* sp = dynamic_cast<const SentencePieceTokenizer*>(run.tokenizer.get())) {
    write_sentencepiece_model(sp->model(), dst);
    return {};
  }
  if (!c.model.empty() && !fs::is_directory(c.model))
    for (const char* name : {"tokenizer.model", "tok512.model"}) {
      const auto f = fs::path(c.model).parent_path() / name;
      if (fs::is_regular_file(f)) {
        copy_file_atomic(f.string(), dst);
        return {};
      }
    }
  return "no SentencePiece tokenizer.model found for the run; the export has none (pass "
         "--tokenizer when loading it)";
}

at::Tensor as_f32(const at::Tensor& t) { return t.detach().to(at::kCPU).to(at::kFloat).contiguous(); }

uint64_t dir_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

}  // namespace

ExportReport export_l4q(const TrainedRun& run, const std::string& out_dir, const ExportOptions& opt) {
  const std::string where = "export l4q";
  if (!run.model) fail("[", where, "] the run has no model");
  if (out_dir.empty()) fail("[", where, "] output path: empty");
  const fs::path out = fs::absolute(fs::path(out_dir)).lexically_normal();
  const fs::path target = out.filename().empty() ? out.parent_path() : out;
  std::error_code ec;
  if (fs::exists(fs::symlink_status(target, ec)) && !opt.force)
    fail(target.string(), ": exists; pass --force to replace it");
  if (!fs::is_directory(target.parent_path()))
    fail(target.string(), ": parent directory ", target.parent_path().string(), " does not exist");

  ExportReport rep = export_detail::start_report(run, "l4q", target.string());

  at::NoGradGuard no_grad;
  const auto& model = *run.model;
  const auto& cfg = model.config();
  const QuantGrid def = run.config.method.grid;

  NamedTensors tensors;
  json overrides = json::object();
  json not_quantized = json::array();
  // Pack every projection first: an unsupported bit width is refused before any file exists.
  for (const auto& [name, lin] : model.named_linears()) {
    const auto mw = lin->quantized_weight();
    if (!mw) {
      tensors.emplace_back(name + lay::kWeight, as_f32(lin->effective_weight()));
      not_quantized.push_back(name);
      ++rep.float_layers;
    } else {
      const auto pw = pack_weight(*mw, "[" + where + "] layer '" + name + "'");
      // Lossless by construction; checked, since the format promises it.
      const auto ref = mw->dequantize().to(at::kFloat);
      const auto back = pw.dequantize();
      if (!at::equal(back, ref)) {
        const double err = (back - ref).abs().max().item<double>();
        fail("[", where, "] layer '", name, "': the packed weight does not reproduce W_q (max |error| ",
             err, "); this is a bug");
      }
      tensors.emplace_back(name + lay::kQweight, pw.qweight);
      tensors.emplace_back(name + lay::kScales, pw.scales);
      tensors.emplace_back(name + lay::kOffsets, pw.offsets);
      if (pw.bits != def.bits || pw.group_size != def.group_size_for(pw.in))
        overrides[name] = {{"bits", pw.bits}, {"group_size", pw.group_size}};
      ++rep.quantized_layers;
    }
    const auto bias = lin->bias();
    if (bias.defined()) tensors.emplace_back(name + lay::kBias, as_f32(bias));
  }
  for (const auto& [name, t] : model.named_float_parameters()) tensors.emplace_back(name, as_f32(t));

  if (rep.float_layers > 0) {
    rep.notes.push_back(detail::concat(rep.float_layers, " projection(s) have no integer form (method ",
                                       to_string(run.config.method.method),
                                       ") and are stored as float32 <module>.weight"));
  }
  if (!overrides.empty())
    rep.notes.push_back(detail::concat(overrides.size(),
                                       " layer(s) use another grid than the default (quantization_config.overrides)"));

  json q = {{"quant_method", lay::kQuantMethod},
            {"format_version", lay::kFormatVersion},
            {"bits", def.bits},
            {"group_size", def.group_size},
            {"training_method", to_string(run.config.method.method)},
            {"overrides", overrides},
            {"modules_not_quantized", not_quantized}};
  json config = json::parse(to_hf_config_json(cfg));
  config["quantization_config"] = q;

  // Build the directory under a temporary name beside the target, then swap it in.
  const fs::path tmp = target.parent_path() / (".tmp-" + target.filename().string() + "-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) fail(tmp.string(), ": cannot create directory: ", ec.message());
  try {
    write_safetensors((tmp / lay::kWeightsFile).string(), tensors,
                      {{"l4q", "packed"}, {"format_version", std::to_string(lay::kFormatVersion)}});
    const auto note = write_tokenizer(run, tmp);
    if (!note.empty()) rep.notes.push_back(note);
    write_file_atomic((tmp / lay::kConfigFile).string(), config.dump(2) + "\n");
    rep.bytes = dir_bytes(tmp);
    if (fs::exists(fs::symlink_status(target, ec))) {
      const fs::path old = target.parent_path() / (".old-" + target.filename().string() + "-" + std::to_string(::getpid()));
      fs::remove_all(old, ec);
      fs::rename(target, old);
      fs::rename(tmp, target);
      fs::remove_all(old, ec);
    } else {
      fs::rename(tmp, target);
    }
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    fail(target.string(), ": ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return rep;
}

}  // namespace l4q
