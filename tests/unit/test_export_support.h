// Helpers of the export tests (test_export_*.cpp): a "trained" stories260K run built in
// memory, with every quantizer and adapter moved away from its initial value so that steps,
// offsets and codes are all non-trivial.
#pragma once
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <memory>
#include <string>

#include "l4q/io/checkpoint.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/nn/methods.h"
#include "l4q/train/run.h"

namespace l4q::test {

inline std::string stories_gguf() { return std::string(L4Q_SOURCE_DIR) + "/assets/stories260K/stories260K.gguf"; }

struct RunOptions {
  int bits = 4;
  int64_t group = 32;
  LinearMethod method = LinearMethod::L4Q;
  bool integer_offset = false;
  bool zero_offset = false;  // keep b = 0 (symmetric)
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  uint64_t seed = 1;
};

inline TrainedRun synthetic_run(const RunOptions& o) {
  TrainedRun r;
  r.config.model = stories_gguf();
  r.config.method.method = o.method;
  r.config.method.grid = {o.bits, o.group};
  r.config.method.per_channel_if_indivisible = true;
  r.config.method.integer_offset = o.integer_offset;
  r.config.method.target_modules = o.targets;
  r.config.method.lora = {4, 16.0, 0.0};
  r.checkpoint_dir = "synthetic";
  auto ck = load_checkpoint(r.config.model);
  r.model = std::make_unique<LlamaModel>(ck.config, ck.tensors, make_linear_factory(r.config.method));
  r.tokenizer = load_model_tokenizer(r.config.model);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  at::NoGradGuard ng;
  for (auto& [name, lin] : r.model->named_linears())
    for (auto& p : lin->parameters()) {
      auto t = p.tensor;
      if (p.name == "lora_b") t.copy_(at::normal(0.0, 0.02, t.sizes(), gen));
      if (p.name == "step") t.mul_(at::normal(1.0, 0.1, t.sizes(), gen).clamp(0.8, 1.2));
      if (p.name == "offset" && !o.zero_offset)
        t.copy_(r.model->linear(name).quantized_weight()->s * at::normal(0.0, 1.3, t.sizes(), gen));
    }
  r.model->set_training(false);
  return r;
}

}  // namespace l4q::test
