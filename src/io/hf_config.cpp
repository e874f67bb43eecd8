#include "l4q/io/hf_config.h"

#include <nlohmann/json.hpp>

#include "io/mapped_file.h"
#include "l4q/error.h"

namespace l4q {

using json = nlohmann::json;

namespace {

// Typed field access with the key in every message.
class Fields {
 public:
  Fields(const json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

  // nullptr when absent or null (both mean "use the default" in transformers).
  const json* find(const std::string& key) const {
    const auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }

  int64_t integer(const std::string& key, int64_t fallback) const {
    const auto* v = find(key);
    return v == nullptr ? fallback : as_integer(*v, key);
  }
  double number(const std::string& key, double fallback) const {
    const auto* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_number()) wrong(key, "a number", *v);
    return v->get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    const auto* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) wrong(key, "true or false", *v);
    return v->get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    const auto* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) wrong(key, "a string", *v);
    return v->get<std::string>();
  }
  int64_t as_integer(const json& v, const std::string& key) const {
    if (!v.is_number_integer()) wrong(key, "an integer", v);
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) wrong(key, "an int64", v);
    return v.get<int64_t>();
  }
  [[noreturn]] void wrong(const std::string& key, const char* expected, const json& got) const {
    fail(where_, ": key '", key, "': expected ", expected, ", got ", got.type_name(), " ", got.dump());
  }
  const std::string& where() const { return where_; }

 private:
  const json& obj_;
  std::string where_;
};

void read_rope_scaling(const json& rs, const std::string& key, const Fields& top, LlamaConfig& c) {
  if (!rs.is_object()) top.wrong(key, "null or an object", rs);
  const Fields f(rs, top.where() + ": " + key);
  std::string type = f.string("rope_type", "");
  if (type.empty()) type = f.string("type", "default");
  if (type == "default") return;
  if (type == "linear") {
    c.rope_scaling.type = "linear";
    if (f.find("factor") == nullptr) fail(f.where(), ": key 'factor': required for rope type linear");
    c.rope_scaling.factor = f.number("factor", 1.0);
  } else if (type == "llama3") {
    c.rope_scaling.type = "llama3";
    for (const char* k : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (f.find(k) == nullptr) fail(f.where(), ": key '", k, "': required for rope type llama3");
    c.rope_scaling.factor = f.number("factor", 1.0);
    c.rope_scaling.low_freq_factor = f.number("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = f.number("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings = f.integer("original_max_position_embeddings", 8192);
  } else {
    fail(f.where(), ": rope type '", type, "' is not supported (expected default, linear or llama3)");
  }
}

}  // namespace

LlamaConfig config_from_hf_json(const std::string& json_text, const std::string& where) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(where, ": expected a JSON object, got ", j.type_name());
  const Fields f(j, where);

  const std::string model_type = f.string("model_type", "llama");
  if (model_type != "llama") fail(where, ": key 'model_type': expected \"llama\", got \"", model_type, "\"");
  const std::string act = f.string("hidden_act", "silu");
  if (act != "silu") fail(where, ": key 'hidden_act': expected \"silu\", got \"", act, "\"");
  for (const char* k : {"attention_bias", "mlp_bias"})
    if (f.boolean(k, false)) fail(where, ": key '", k, "': biases are not supported (expected false)");

  LlamaConfig c;
  c.vocab_size = f.integer("vocab_size", 32000);
  c.hidden_size = f.integer("hidden_size", 4096);
  c.intermediate_size = f.integer("intermediate_size", 11008);
  c.num_hidden_layers = f.integer("num_hidden_layers", 32);
  c.num_attention_heads = f.integer("num_attention_heads", 32);
  c.num_key_value_heads = f.integer("num_key_value_heads", c.num_attention_heads);
  c.head_dim = f.integer("head_dim", c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6);
  c.max_position_embeddings = f.integer("max_position_embeddings", 2048);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.bos_token_id = f.integer("bos_token_id", 1);
  if (const auto* eos = f.find("eos_token_id"); eos != nullptr && eos->is_array()) {
    if (eos->empty()) f.wrong("eos_token_id", "an integer or a non-empty list of integers", *eos);
    for (const auto& e : *eos) f.as_integer(e, "eos_token_id");
    c.eos_token_id = f.as_integer(eos->front(), "eos_token_id");
  } else {
    c.eos_token_id = f.integer("eos_token_id", 2);
  }

  c.rope_theta = f.number("rope_theta", 10000.0);
  if (const auto* rs = f.find("rope_scaling")) read_rope_scaling(*rs, "rope_scaling", f, c);
  if (const auto* rp = f.find("rope_parameters")) {  // transformers v5
    if (!rp->is_object()) f.wrong("rope_parameters", "null or an object", *rp);
    c.rope_theta = Fields(*rp, where + ": rope_parameters").number("rope_theta", c.rope_theta);
    read_rope_scaling(*rp, "rope_parameters", f, c);
  }
  c.validate(where);
  return c;
}

LlamaConfig read_hf_config(const std::string& path) {
  const auto f = detail::MappedFile::open(path);
  return config_from_hf_json(std::string(reinterpret_cast<const char*>(f->data()), f->size()), path);
}

std::string to_hf_config_json(const LlamaConfig& c) {
  c.validate("to_hf_config_json");
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == "none") {
    j["rope_scaling"] = nullptr;
  } else if (c.rope_scaling.type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
  } else {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  }
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["initializer_range"] = 0.02;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

}  // namespace l4q
