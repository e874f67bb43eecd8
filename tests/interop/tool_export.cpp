// Helper of test_export_gguf.py / test_export_gptq.py: logits of l4q's models on given ids.
//
//   l4q_interop_export logits RUN_DIR IDS OUT.f32     the trained run's fake-quant model
//   l4q_interop_export logits MODEL IDS OUT.f32       a checkpoint (HF dir, .gguf) as floats
//
// IDS: comma-separated token ids (one sequence). OUT: raw little-endian fp32 [T, vocab].
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "l4q/io/checkpoint.h"
#include "l4q/model/llama.h"
#include "l4q/runtime.h"
#include "l4q/train/run.h"

int main(int argc, char** argv) {
  if (argc != 5 || std::string(argv[1]) != "logits") {
    std::fprintf(stderr, "usage: %s logits RUN_OR_MODEL IDS OUT.f32\n", argv[0]);
    return 2;
  }
  try {
    l4q::init_runtime(1);
    at::NoGradGuard ng;
    std::vector<int64_t> ids;
    std::stringstream ss(argv[3]);
    for (std::string t; std::getline(ss, t, ',');) ids.push_back(std::stoll(t));
    const auto tokens = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
    at::Tensor logits;
    if (l4q::is_trained_run(argv[2])) {
      const auto run = l4q::load_trained_run(argv[2]);
      logits = run.model->forward(tokens);
    } else {
      const auto ck = l4q::load_checkpoint(argv[2]);
      const l4q::LlamaModel model(ck.config, ck.tensors);
      logits = model.forward(tokens);
    }
    logits = logits.squeeze(0).to(at::kFloat).contiguous();
    std::ofstream out(argv[4], std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data_ptr<float>()),
              static_cast<std::streamsize>(logits.numel() * sizeof(float)));
    std::printf("%lld %lld\n", static_cast<long long>(logits.size(0)), static_cast<long long>(logits.size(1)));
    return out ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q_interop_export: %s\n", e.what());
    return 1;
  }
}
