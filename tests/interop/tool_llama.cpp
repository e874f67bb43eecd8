// Helper of test_transformers_llama.py: loads a checkpoint (an HF directory written by
// transformers' save_pretrained), runs LlamaModel on the given ids and writes
//   OUT/full.f32   logits of one forward pass over [B, T]          (raw little-endian fp32)
//   OUT/inc.f32    the same logits computed through the KV cache: the first T/2 positions
//                  in one call, then one position per call
//   OUT/greedy.txt N_NEW greedy tokens after the first PROMPT ids of row 0 (no EOS stop)
//
//   l4q_interop_llama MODEL IDS.i64 B T PROMPT N_NEW OUT
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/infer/generate.h"
#include "l4q/io/checkpoint.h"
#include "l4q/model/llama.h"
#include "l4q/runtime.h"

namespace {

void write_f32(const std::string& path, const at::Tensor& t) {
  const auto c = t.to(at::kFloat).contiguous();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
  if (!f) l4q::fail(path, ": write failed");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::cerr << "usage: l4q_interop_llama MODEL IDS.i64 B T PROMPT N_NEW OUT\n";
    return 2;
  }
  try {
    l4q::init_runtime(1);
    const std::string model_path = argv[1], ids_path = argv[2], out = argv[7];
    const int64_t B = std::stoll(argv[3]), T = std::stoll(argv[4]);
    const int64_t prompt = std::stoll(argv[5]), n_new = std::stoll(argv[6]);

    std::vector<int64_t> ids(B * T);
    std::ifstream f(ids_path, std::ios::binary);
    f.read(reinterpret_cast<char*>(ids.data()), ids.size() * sizeof(int64_t));
    if (!f) l4q::fail(ids_path, ": expected ", B * T, " int64 ids");
    const auto tokens = at::from_blob(ids.data(), {B, T}, at::kLong).clone();

    const auto ck = l4q::load_checkpoint(model_path);
    const l4q::LlamaModel model(ck.config, ck.tensors);
    at::NoGradGuard no_grad;

    write_f32(out + "/full.f32", model.forward(tokens));

    l4q::KvCache cache;
    std::vector<at::Tensor> parts;
    const int64_t first = T / 2;
    parts.push_back(model.forward(tokens.narrow(1, 0, first), &cache));
    for (int64_t t = first; t < T; ++t) parts.push_back(model.forward(tokens.narrow(1, t, 1), &cache));
    write_f32(out + "/inc.f32", at::cat(parts, 1));

    l4q::GenerateOptions o;
    o.max_new_tokens = n_new;
    o.stop_at_eos = false;
    const std::vector<int32_t> p(ids.begin(), ids.begin() + prompt);
    const auto gen = l4q::generate(model, p, o);
    std::ofstream g(out + "/greedy.txt");
    for (size_t i = 0; i < gen.size(); ++i) g << (i ? " " : "") << gen[i];
    g << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "l4q_interop_llama: " << e.what() << "\n";
    return 1;
  }
}
