// A trained run, loaded back: the effective config, the tokenizer and the model with the
// method's layers holding their trained parameters. Export, evaluation and generation start
// from here.
#pragma once
#include <memory>
#include <string>

#include "l4q/model/llama.h"
#include "l4q/text/tokenizer.h"
#include "l4q/train/config.h"

namespace l4q {

struct TrainedRun {
  TrainConfig config;
  std::string checkpoint_dir;
  int64_t step = 0;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<LlamaModel> model;
};

// `path`: a run directory (its latest checkpoint) or a checkpoint directory. Throws
// l4q::Error when it holds no finished checkpoint or the tensors do not match the config.
TrainedRun load_trained_run(const std::string& path);

// Is `path` a run or checkpoint directory written by l4q-train?
bool is_trained_run(const std::string& path);

}  // namespace l4q
