#include "l4q/io/packed_model.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "data/read_file.h"
#include "io/packed_model_layout.h"
#include "l4q/error.h"
#include "l4q/infer/packed_linear.h"
#include "l4q/io/hf_config.h"
#include "l4q/io/safetensors.h"
#include "quant/tensor_checks.h"

namespace l4q {

namespace fs = std::filesystem;
using json = nlohmann::json;
namespace lay = packed_layout;
using detail::shape_str;

namespace {

std::string read_text(const fs::path& p) { return data_detail::read_file(p.string()); }

struct LayerGrid {
  int bits = 0;
  int64_t group_size = 0;  // -1: per-channel
};

// quantization_config, checked: what every layer is.
struct QuantConfig {
  LayerGrid def;
  std::map<std::string, LayerGrid> overrides;
  std::set<std::string> not_quantized;
};

int64_t get_int(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) fail(where, ": key '", key, "' missing");
  const auto& v = j.at(key);
  if (!v.is_number_integer()) fail(where, ": key '", key, "': expected an integer, got ", v.dump());
  return v.get<int64_t>();
}

int get_bits(const json& j, const std::string& where) {
  const int64_t b = get_int(j, "bits", where);
  if (!(b == 2 || b == 3 || b == 4 || b == 8))
    fail(where, ": bits: the l4q packed format stores 2, 3, 4 or 8 bits, got ", b);
  return static_cast<int>(b);
}

void check_grid(const LayerGrid& g, const std::string& where) {
  if (!packed_bits_supported(g.bits))
    fail(where, ": bits: the l4q packed format stores 2, 3, 4 or 8 bits, got ", g.bits);
  if (g.group_size != -1 && g.group_size < 1)
    fail(where, ": group_size: expected a positive divisor of in_features or -1, got ", g.group_size);
}

QuantConfig parse_quant_config(const json& q, const std::set<std::string>& modules, const std::string& where) {
  if (!q.is_object()) fail(where, ": expected an object, got ", q.dump());
  if (!q.contains("quant_method") || !q.at("quant_method").is_string() ||
      q.at("quant_method").get<std::string>() != lay::kQuantMethod)
    fail(where, ": quant_method: expected \"", lay::kQuantMethod, "\", got ",
         q.contains("quant_method") ? q.at("quant_method").dump() : std::string("nothing"));
  const auto version = get_int(q, "format_version", where);
  if (version != lay::kFormatVersion)
    fail(where, ": format_version: this build reads version ", lay::kFormatVersion, ", got ", version);
  QuantConfig c;
  c.def.bits = get_bits(q, where);
  c.def.group_size = get_int(q, "group_size", where);
  check_grid(c.def, where);
  if (q.contains("overrides")) {
    const auto& o = q.at("overrides");
    if (!o.is_object()) fail(where, ": overrides: expected an object, got ", o.dump());
    for (const auto& [name, v] : o.items()) {
      const auto w = where + ": overrides['" + name + "']";
      if (!modules.count(name)) fail(w, ": not a projection of this model");
      if (!v.is_object()) fail(w, ": expected an object, got ", v.dump());
      LayerGrid g;
      g.bits = v.contains("bits") ? get_bits(v, w) : c.def.bits;
      g.group_size = v.contains("group_size") ? get_int(v, "group_size", w) : c.def.group_size;
      check_grid(g, w);
      c.overrides[name] = g;
    }
  }
  if (q.contains("modules_not_quantized")) {
    const auto& a = q.at("modules_not_quantized");
    if (!a.is_array()) fail(where, ": modules_not_quantized: expected an array, got ", a.dump());
    for (const auto& v : a) {
      if (!v.is_string()) fail(where, ": modules_not_quantized: expected strings, got ", v.dump());
      const auto name = v.get<std::string>();
      if (!modules.count(name)) fail(where, ": modules_not_quantized: '", name, "' is not a projection of this model");
      c.not_quantized.insert(name);
    }
  }
  return c;
}

// Projection names and shapes [out, in] of a model with `c`.
std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> projections(const LlamaConfig& c) {
  const int64_t H = c.hidden_size, q_out = c.num_attention_heads * c.head_dim,
                kv_out = c.num_key_value_heads * c.head_dim, I = c.intermediate_size;
  const std::vector<std::pair<int64_t, int64_t>> shape = {{q_out, H}, {kv_out, H}, {kv_out, H}, {H, q_out},
                                                          {I, H},     {I, H},      {H, I}};
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> r;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (size_t p = 0; p < shape.size(); ++p)
      r.emplace_back("model.layers." + std::to_string(l) + "." + llama_projection_names()[p], shape[p]);
  return r;
}

}  // namespace

bool is_packed_model(const std::string& path) {
  try {
    const fs::path cfg = fs::path(path) / lay::kConfigFile;
    if (!fs::is_regular_file(cfg)) return false;
    const auto j = json::parse(read_text(cfg));
    return j.is_object() && j.contains("quantization_config") && j.at("quantization_config").is_object() &&
           j.at("quantization_config").value("quant_method", std::string()) == lay::kQuantMethod;
  } catch (...) {
    return false;
  }
}

