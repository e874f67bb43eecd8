#include "l4q/train/config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "data/read_file.h"
#include "l4q/error.h"

namespace l4q {

using json = nlohmann::json;

namespace {

// Reads typed fields out of one JSON object, remembering which keys it consumed so that
// anything left over can be reported as unknown.
class Fields {
 public:
  Fields(const json& obj, std::string path, std::string where)
      : obj_(obj), path_(std::move(path)), where_(std::move(where)) {
    if (!obj_.is_object())
      fail(where_, ": '", path_.empty() ? "(top level)" : path_, "': expected an object, got ",
           obj_.type_name());
  }

  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }

  template <typename T>
  void get(const std::string& k, T& dst) {
    seen_.insert(k);
    auto it = obj_.find(k);
    if (it == obj_.end()) return;
    read(*it, k, dst);
  }

  Fields sub(const std::string& k) {
    seen_.insert(k);
    static const json empty = json::object();
    auto it = obj_.find(k);
    return Fields(it == obj_.end() ? empty : *it, key(k), where_);
  }

  void reject_unknown() const {
    // Keys starting with '_' are documentation ("_comment", "_launch") at any level.
    for (auto it = obj_.begin(); it != obj_.end(); ++it)
      if (!seen_.count(it.key()) && it.key().rfind('_', 0) != 0)
        fail(where_, ": unknown key '", key(it.key()), "'");
  }

 private:
  [[noreturn]] void wrong(const json& v, const std::string& k, const char* expected) const {
    fail(where_, ": key '", key(k), "': expected ", expected, ", got ", v.type_name(),
         " (", v.dump(), ")");
  }
  void read(const json& v, const std::string& k, std::string& dst) const {
    if (!v.is_string()) wrong(v, k, "a string");
    dst = v.get<std::string>();
  }
  void read(const json& v, const std::string& k, bool& dst) const {
    if (!v.is_boolean()) wrong(v, k, "true or false");
    dst = v.get<bool>();
  }
  void read(const json& v, const std::string& k, double& dst) const {
    if (!v.is_number()) wrong(v, k, "a number");
    dst = v.get<double>();
  }
  void read(const json& v, const std::string& k, int64_t& dst) const {
    if (!v.is_number_integer()) wrong(v, k, "an integer");
    dst = v.get<int64_t>();
  }
  void read(const json& v, const std::string& k, int& dst) const {
    int64_t x = 0;
    read(v, k, x);
    dst = static_cast<int>(x);
  }
  void read(const json& v, const std::string& k, uint64_t& dst) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0) wrong(v, k, "a non-negative integer");
    dst = v.get<uint64_t>();
  }
  void read(const json& v, const std::string& k, std::vector<std::string>& dst) const {
    if (!v.is_array()) wrong(v, k, "an array of strings");
    dst.clear();
    for (const auto& e : v) {
      if (!e.is_string()) wrong(v, k, "an array of strings");
      dst.push_back(e.get<std::string>());
    }
  }

  const json& obj_;
  std::string path_, where_;
  std::set<std::string> seen_;
};

json parse_json_text(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // nlohmann reports a byte offset: turn it into line and column.
    const auto loc = data_detail::locate(text, std::min<size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size()));
    fail(where, ": malformed JSON at line ", loc.line, ", column ", loc.column, ": ", e.what());
  }
}

void check(bool ok, const std::string& where, const std::string& key, const std::string& what,
           const std::string& got) {
  if (!ok) fail(where, ": key '", key, "': expected ", what, ", got ", got);
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

ScheduleKind parse_schedule(const std::string& s, const std::string& where) {
  if (s == "cosine") return ScheduleKind::cosine;
  if (s == "linear") return ScheduleKind::linear;
  if (s == "constant") return ScheduleKind::constant;
  fail(where, ": key 'optim.schedule': expected cosine, linear or constant, got '", s, "'");
}

const char* to_string(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::linear: return "linear";
    case ScheduleKind::constant: return "constant";
  }
  return "?";
}

