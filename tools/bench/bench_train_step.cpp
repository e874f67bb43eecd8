// One training step (forward, loss, backward, AdamW) of a synthetic LLaMA-shaped model under
// a training method, with and without activation checkpointing, in one run: step time and the
// allocator-level peak (l4q::MemoryMeter) above the model's own tensors, as ratios
// checkpointed / plain.
//
//   bench_train_step [--hidden 1024] [--inter 2816] [--layers 8] [--heads 16] [--vocab 32000]
//                    [--seq 512] [--batch 4] [--rank 16] [--bits 4] [--group 128]
//                    [--method l4q] [--steps 2] [--threads 0]
//
// Weights are random (N(0, 0.02)); tokens are random ids; the loss is next-token cross
// entropy. One untimed warm-up step per mode; then the modes alternate step by step so that
// load from other processes hits both alike; the median step time is reported.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "l4q/memory.h"
#include "l4q/model/llama.h"
#include "l4q/nn/methods.h"
#include "l4q/runtime.h"
#include "l4q/train/adamw.h"

namespace {

struct Args {
  int64_t hidden = 1024, inter = 2816, layers = 8, heads = 16, vocab = 32000, seq = 512,
          batch = 4, rank = 16, group = 128;
  int bits = 4, steps = 2, threads = 0;
  std::string method = "l4q";
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], s = argv[i + 1];
    const long long v = std::atoll(s.c_str());
    if (k == "--hidden") a.hidden = v;
    else if (k == "--inter") a.inter = v;
    else if (k == "--layers") a.layers = v;
    else if (k == "--heads") a.heads = v;
    else if (k == "--vocab") a.vocab = v;
    else if (k == "--seq") a.seq = v;
    else if (k == "--batch") a.batch = v;
    else if (k == "--rank") a.rank = v;
    else if (k == "--group") a.group = v;
    else if (k == "--bits") a.bits = static_cast<int>(v);
    else if (k == "--steps") a.steps = static_cast<int>(v);
    else if (k == "--threads") a.threads = static_cast<int>(v);
    else if (k == "--method") a.method = s;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

l4q::NamedTensors random_weights(const l4q::LlamaConfig& c) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto randn = [&](std::vector<int64_t> shape) { return at::normal(0.0, 0.02, shape, gen); };
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  l4q::NamedTensors w;
  w.emplace_back("model.embed_tokens.weight", randn({c.vocab_size, H}));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w.emplace_back(p + "input_layernorm.weight", at::ones({H}));
    w.emplace_back(p + "post_attention_layernorm.weight", at::ones({H}));
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      w.emplace_back(p + "self_attn." + n + ".weight", randn({H, H}));
    w.emplace_back(p + "mlp.gate_proj.weight", randn({I, H}));
    w.emplace_back(p + "mlp.up_proj.weight", randn({I, H}));
    w.emplace_back(p + "mlp.down_proj.weight", randn({H, I}));
  }
  w.emplace_back("model.norm.weight", at::ones({H}));
  w.emplace_back("lm_head.weight", randn({c.vocab_size, H}));
  return w;
}

struct Mode {
  const char* name;
  bool checkpointing;
  std::vector<double> times;
  int64_t peak_above = 0;  // max over steps of (peak - live before the step)
};

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const int threads = l4q::set_num_threads(a.threads);
  const bool kept = l4q::keep_freed_memory();  // as l4q-train does; L4Q_MALLOC=glibc: glibc's defaults
  l4q::LlamaConfig c;
  c.vocab_size = a.vocab;
  c.hidden_size = a.hidden;
  c.intermediate_size = a.inter;
  c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads;
  c.num_key_value_heads = a.heads;
  c.head_dim = a.hidden / a.heads;
  c.max_position_embeddings = std::max<int64_t>(a.seq, 2048);
  l4q::MethodSpec spec;
  spec.method = l4q::parse_linear_method(a.method);
  spec.lora = {a.rank, 2.0 * a.rank, 0.0};
  spec.grid = {a.bits, a.group};
  l4q::LlamaModel model(c, random_weights(c), l4q::make_linear_factory(spec));
  model.set_training(true);

  std::vector<l4q::AdamWGroup> groups(1);
  groups[0].name = "trainable";
  for (auto& [name, lin] : model.named_linears())
    for (auto& p : lin->parameters()) {
      groups[0].names.push_back(name + "." + p.name);
      groups[0].params.push_back(p.tensor);
    }
  l4q::AdamW opt(groups, 0.9, 0.999, 1e-8);

  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const auto tokens = at::randint(0, a.vocab, {a.batch, a.seq + 1}, gen, at::kLong);
  const auto inputs = tokens.narrow(1, 0, a.seq), targets = tokens.narrow(1, 1, a.seq).reshape({-1});

  l4q::MemoryMeter meter;
  auto step = [&](Mode& m) {
    model.set_activation_checkpointing(m.checkpointing);
    const int64_t live = meter.live_bytes();
    meter.reset_peak();
    const double t0 = now();
    const auto logits = model.forward(inputs);
    at::cross_entropy_loss(logits.reshape({-1, a.vocab}), targets).backward();
    opt.step(1.0);
    opt.zero_grad();
    const double dt = now() - t0;
    m.peak_above = std::max(m.peak_above, meter.peak_bytes() - live);
    return dt;
  };

  std::printf("bench_train_step: %s %d-bit g%lld r%lld, hidden %lld, inter %lld, %lld layers, "
              "%lld heads, vocab %lld, batch %lld x seq %lld, %d threads, %d timed steps, "
              "freed memory %s\n",
              a.method.c_str(), a.bits, (long long)a.group, (long long)a.rank, (long long)a.hidden,
              (long long)a.inter, (long long)a.layers, (long long)a.heads, (long long)a.vocab,
              (long long)a.batch, (long long)a.seq, threads, a.steps,
              kept ? "kept (L4Q_MALLOC=keep)" : "returned to the OS (glibc defaults)");
  Mode modes[2] = {{"plain", false, {}, 0}, {"checkpointed", true, {}, 0}};
  for (auto& m : modes) step(m);  // warm-up (first-touch allocations, optimizer state)
  for (int s = 0; s < a.steps; ++s)
    for (auto& m : modes) m.times.push_back(step(m));

  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  for (auto& m : modes)
    std::printf("  %-13s step %7.2f s (median of %d)   peak above model %8.1f MiB\n", m.name,
                median(m.times), a.steps, m.peak_above / 1048576.0);
  std::printf("  checkpointed / plain: step time x%.2f, peak activation memory x%.2f\n",
              median(modes[1].times) / median(modes[0].times),
              static_cast<double>(modes[1].peak_above) / static_cast<double>(modes[0].peak_above));
  std::printf("  peak RSS of the process (both modes): %.1f MiB\n", l4q::peak_rss_bytes() / 1048576.0);
  return 0;
}
