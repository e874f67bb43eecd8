// Checkpoints of a training run (private to src/train): what is saved, where, and how it is
// read back. See include/l4q/train/trainer.h for the directory layout.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "l4q/data/loader.h"
#include "l4q/model/llama.h"
#include "l4q/text/tokenizer.h"
#include "l4q/train/adamw.h"
#include "l4q/train/config.h"

namespace l4q {

struct RunState {
  TrainConfig config;
  int64_t step = 0;
  LoaderPosition loader;
  bool quant_enabled = true;
  uint64_t data_fingerprint = 0;
};

// Reads state.json and config.json of a checkpoint directory.
RunState read_run_state(const std::string& checkpoint_dir);

// Writes output_dir/checkpoints/step-N/ atomically (a temporary directory renamed into
// place): trainable.safetensors (param/*, optim/*, rng/cpu), state.json, config.json.
// Returns the directory.
std::string save_checkpoint(const std::string& output_dir, const RunState& state,
                            const AdamW& opt);

// Restores parameters, optimizer state and the CPU RNG from a checkpoint directory into the
// optimizer's parameter tensors (which are the model's).
void load_checkpoint_tensors(const std::string& checkpoint_dir, AdamW& opt, int64_t steps);

// Copies the trained parameters of a checkpoint into `model` (no optimizer state).
void load_checkpoint_parameters(const std::string& checkpoint_dir, LlamaModel& model);

struct BuiltModel {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<LlamaModel> model;
};
// The base checkpoint of `config.model` with `config.method`'s layers, and its tokenizer.
BuiltModel build_run_model(const TrainConfig& config);

}  // namespace l4q