TrainConfig parse_train_config(const std::string& json_text, const std::string& where) {
  const json doc = parse_json_text(json_text, where);
  TrainConfig c;
  Fields top(doc, "", where);
  top.get("model", c.model);
  top.get("tokenizer", c.tokenizer);
  std::string method = to_string(c.method.method);
  top.get("method", method);
  c.method.method = parse_linear_method(method);
  top.get("target_modules", c.method.target_modules);
  {
    auto f = top.sub("lora");
    f.get("rank", c.method.lora.rank);
    f.get("alpha", c.method.lora.alpha);
    f.get("dropout", c.method.lora.dropout);
    f.reject_unknown();
  }
  {
    auto f = top.sub("quant");
    f.get("bits", c.method.grid.bits);
    f.get("group_size", c.method.grid.group_size);
    std::string init = to_string(c.method.init), ptq = to_string(c.method.ptq_init);
    f.get("init", init);
    f.get("ptq_init", ptq);
    c.method.init = parse_lsq_init(init);
    c.method.ptq_init = parse_lsq_init(ptq);
    f.get("grad_scale", c.method.grad_scale);
    f.get("row_chunk", c.method.row_chunk);
    f.get("learn_scales", c.method.qat_learn_scales);
    f.get("integer_offset", c.method.integer_offset);
    f.get("frozen_dtype", c.method.frozen_dtype);
    std::string fallback = c.method.per_channel_if_indivisible ? "per-channel" : "error";
    f.get("indivisible", fallback);
    if (fallback != "error" && fallback != "per-channel")
      fail(where, ": key 'quant.indivisible': expected \"error\" or \"per-channel\", got \"",
           fallback, "\"");
    c.method.per_channel_if_indivisible = fallback == "per-channel";
    f.get("warmup_steps", c.quant_warmup_steps);
    f.reject_unknown();
  }
  {
    auto f = top.sub("data");
    std::string format = to_string(c.data.format), loss_on = to_string(c.data.loss_on);
    f.get("format", format);
    c.data.format = parse_data_format(format, where);
    f.get("train", c.data.train_path);
    f.get("validation", c.data.val_path);
    f.get("val_fraction", c.data.val_fraction);
    f.get("max_length", c.data.max_length);
    f.get("max_records", c.data.max_records);
    f.get("loss_on", loss_on);
    c.data.loss_on = parse_loss_on(loss_on, where);
    f.get("prompt_template", c.data.prompt_template);
    f.get("stride", c.data.stride);
    f.reject_unknown();
  }
  {
    auto f = top.sub("optim");
    auto& o = c.optim;
    f.get("lr", o.lr);
    f.get("weight_decay", o.weight_decay);
    f.get("quant_lr", o.quant_lr);
    f.get("beta1", o.beta1);
    f.get("beta2", o.beta2);
    f.get("eps", o.eps);
    f.get("max_grad_norm", o.max_grad_norm);
    std::string sched = to_string(o.schedule);
    f.get("schedule", sched);
    o.schedule = parse_schedule(sched, where);
    f.get("warmup_steps", o.warmup_steps);
    f.get("warmup_ratio", o.warmup_ratio);
    f.get("min_lr_ratio", o.min_lr_ratio);
    f.reject_unknown();
  }
  top.get("batch_size", c.batch_size);
  top.get("grad_accum", c.grad_accum);
  top.get("max_steps", c.max_steps);
  top.get("eval_every", c.eval_every);
  top.get("save_every", c.save_every);
  top.get("log_every", c.log_every);
  top.get("eval_batches", c.eval_batches);
  top.get("seed", c.seed);
  top.get("threads", c.threads);
  top.get("activation_checkpointing", c.activation_checkpointing);
  top.get("output_dir", c.output_dir);
  top.reject_unknown();
  c.method.seed = c.seed;
  c.data.seed = c.seed;
  try {
    c.validate();
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  return c;
}

void TrainConfig::validate() const {
  const std::string w = "config";
  check(!model.empty(), w, "model", "a checkpoint path", "\"\"");
  method.validate("config");
  check(quant_warmup_steps >= 0, w, "quant.warmup_steps", ">= 0", std::to_string(quant_warmup_steps));
  check(quant_warmup_steps == 0 || method.method == LinearMethod::L4Q, w, "quant.warmup_steps",
        "0 unless method is l4q", std::to_string(quant_warmup_steps));
  data.validate("config.data");
  check(batch_size >= 1, w, "batch_size", ">= 1", std::to_string(batch_size));
  check(grad_accum >= 1, w, "grad_accum", ">= 1", std::to_string(grad_accum));
  check(max_steps >= 0, w, "max_steps", ">= 0", std::to_string(max_steps));
  check(eval_every >= 0, w, "eval_every", ">= 0", std::to_string(eval_every));
  check(save_every >= 0, w, "save_every", ">= 0", std::to_string(save_every));
  check(log_every >= 1, w, "log_every", ">= 1", std::to_string(log_every));
  check(eval_batches >= 0, w, "eval_batches", ">= 0", std::to_string(eval_batches));
  check(!output_dir.empty(), w, "output_dir", "a directory", "\"\"");
  const auto& o = optim;
  check(std::isfinite(o.lr) && o.lr >= 0, w, "optim.lr", "a finite value >= 0", num(o.lr));
  check(std::isfinite(o.quant_lr), w, "optim.quant_lr", "a finite value", num(o.quant_lr));
  check(o.weight_decay >= 0, w, "optim.weight_decay", ">= 0", num(o.weight_decay));
  check(o.beta1 >= 0 && o.beta1 < 1, w, "optim.beta1", "0 <= beta1 < 1", num(o.beta1));
  check(o.beta2 >= 0 && o.beta2 < 1, w, "optim.beta2", "0 <= beta2 < 1", num(o.beta2));
  check(o.eps > 0, w, "optim.eps", "> 0", num(o.eps));
  check(o.warmup_ratio >= 0 && o.warmup_ratio <= 1, w, "optim.warmup_ratio", "0..1",
        num(o.warmup_ratio));
  check(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, w, "optim.min_lr_ratio", "0..1",
        num(o.min_lr_ratio));
}

TrainConfig load_train_config(const std::string& path) {
  return parse_train_config(data_detail::read_file(path), path);
}

std::string apply_overrides(const std::string& json_text, const std::vector<std::string>& overrides,
                            const std::string& where) {
  json doc = parse_json_text(json_text.empty() ? "{}" : json_text, where);
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      fail("override '", o, "': expected key.path=value");
    const std::string path = o.substr(0, eq), value = o.substr(eq + 1);
    json v;
    try {
      v = json::parse(value);
    } catch (const json::parse_error&) {
      v = value;  // a bare word is a string
    }
    json* node = &doc;
    std::stringstream ps(path);
    std::string part;
    std::vector<std::string> parts;
    while (std::getline(ps, part, '.')) parts.push_back(part);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (!node->is_object()) fail("override '", o, "': '", parts[i], "' is not an object");
      node = &(*node)[parts[i]];
      if (node->is_null()) *node = json::object();
    }
    if (!node->is_object()) fail("override '", o, "': parent of '", parts.back(), "' is not an object");
    (*node)[parts.back()] = v;
  }
  return doc.dump(2);
}

