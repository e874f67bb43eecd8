// The fine-tuning recipe shared by every method (l4q, lora, lora-rtn, qat-lora, qa-lora, lsq,
// rtn): validate the config, set up (model with the method's linear layers, data, AdamW with
// adapter / quantizer / weight groups, schedule), train (micro-batches, accumulation,
// clipping, quantization warm-up, evaluation, checkpoints, metrics), clean up (final
// checkpoint and summary).
//
// Run directory (output_dir):
//   config.json            the effective config
//   metrics.jsonl          one JSON object per log/eval/checkpoint event
//   summary.json           final numbers (losses, tokens, wall time, peak memory)
//   checkpoints/step-N/    trainable.safetensors (parameters, optimizer state, RNG state)
//                          + state.json (step, data position, warm-up state, fingerprint)
//
// Raises (l4q::Error, nothing overwritten): invalid config; output_dir that holds a run
// already (unless resuming it, or `force`); a resume checkpoint from another model, method,
// quantizer or data; NaN/Inf loss or gradient (the run stops, keeping its last good
// checkpoint).
#pragma once
#include <cstdint>
#include <string>

#include "l4q/train/config.h"

namespace l4q {

struct TrainerOptions {
  std::string resume;      // a run directory (its latest checkpoint) or a checkpoint directory
  bool force = false;      // replace an existing run in output_dir
  int64_t stop_after = 0;  // > 0: stop (with a checkpoint) after this optimizer step, as if interrupted
  bool progress = true;    // progress bar on a TTY
  bool quiet = false;      // no JSON lines on stdout
};

struct TrainSummary {
  std::string output_dir;
  std::string method;
  int64_t steps = 0;               // optimizer steps completed
  int64_t tokens = 0;              // training tokens processed (this process)
  double train_loss = 0;           // mean loss of the last logged window
  double val_loss_before = -1;     // -1: no validation set
  double val_loss_after = -1;
  // lora-rtn and qat-lora only (their exported model is rounded after training): validation
  // loss of the exported model, which val_loss_after (the training-time model) does not show.
  double val_loss_deployed = -1;
  double wall_seconds = 0;
  double tokens_per_second = 0;
  int64_t peak_tensor_bytes = 0;   // allocator-level peak (MemoryMeter)
  int64_t peak_rss_bytes = 0;
  bool interrupted = false;        // SIGINT or stop_after
  std::string last_checkpoint;
};

// Runs the whole recipe. SIGINT during training saves a checkpoint and returns with
// `interrupted` set.
TrainSummary train(const TrainConfig& config, const TrainerOptions& options = {});

// The latest checkpoint directory of a run directory (or `dir` itself if it is one).
std::string find_checkpoint(const std::string& dir);

}  // namespace l4q
