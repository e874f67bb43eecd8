// The typed configuration of a fine-tuning run (l4q-train). Read from JSON, overridden from
// the command line, validated up front, saved with the run.
//
// Rejected (l4q::Error naming the key): unknown keys at any level, values of the wrong JSON
// type, out-of-range numbers (see validate()), and combinations that cannot work (e.g. l4q
// with LoRA dropout, a group size that is not positive).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "l4q/data/dataset.h"
#include "l4q/nn/methods.h"

namespace l4q {

enum class ScheduleKind { cosine, linear, constant };

struct OptimConfig {
  double lr = 2e-4;                // adapter (and full-weight) learning rate
  double weight_decay = 0.01;      // adapter group only
  double quant_lr = 0.0;           // step sizes and offsets; <= 0: same as lr
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double max_grad_norm = 1.0;      // <= 0: no clipping
  ScheduleKind schedule = ScheduleKind::cosine;
  int64_t warmup_steps = -1;       // >= 0 wins over warmup_ratio
  double warmup_ratio = 0.1;
  double min_lr_ratio = 0.0;       // cosine/linear floor, as a fraction of lr
};

struct TrainConfig {
  // Model and tokenizer.
  std::string model;               // HF directory, .gguf or llama2.c .bin
  std::string tokenizer;           // .model file; empty: next to / inside the model
  // Method.
  MethodSpec method;
  int64_t quant_warmup_steps = 0;  // l4q: float LoRA for N optimizer steps, then init s, b
  // Data.
  DataOptions data;
  // Optimisation.
  OptimConfig optim;
  int64_t batch_size = 8;          // examples per micro-batch
  int64_t grad_accum = 1;          // micro-batches per optimizer step
  int64_t max_steps = 100;         // optimizer steps
  int64_t eval_every = 0;          // steps between validation passes; 0: start and end only
  int64_t save_every = 0;          // steps between checkpoints; 0: final only
  int64_t log_every = 1;
  int64_t eval_batches = 0;        // 0: the whole validation set
  uint64_t seed = 0;
  int threads = 0;                 // 0: all cores
  bool activation_checkpointing = false;  // recompute each decoder block in backward
  std::string output_dir = "runs/l4q";

  void validate() const;           // throws l4q::Error naming the key
};

// Parses a JSON document (text) into a config; `where` names it in errors (a file path).
TrainConfig parse_train_config(const std::string& json_text, const std::string& where);
TrainConfig load_train_config(const std::string& path);
// Applies "a.b.c=value" overrides to a JSON document before it is parsed: value is JSON when
// it parses as JSON (numbers, true/false, arrays), else a string.
std::string apply_overrides(const std::string& json_text, const std::vector<std::string>& overrides,
                            const std::string& where);
// The complete effective config (every field), as saved in a run directory.
std::string to_json(const TrainConfig& c);

ScheduleKind parse_schedule(const std::string& s, const std::string& where);
const char* to_string(ScheduleKind k);

}  // namespace l4q
