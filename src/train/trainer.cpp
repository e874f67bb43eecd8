#include "l4q/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "l4q/data/loader.h"
#include "l4q/error.h"
#include "l4q/io/atomic_file.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/io/safetensors.h"
#include "l4q/memory.h"
#include "l4q/model/llama.h"
#include "l4q/nn/methods.h"
#include "l4q/runtime.h"
#include "l4q/train/adamw.h"
#include "l4q/train/loss.h"
#include "l4q/train/run.h"
#include "l4q/train/progress.h"
#include "quant/codes_matmul.h"
#include "train/run_state.h"
#include "l4q/train/schedule.h"

namespace l4q {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

// Installs the SIGINT handler for the duration of training, restoring the previous one.
class SigintGuard {
 public:
  SigintGuard() {
    g_interrupted = false;
    prev_ = std::signal(SIGINT, on_sigint);
  }
  ~SigintGuard() { std::signal(SIGINT, prev_); }

 private:
  void (*prev_)(int);
};

std::string fmt(double v, const char* f = "%.4g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check_output_dir(const TrainConfig& c, const TrainerOptions& o, bool resuming_here) {
  const fs::path out(c.output_dir);
  if (!fs::exists(out)) return;
  if (!fs::is_directory(out)) fail("output_dir '", c.output_dir, "' exists and is not a directory");
  const bool has_run = fs::exists(out / "config.json") || fs::exists(out / "checkpoints");
  if (!has_run || resuming_here) return;
  if (!o.force)
    fail("output_dir '", c.output_dir, "' holds a run already: use --resume ", c.output_dir,
         " to continue it or --force to replace it");
  fs::remove_all(out / "checkpoints");
  fs::remove(out / "metrics.jsonl");
  fs::remove(out / "summary.json");
  fs::remove(out / "config.json");
}

// The fields a resumed run must share with the checkpoint it continues.
void check_resume_compatible(const TrainConfig& now, const TrainConfig& saved, const std::string& ckpt) {
  auto mismatch = [&](const char* key, const std::string& a, const std::string& b) {
    if (a != b)
      fail("--resume ", ckpt, ": checkpoint was trained with ", key, " = ", b,
           ", this run has ", key, " = ", a, " (resume with the same model, method and data)");
  };
  mismatch("model", now.model, saved.model);
  mismatch("method", to_string(now.method.method), to_string(saved.method.method));
  mismatch("quant.bits", std::to_string(now.method.grid.bits), std::to_string(saved.method.grid.bits));
  mismatch("quant.group_size", std::to_string(now.method.grid.group_size),
           std::to_string(saved.method.grid.group_size));
  mismatch("lora.rank", std::to_string(now.method.lora.rank), std::to_string(saved.method.lora.rank));
  mismatch("data.train", now.data.train_path, saved.data.train_path);
  mismatch("seed", std::to_string(now.seed), std::to_string(saved.seed));
}

std::vector<L4QLinear*> l4q_layers(LlamaModel& m) {
  std::vector<L4QLinear*> out;
  for (auto& [name, lin] : m.named_linears())
    if (auto* l = dynamic_cast<L4QLinear*>(lin)) out.push_back(l);
  return out;
}

}  // namespace