PackedModel load_packed_model(const std::string& dir) {
  const fs::path d(dir);
  const auto cfg_path = (d / lay::kConfigFile).string();
  if (!fs::is_directory(d)) fail(dir, ": not a directory (expected an l4q export)");
  const auto text = read_text(cfg_path);
  PackedModel pm;
  pm.config = config_from_hf_json(text, cfg_path);
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    fail(cfg_path, ": malformed JSON: ", e.what());
  }
  if (!j.contains("quantization_config"))
    fail(cfg_path, ": key 'quantization_config' missing (not an l4q export)");
  const auto st_path = (d / lay::kWeightsFile).string();
  const auto file = SafetensorsFile::open(st_path);
  // Each block has at least 2 norms and 7 projections of 1-3 tensors: a layer count the file
  // cannot hold is refused before anything is sized by it.
  if (pm.config.num_hidden_layers > static_cast<int64_t>(file.tensors().size()))
    fail(cfg_path, ": num_hidden_layers ", pm.config.num_hidden_layers, " but ", st_path, " holds only ",
         file.tensors().size(), " tensors");
  const auto proj = projections(pm.config);
  std::set<std::string> modules;
  for (const auto& p : proj) modules.insert(p.first);
  const auto qc = parse_quant_config(j.at("quantization_config"), modules, cfg_path + ": quantization_config");
  pm.quantization_json = j.at("quantization_config").dump();

  std::set<std::string> used;
  auto get = [&](const std::string& name, SafetensorsDtype dt, const std::vector<int64_t>& shape,
                 bool required = true) -> at::Tensor {
    const auto* info = file.find(name);
    if (!info) {
      if (!required) return {};
      fail(st_path, ": missing tensor '", name, "' (expected ", to_string(dt), " ", shape_str(shape), ")");
    }
    if (info->dtype != dt)
      fail(st_path, ": tensor '", name, "' has wrong dtype; expected ", to_string(dt), ", got ", to_string(info->dtype));
    if (info->shape != shape)
      fail(st_path, ": tensor '", name, "' has wrong shape; expected ", shape_str(shape), ", got ",
           shape_str(info->shape));
    used.insert(name);
    return file.tensor(name);
  };

  const auto& c = pm.config;
  std::map<std::string, at::Tensor> weights;
  const std::vector<int64_t> h = {c.hidden_size};
  weights["model.embed_tokens.weight"] = get("model.embed_tokens.weight", SafetensorsDtype::F32, {c.vocab_size, c.hidden_size});
  weights["model.norm.weight"] = get("model.norm.weight", SafetensorsDtype::F32, h);
  if (!c.tie_word_embeddings || file.find("lm_head.weight"))
    weights["lm_head.weight"] = get("lm_head.weight", SafetensorsDtype::F32, {c.vocab_size, c.hidden_size});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    weights[p + "input_layernorm.weight"] = get(p + "input_layernorm.weight", SafetensorsDtype::F32, h);
    weights[p + "post_attention_layernorm.weight"] = get(p + "post_attention_layernorm.weight", SafetensorsDtype::F32, h);
  }

  std::map<std::string, PackedWeight> packed;
  for (const auto& [name, shape] : proj) {
    const auto [out, in] = shape;
    const auto bias = get(name + lay::kBias, SafetensorsDtype::F32, {out}, false);
    if (bias.defined()) weights[name + lay::kBias] = bias;
    if (qc.not_quantized.count(name)) {
      weights[name + lay::kWeight] = get(name + lay::kWeight, SafetensorsDtype::F32, {out, in});
      continue;
    }
    LayerGrid g = qc.def;
    if (const auto it = qc.overrides.find(name); it != qc.overrides.end()) g = it->second;
    const int64_t gs = g.group_size == -1 ? in : g.group_size;
    const auto where = cfg_path + ": layer '" + name + "'";
    if (in % gs != 0)
      fail(where, ": group_size ", gs, " does not divide in_features ", in, " (", g.bits, "-bit)");
    const int64_t G = in / gs;
    auto qw = get(name + lay::kQweight, SafetensorsDtype::U8, {out, packed_row_bytes(g.bits, in)});
    auto sc = get(name + lay::kScales, SafetensorsDtype::F32, {out, G});
    auto of = get(name + lay::kOffsets, SafetensorsDtype::F32, {out, G});
    packed.emplace(name, make_packed_weight(g.bits, out, in, gs, qw, sc, of, st_path + ": layer '" + name + "'"));
    // A zero-stride placeholder: LlamaModel checks the shape; no float matrix is allocated.
    weights[name + lay::kWeight] = at::zeros({1}, at::kFloat).expand({out, in});
  }
  for (const auto& info : file.tensors())
    if (!used.count(info.name))
      fail(st_path, ": unexpected tensor '", info.name, "' ", to_string(info.dtype), " ", shape_str(info.shape),
           " (not part of this model's l4q export)");

  const LinearFactory factory = [&](const std::string& name, const at::Tensor& w,
                                    const at::Tensor& b) -> std::unique_ptr<Linear> {
    const auto it = packed.find(name);
    if (it == packed.end()) return std::make_unique<FloatLinear>(w, b);
    return std::make_unique<PackedLinear>(it->second, b);
  };
  pm.model = std::make_unique<LlamaModel>(pm.config, weights, factory);
  pm.model->set_training(false);
  for (const char* name : {lay::kTokenizerFile, lay::kBpeTokenizerFile})
    if (!pm.tokenizer && fs::is_regular_file(d / name)) pm.tokenizer = load_tokenizer((d / name).string());
  return pm;
}

}  // namespace l4q
