#include "l4q/infer/model_source.h"

#include <filesystem>
#include <system_error>

#include "l4q/error.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/nn/methods.h"
#include "l4q/train/run.h"

// The packed form arrives with helper "packed"'s io/packed_model.h; until that header is in
// the tree an export directory is reported as unsupported rather than breaking the build.
#if __has_include("l4q/io/packed_model.h")
#include "l4q/io/packed_model.h"
#define L4Q_HAVE_PACKED_MODEL 1
#else
#define L4Q_HAVE_PACKED_MODEL 0
#endif

namespace l4q {

namespace fs = std::filesystem;

namespace {

constexpr const char* kAccepted =
    "expected an HF directory (config.json + model.safetensors), a GGUF file, a llama2.c .bin, "
    "an l4q-train run or checkpoint directory, or an l4q export directory";

void check_vocab(const Tokenizer& tok, const LlamaConfig& cfg, const std::string& path) {
  if (tok.vocab_size() > cfg.vocab_size)
    fail(path, ": tokenizer has ", tok.vocab_size(), " pieces but the model's vocabulary is ",
         cfg.vocab_size, " (give the matching one with --tokenizer)");
}

bool any_quantized(const LlamaModel& m) {
  for (const auto& [name, lin] : m.named_linears())
    if (lin->quantized_weight()) return true;
  return false;
}

}  // namespace

LoadedModel load_any_model(const std::string& path, const std::string& tokenizer,
                           bool tokenizer_optional) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, ": no such file or directory (", kAccepted, ")");
  LoadedModel out;

  if (is_trained_run(path)) {
    auto run = load_trained_run(path);
    out.model = std::move(run.model);
    out.tokenizer = tokenizer.empty() ? std::move(run.tokenizer) : load_tokenizer(tokenizer);
    const bool quantized = any_quantized(*out.model);
    out.kind = quantized ? "fake-quant" : "float";
    out.description = "training run " + run.checkpoint_dir + " (" + to_string(run.config.method.method) +
                      ", step " + std::to_string(run.step) + ")";
    // lora-rtn / qat-lora: evaluate and generate with the weights the export writes (rounded
    // after training), not the training-time float branch.
    if (out.model->rounds_at_export()) {
      out.model->set_deployed(true);
      out.description += ", as exported (rounded after training)";
    }
  }
#if L4Q_HAVE_PACKED_MODEL
  else if (is_packed_model(path)) {
    auto pm = load_packed_model(path);
    out.model = std::move(pm.model);
    out.tokenizer = tokenizer.empty() ? std::move(pm.tokenizer) : load_tokenizer(tokenizer);
    out.kind = "packed";
    out.description = "l4q export " + path;
  }
#endif
  else {
    if (fs::is_directory(st) && !fs::exists(fs::path(path) / "config.json"))
      fail(path, ": a directory without config.json, state.json or checkpoints/ (", kAccepted,
           L4Q_HAVE_PACKED_MODEL ? "" : "; this build cannot read l4q export directories", ")");
    // load_checkpoint names what it found wrong (a bad GGUF header, a missing tensor, ...).
    const Checkpoint ck = load_checkpoint(path);
    out.model = std::make_unique<LlamaModel>(ck.config, ck.tensors);
    out.kind = "float";
    out.description = "checkpoint " + path;
    if (!tokenizer.empty()) {
      out.tokenizer = load_tokenizer(tokenizer);
    } else {
      try {
        out.tokenizer = load_model_tokenizer(path);
      } catch (const Error&) {
        if (!tokenizer_optional) throw;
      }
    }
  }
  if (!out.tokenizer && !tokenizer_optional) fail(path, ": the model has no tokenizer; give one with --tokenizer");
  if (out.tokenizer) check_vocab(*out.tokenizer, out.model->config(), path);
  out.model->set_training(false);
  return out;
}

}  // namespace l4q