TrainSummary train(const TrainConfig& config, const TrainerOptions& options) {
  // ---- validate --------------------------------------------------------------------------
  config.validate();
  TrainConfig cfg = config;
  RunState resume_state;
  std::string resume_dir;
  if (!options.resume.empty()) {
    resume_dir = find_checkpoint(options.resume);
    resume_state = read_run_state(resume_dir);
    check_resume_compatible(cfg, resume_state.config, resume_dir);
    if (resume_state.step >= cfg.max_steps)
      fail("--resume ", resume_dir, ": checkpoint is at step ", resume_state.step,
           ", max_steps is ", cfg.max_steps, ": nothing left to train");
  }
  const bool resuming_here =
      !resume_dir.empty() &&
      fs::weakly_canonical(fs::path(resume_dir).parent_path().parent_path()) ==
          fs::weakly_canonical(fs::path(cfg.output_dir));
  check_output_dir(cfg, options, resuming_here);

  // ---- set up ----------------------------------------------------------------------------
  MemoryMeter meter;
  const double t_start = now_seconds();
  const int threads = set_num_threads(cfg.threads);
  at::manual_seed(cfg.seed);

  // The model first (it fixes the vocabulary the data is tokenised for), with the method's
  // layers; LoRA A is seeded per layer from (seed, name).
  auto built = build_run_model(cfg);
  LlamaModel& model = *built.model;
  model.set_activation_checkpointing(cfg.activation_checkpointing);
  const Tokenizer& tok = *built.tokenizer;

  Dataset data = load_dataset(cfg.data, tok);
  const uint64_t fingerprint_train = fingerprint(data.train);
  if (!resume_dir.empty() && resume_state.data_fingerprint != fingerprint_train)
    fail("--resume ", resume_dir, ": the training data differs from the checkpoint's (",
         "fingerprint ", resume_state.data_fingerprint, " vs ", fingerprint_train, ")");
  LoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.seed = cfg.seed;
  lo.pad_id = tok.eos_id() >= 0 ? tok.eos_id() : 0;
  DataLoader loader(std::move(data.train), lo, "train data");
  std::unique_ptr<DataLoader> val_loader;
  if (!data.val.empty()) {
    LoaderOptions vo = lo;
    vo.shuffle = false;
    val_loader = std::make_unique<DataLoader>(std::move(data.val), vo, "validation data");
  }

  // Optimizer groups by role: adapters decay, quantizer parameters never do (and keep fp32).
  std::map<ParamRole, AdamWGroup> by_role;
  for (auto& [lname, lin] : model.named_linears())
    for (auto& p : lin->parameters()) {
      auto& g = by_role[p.role];
      g.names.push_back(lname + "." + p.name);
      g.params.push_back(p.tensor);
    }
  std::vector<AdamWGroup> groups;
  const double quant_lr = cfg.optim.quant_lr > 0 ? cfg.optim.quant_lr : cfg.optim.lr;
  for (auto& [role, g] : by_role) {
    g.name = role == ParamRole::Adapter ? "adapter" : role == ParamRole::Quantizer ? "quantizer" : "weight";
    g.lr = role == ParamRole::Quantizer ? quant_lr : cfg.optim.lr;
    g.weight_decay = role == ParamRole::Quantizer ? 0.0 : cfg.optim.weight_decay;
    groups.push_back(std::move(g));
  }
  AdamW opt(std::move(groups), cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps);
  const bool has_params = !opt.groups().empty();
  const LrSchedule schedule(cfg.optim, cfg.max_steps);

  auto quant_layers = l4q_layers(model);
  int64_t step = 0;
  bool quant_on = true;
  if (!resume_dir.empty()) {
    quant_on = resume_state.quant_enabled;
    if (quant_on) {
      for (auto* l : quant_layers) l->enable_quantization(cfg.method.init);
    } else {
      for (auto* l : quant_layers) l->disable_quantization();
    }
    load_checkpoint_tensors(resume_dir, opt, resume_state.step);
    loader.seek(resume_state.loader);
    step = resume_state.step;
  } else if (cfg.quant_warmup_steps > 0 && !quant_layers.empty()) {
    quant_on = false;
    for (auto* l : quant_layers) l->disable_quantization();
  }

  fs::create_directories(cfg.output_dir);
  write_file_atomic((fs::path(cfg.output_dir) / "config.json").string(), to_json(cfg) + "\n");
  JsonLines metrics((fs::path(cfg.output_dir) / "metrics.jsonl").string(), !resume_dir.empty());
  const bool tty = options.progress && ProgressBar::stderr_is_tty();
  auto emit = [&](const json& j) {
    metrics.write(j.dump());
    if (!tty && !options.quiet) std::printf("%s\n", j.dump().c_str());
  };
  emit({{"event", "start"}, {"method", to_string(cfg.method.method)}, {"model", cfg.model},
        {"step", step}, {"max_steps", cfg.max_steps}, {"threads", threads},
        // Whether the fake-quantized layers (l4q_linear: l4q, lsq, qat-lora with learned steps)
        // may run their products with W_q on AMX tiles (docs/design.md).
        {"amx_tiles", is_quantized(cfg.method.method) && cpu::amx_enabled()},
        {"train_examples", loader.size()},
        {"val_examples", val_loader ? val_loader->size() : 0},
        {"trainable_parameters", [&] {
           int64_t n = 0;
           for (const auto& g : opt.groups())
             for (const auto& p : g.params) n += p.numel();
           return n;
         }()},
        {"resumed_from", resume_dir},
        {"per_channel_layers", [&] {
           json names = json::array();
           for (auto& [lname, lin] : model.named_linears())
             if (is_quantized(cfg.method.method) &&
                 grid_for_layer(cfg.method, lin->in_features()).group_size == -1 &&
                 cfg.method.grid.group_size != -1)
               names.push_back(lname);
           return names;
         }()}});

  TrainSummary summary;
  summary.output_dir = cfg.output_dir;
  summary.method = to_string(cfg.method.method);

  auto evaluate = [&](const char* when) -> double {
    if (!val_loader) return -1;
    const auto r = evaluate_loss(model, *val_loader, cfg.eval_batches);
    json j = {{"event", "eval"}, {"when", when}, {"step", step}, {"val_loss", r.mean_loss},
              {"val_ppl", std::exp(r.mean_loss)}, {"val_tokens", r.tokens}};
    json clip = json::object();
    for (auto& [lname, lin] : model.named_linears())
      if (auto f = lin->clipped_fraction()) clip[lname] = *f;
    if (!clip.empty()) j["clipped_fraction"] = clip;
    emit(j);
    return r.mean_loss;
  };
  auto save = [&]() {
    RunState st;
    st.config = cfg;
    st.step = step;
    st.loader = loader.position();
    st.quant_enabled = quant_on;
    st.data_fingerprint = fingerprint_train;
    summary.last_checkpoint = save_checkpoint(cfg.output_dir, st, opt);
    emit({{"event", "checkpoint"}, {"step", step}, {"dir", summary.last_checkpoint}});
  };

  // ---- train -----------------------------------------------------------------------------
  summary.val_loss_before = evaluate("before");
  SigintGuard sigint;
  ProgressBar bar(cfg.max_steps, "train", tty);
  double window_loss = 0, window_tokens_time = 0;
  int64_t window_n = 0, window_tokens = 0;
  const double t_train = now_seconds();
  bool saved_at_step = false;
  while (has_params && step < cfg.max_steps) {
    if (g_interrupted) {
      summary.interrupted = true;
      break;
    }
    if (!quant_on && step == cfg.quant_warmup_steps) {
      for (auto* l : quant_layers) l->enable_quantization(cfg.method.init);
      quant_on = true;
      emit({{"event", "quantization_on"}, {"step", step}});
    }
    const double t0 = now_seconds();
    std::vector<Batch> micro;
    int64_t loss_tokens = 0, tokens = 0;
    for (int64_t k = 0; k < cfg.grad_accum; ++k) {
      micro.push_back(loader.next());
      loss_tokens += micro.back().n_loss_tokens;
      tokens += micro.back().n_tokens;
    }
    model.set_training(true);
    double loss_sum = 0;
    for (const auto& b : micro) {
      // Each micro-batch's summed token loss over the step's total: the step's gradient is
      // that of the mean over every scored token, however the tokens fall into micro-batches.
      auto l = batch_loss(model, b);
      (l.loss_sum / static_cast<double>(std::max<int64_t>(loss_tokens, 1))).backward();
      loss_sum += l.loss_sum.item<double>();
    }
    const double loss = loss_sum / static_cast<double>(std::max<int64_t>(loss_tokens, 1));
    const double grad_norm = opt.clip_grad_norm(cfg.optim.max_grad_norm);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      emit({{"event", "error"}, {"step", step}, {"loss", loss}, {"grad_norm", grad_norm}});
      fail("step ", step + 1, ": ", !std::isfinite(loss) ? "loss" : "gradient norm", " is ",
           !std::isfinite(loss) ? fmt(loss) : fmt(grad_norm),
           "; stopped without updating the parameters. Last good checkpoint: ",
           summary.last_checkpoint.empty() ? std::string("none") : summary.last_checkpoint,
           " (try a lower optim.lr or optim.quant_lr)");
    }
    const double lr = cfg.optim.lr * schedule.factor(step);
    opt.step(schedule.factor(step));
    for (auto& [lname, lin] : model.named_linears()) lin->after_step();
    opt.zero_grad();
    ++step;
    saved_at_step = false;
    const double dt = now_seconds() - t0;
    summary.tokens += tokens;
    window_loss += loss;
    ++window_n;
    window_tokens += tokens;
    window_tokens_time += dt;
    bar.update(step, "loss " + fmt(loss, "%.4f") + " lr " + fmt(lr, "%.2e") + " " +
                         fmt(tokens / std::max(dt, 1e-9), "%.0f") + " tok/s");
    if (step % cfg.log_every == 0 || step == cfg.max_steps) {
      summary.train_loss = window_loss / window_n;
      emit({{"event", "train"}, {"step", step}, {"loss", summary.train_loss}, {"lr", lr},
            {"grad_norm", grad_norm},
            {"tokens_per_s", window_tokens / std::max(window_tokens_time, 1e-9)},
            {"tokens", summary.tokens}});
      window_loss = window_tokens_time = 0;
      window_n = window_tokens = 0;
    }
    if (cfg.eval_every > 0 && step % cfg.eval_every == 0 && step < cfg.max_steps) {
      bar.finish();
      evaluate("periodic");
    }
    if (cfg.save_every > 0 && step % cfg.save_every == 0) {
      save();
      saved_at_step = true;
    }
    if (options.stop_after > 0 && step >= options.stop_after && step < cfg.max_steps) {
      summary.interrupted = true;
      break;
    }
  }
  bar.finish();
  summary.wall_seconds = now_seconds() - t_start;
  const double train_seconds = now_seconds() - t_train;
  summary.tokens_per_second = summary.tokens / std::max(train_seconds, 1e-9);
  summary.steps = step;

  // ---- clean up --------------------------------------------------------------------------
  if (!saved_at_step) save();
  if (!summary.interrupted) summary.val_loss_after = evaluate("after");
  // Read before the deployed evaluation: its exported weights are a scoring aid, not part of
  // what training needs.
  summary.peak_tensor_bytes = meter.peak_bytes();
  summary.peak_rss_bytes = peak_rss_bytes();
  if (!summary.interrupted && val_loader && model.rounds_at_export()) {
    model.set_deployed(true);
    summary.val_loss_deployed = evaluate("deployed");
    model.set_deployed(false);
  }
  json s = {{"output_dir", summary.output_dir},
            {"method", summary.method},
            {"bits", cfg.method.grid.bits},
            {"group_size", cfg.method.grid.group_size},
            {"steps", summary.steps},
            {"max_steps", cfg.max_steps},
            {"tokens", summary.tokens},
            {"train_loss", summary.train_loss},
            {"val_loss_before", summary.val_loss_before},
            {"val_loss_after", summary.val_loss_after},
            {"val_loss_deployed", summary.val_loss_deployed},
            {"wall_seconds", summary.wall_seconds},
            {"tokens_per_second", summary.tokens_per_second},
            {"peak_tensor_bytes", summary.peak_tensor_bytes},
            {"peak_rss_bytes", summary.peak_rss_bytes},
            {"interrupted", summary.interrupted},
            {"checkpoint", summary.last_checkpoint}};
  write_file_atomic((fs::path(cfg.output_dir) / "summary.json").string(), s.dump(2) + "\n");
  emit({{"event", "end"}, {"summary", s}});
  return summary;
}

}  // namespace l4q
