// l4q-train: fine-tune a LLaMA checkpoint with L4Q or a baseline method.
//
//   l4q-train --config configs/stories260k-l4q-3bit.json
//   l4q-train --config C --method qat-lora --bits 2 --output runs/x
//   l4q-train --config C --set optim.lr=1e-3 --set data.max_length=128
//   l4q-train --resume runs/x                 (continue from its latest checkpoint)
//
// Every config field can be overridden with --set key.path=value; the common ones also have
// their own flags. Progress: a bar on a TTY, JSON lines otherwise; metrics.jsonl and
// summary.json in the output directory. Exit codes: 0 done, 1 error, 130 interrupted (a
// checkpoint was saved; continue with --resume).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/runtime.h"
#include "l4q/train/config.h"
#include "l4q/train/trainer.h"

namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) l4q::fail(path, ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fine-tune a LLaMA checkpoint with L4Q (LoRA merged before LSQ+ quantization) "
               "or a baseline method"};
  std::string config_path, resume, model, method, output, init;
  std::vector<std::string> sets;
  int bits = 0, threads = -1;
  int64_t group = 0, rank = 0, steps = -1, batch = 0, accum = 0, stop_after = 0;
  double alpha = 0, lr = -1, quant_lr = -1;
  long long seed = -1;
  bool force = false, no_progress = false, quiet = false;
  app.add_option("--config,-c", config_path, "JSON config (see configs/)");
  app.add_option("--set", sets, "override a config field: key.path=value (repeatable)");
  app.add_option("--model", model, "checkpoint: HF directory, .gguf or llama2.c .bin");
  app.add_option("--method", method, "l4q, lora, lora-rtn, qat-lora, qa-lora, lsq, rtn");
  app.add_option("--bits", bits, "quantization bits (2..8)");
  app.add_option("--group-size", group, "quantization group size (-1: per channel)");
  app.add_option("--init", init, "quantizer init: l4q, minmax, absmax, lsq+");
  app.add_option("--rank", rank, "LoRA rank");
  app.add_option("--alpha", alpha, "LoRA alpha");
  app.add_option("--lr", lr, "learning rate (adapters)");
  app.add_option("--quant-lr", quant_lr, "learning rate of step sizes and offsets");
  app.add_option("--steps", steps, "optimizer steps");
  app.add_option("--batch-size", batch, "examples per micro-batch");
  app.add_option("--grad-accum", accum, "micro-batches per optimizer step");
  app.add_option("--seed", seed, "seed");
  app.add_option("--threads", threads, "intra-op threads (0: all cores)");
  app.add_option("--output,-o", output, "run directory");
  app.add_option("--resume", resume, "continue a run (its directory or a checkpoint directory)");
  app.add_flag("--force", force, "replace an existing run in the output directory");
  app.add_option("--stop-after", stop_after, "stop with a checkpoint after this step (as if interrupted)");
  app.add_flag("--no-progress", no_progress, "no progress bar");
  app.add_flag("--quiet,-q", quiet, "no JSON lines on stdout");
  CLI11_PARSE(app, argc, argv);

  try {
    l4q::keep_freed_memory();  // L4Q_MALLOC=glibc to keep glibc's defaults
    // The base document: the config file, else the resumed run's own config.
    std::string text = "{}", where = "command line";
    if (!config_path.empty()) {
      text = read_text(config_path);
      where = config_path;
    } else if (!resume.empty()) {
      const auto ck = l4q::find_checkpoint(resume);
      where = (fs::path(ck) / "config.json").string();
      text = read_text(where);
    }
    std::vector<std::string> ov;
    auto add = [&](const std::string& k, const std::string& v) { ov.push_back(k + "=" + v); };
    auto quoted = [](const std::string& s) { return "\"" + s + "\""; };
    if (!model.empty()) add("model", quoted(model));
    if (!method.empty()) add("method", quoted(method));
    if (bits) add("quant.bits", std::to_string(bits));
    if (group) add("quant.group_size", std::to_string(group));
    if (!init.empty()) add("quant.init", quoted(init));
    if (rank) add("lora.rank", std::to_string(rank));
    if (alpha > 0) add("lora.alpha", std::to_string(alpha));
    if (lr >= 0) add("optim.lr", std::to_string(lr));
    if (quant_lr >= 0) add("optim.quant_lr", std::to_string(quant_lr));
    if (steps >= 0) add("max_steps", std::to_string(steps));
    if (batch) add("batch_size", std::to_string(batch));
    if (accum) add("grad_accum", std::to_string(accum));
    if (seed >= 0) add("seed", std::to_string(seed));
    if (threads >= 0) add("threads", std::to_string(threads));
    if (!output.empty()) add("output_dir", quoted(output));
    ov.insert(ov.end(), sets.begin(), sets.end());
    const auto cfg = l4q::parse_train_config(l4q::apply_overrides(text, ov, where), where);

    l4q::TrainerOptions opts;
    opts.resume = resume;
    opts.force = force;
    opts.stop_after = stop_after;
    opts.progress = !no_progress;
    opts.quiet = quiet;
    const auto s = l4q::train(cfg, opts);
    // lora-rtn / qat-lora: the exported (rounded) model's loss too, which is what deploys.
    char deployed[64] = "";
    if (s.val_loss_deployed >= 0)
      std::snprintf(deployed, sizeof deployed, " (exported model: %.4f)", s.val_loss_deployed);
    std::fprintf(stderr,
                 "l4q-train: %s %d-bit: %lld steps, %lld tokens in %.1f s (%.0f tok/s); "
                 "val loss %.4f -> %.4f%s; peak tensors %.1f MiB, RSS %.1f MiB; checkpoint %s%s\n",
                 s.method.c_str(), cfg.method.grid.bits, (long long)s.steps, (long long)s.tokens,
                 s.wall_seconds, s.tokens_per_second, s.val_loss_before, s.val_loss_after, deployed,
                 s.peak_tensor_bytes / 1048576.0, s.peak_rss_bytes / 1048576.0,
                 s.last_checkpoint.c_str(), s.interrupted ? " (interrupted: continue with --resume)" : "");
    return s.interrupted ? 130 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q-train: error: %s\n", e.what());
    return 1;
  }
}