std::string to_json(const TrainConfig& c) {
  json j;
  j["model"] = c.model;
  j["tokenizer"] = c.tokenizer;
  j["method"] = to_string(c.method.method);
  j["target_modules"] = c.method.target_modules;
  j["lora"] = {{"rank", c.method.lora.rank}, {"alpha", c.method.lora.alpha},
               {"dropout", c.method.lora.dropout}};
  j["quant"] = {{"bits", c.method.grid.bits},
                {"group_size", c.method.grid.group_size},
                {"init", to_string(c.method.init)},
                {"ptq_init", to_string(c.method.ptq_init)},
                {"grad_scale", c.method.grad_scale},
                {"row_chunk", c.method.row_chunk},
                {"learn_scales", c.method.qat_learn_scales},
                {"integer_offset", c.method.integer_offset},
                {"frozen_dtype", c.method.frozen_dtype},
                {"indivisible", c.method.per_channel_if_indivisible ? "per-channel" : "error"},
                {"warmup_steps", c.quant_warmup_steps}};
  j["data"] = {{"format", to_string(c.data.format)},
               {"train", c.data.train_path},
               {"validation", c.data.val_path},
               {"val_fraction", c.data.val_fraction},
               {"max_length", c.data.max_length},
               {"max_records", c.data.max_records},
               {"loss_on", to_string(c.data.loss_on)},
               {"prompt_template", c.data.prompt_template},
               {"stride", c.data.stride}};
  const auto& o = c.optim;
  j["optim"] = {{"lr", o.lr},
                {"weight_decay", o.weight_decay},
                {"quant_lr", o.quant_lr},
                {"beta1", o.beta1},
                {"beta2", o.beta2},
                {"eps", o.eps},
                {"max_grad_norm", o.max_grad_norm},
                {"schedule", to_string(o.schedule)},
                {"warmup_steps", o.warmup_steps},
                {"warmup_ratio", o.warmup_ratio},
                {"min_lr_ratio", o.min_lr_ratio}};
  j["batch_size"] = c.batch_size;
  j["grad_accum"] = c.grad_accum;
  j["max_steps"] = c.max_steps;
  j["eval_every"] = c.eval_every;
  j["save_every"] = c.save_every;
  j["log_every"] = c.log_every;
  j["eval_batches"] = c.eval_batches;
  j["seed"] = c.seed;
  j["threads"] = c.threads;
  j["activation_checkpointing"] = c.activation_checkpointing;
  j["output_dir"] = c.output_dir;
  return j.dump(2);
}

}  // namespace l4q
