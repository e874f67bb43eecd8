#include "train/run_state.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "data/read_file.h"
#include "l4q/error.h"
#include "l4q/io/atomic_file.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/io/safetensors.h"
#include "l4q/nn/methods.h"
#include "l4q/train/run.h"
#include "l4q/train/trainer.h"

namespace l4q {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string read_text(const fs::path& p) { return data_detail::read_file(p.string()); }

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace

std::string find_checkpoint(const std::string& dir) {
  const fs::path p(dir);
  if (fs::exists(p / "state.json")) return p.string();
  const fs::path ck = p / "checkpoints";
  std::string best;
  if (fs::is_directory(ck))
    for (const auto& e : fs::directory_iterator(ck)) {
      const auto name = e.path().filename().string();
      if (e.is_directory() && name.rfind("step-", 0) == 0 && fs::exists(e.path() / "state.json") &&
          name > best)
        best = name;
    }
  if (best.empty())
    fail(dir, ": no finished checkpoint (expected DIR/state.json or DIR/checkpoints/step-N/state.json)");
  return (ck / best).string();
}

bool is_trained_run(const std::string& path) {
  const fs::path p(path);
  return fs::exists(p / "state.json") || fs::is_directory(p / "checkpoints");
}

RunState read_run_state(const std::string& dir) {
  const fs::path p(dir);
  RunState st;
  st.config = parse_train_config(read_text(p / "config.json"), (p / "config.json").string());
  const auto where = (p / "state.json").string();
  json j;
  try {
    j = json::parse(read_text(p / "state.json"));
    st.step = j.at("step").get<int64_t>();
    st.loader.epoch = j.at("loader").at("epoch").get<int64_t>();
    st.loader.index = j.at("loader").at("index").get<int64_t>();
    st.quant_enabled = j.at("quant_enabled").get<bool>();
    st.data_fingerprint = std::stoull(j.at("data_fingerprint").get<std::string>());
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(where, ": malformed checkpoint state: ", e.what());
  }
  return st;
}

std::string save_checkpoint(const std::string& output_dir, const RunState& st,
                            const AdamW& opt) {
  const fs::path ck = fs::path(output_dir) / "checkpoints";
  fs::create_directories(ck);
  const fs::path final_dir = ck / step_dir_name(st.step);
  const fs::path tmp = ck / (".tmp-" + step_dir_name(st.step));
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  NamedTensors tensors;
  for (const auto& g : opt.groups())
    for (size_t i = 0; i < g.params.size(); ++i)
      tensors.emplace_back("param/" + g.names[i], g.params[i].detach());
  for (const auto& [name, t] : opt.state()) tensors.emplace_back("optim/" + name, t);
  tensors.emplace_back("rng/cpu", at::detail::getDefaultCPUGenerator().get_state());
  write_safetensors((tmp / "trainable.safetensors").string(), tensors,
                    {{"l4q", "checkpoint"}, {"step", std::to_string(st.step)}});
  json j = {{"step", st.step},
            {"loader", {{"epoch", st.loader.epoch}, {"index", st.loader.index}}},
            {"quant_enabled", st.quant_enabled},
            {"data_fingerprint", std::to_string(st.data_fingerprint)},
            {"optimizer_steps", opt.steps()}};
  write_file_atomic((tmp / "config.json").string(), to_json(st.config) + "\n");
  write_file_atomic((tmp / "state.json").string(), j.dump(2) + "\n");
  // Swap into place: a reader sees either the old complete directory or the new one.
  if (fs::exists(final_dir)) {
    const fs::path old = ck / (".old-" + step_dir_name(st.step));
    fs::remove_all(old);
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old);
  } else {
    fs::rename(tmp, final_dir);
  }
  return final_dir.string();
}

void load_checkpoint_tensors(const std::string& dir, AdamW& opt, int64_t steps) {
  const auto path = (fs::path(dir) / "trainable.safetensors").string();
  const auto f = SafetensorsFile::open(path);
  at::NoGradGuard ng;
  for (const auto& g : opt.groups())
    for (size_t i = 0; i < g.params.size(); ++i) {
      const auto key = "param/" + g.names[i];
      if (!f.find(key)) fail(path, ": tensor '", key, "' missing (checkpoint of another method?)");
      const auto t = f.tensor(key);
      if (!t.sizes().equals(g.params[i].sizes()))
        fail(path, ": tensor '", key, "' has wrong shape");
      const_cast<at::Tensor&>(g.params[i]).copy_(t);
    }
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& info : f.tensors())
    if (info.name.rfind("optim/", 0) == 0) state.emplace_back(info.name.substr(6), f.tensor(info.name));
  opt.load_state(state, steps);
  if (!f.find("rng/cpu")) fail(path, ": tensor 'rng/cpu' missing");
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(f.tensor("rng/cpu").clone());
}

void load_checkpoint_parameters(const std::string& dir, LlamaModel& model) {
  const auto path = (fs::path(dir) / "trainable.safetensors").string();
  const auto f = SafetensorsFile::open(path);
  at::NoGradGuard ng;
  for (auto& [lname, lin] : model.named_linears())
    for (auto& p : lin->parameters()) {
      const auto key = "param/" + lname + "." + p.name;
      if (!f.find(key)) fail(path, ": tensor '", key, "' missing");
      const auto t = f.tensor(key);
      if (!t.sizes().equals(p.tensor.sizes())) fail(path, ": tensor '", key, "' has wrong shape");
      p.tensor.copy_(t);
    }
}

BuiltModel build_run_model(const TrainConfig& c) {
  BuiltModel b;
  auto ckpt = load_checkpoint(c.model);
  b.tokenizer = load_model_tokenizer(c.model, c.tokenizer);
  if (b.tokenizer->vocab_size() > ckpt.config.vocab_size)
    fail(c.model, ": tokenizer has ", b.tokenizer->vocab_size(), " tokens but the model's vocab_size is ",
         ckpt.config.vocab_size);
  b.model = std::make_unique<LlamaModel>(ckpt.config, ckpt.tensors, make_linear_factory(c.method));
  return b;
}

TrainedRun load_trained_run(const std::string& path) {
  TrainedRun r;
  r.checkpoint_dir = find_checkpoint(path);
  const auto st = read_run_state(r.checkpoint_dir);
  r.config = st.config;
  r.step = st.step;
  auto b = build_run_model(r.config);
  for (auto& [name, lin] : b.model->named_linears())
    if (auto* l = dynamic_cast<L4QLinear*>(lin)) {
      if (st.quant_enabled) l->enable_quantization(r.config.method.init);
      else l->disable_quantization();
    }
  load_checkpoint_parameters(r.checkpoint_dir, *b.model);
  b.model->set_training(false);
  r.tokenizer = std::move(b.tokenizer);
  r.model = std::move(b.model);
  return r;
}

}  // namespace l4q
