// Activation checkpointing: checkpointed() gives the same output and gradients as running the
// block directly (into x and into the parameters, with dropout replayed and the generator left
// as a plain run leaves it); LlamaModel with per-block checkpointing gives the same loss and
// gradients as without, for l4q, lora (with dropout) and qat-lora, while keeping less alive
// between forward and backward; the trainer's config key reaches the model and a trained run
// ends bit-identical to one without checkpointing.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <filesystem>

#include "l4q/memory.h"
#include "l4q/model/activation_checkpoint.h"
#include "l4q/model/llama.h"
#include "l4q/nn/methods.h"
#include "l4q/io/safetensors.h"
#include "l4q/train/config.h"
#include "l4q/train/trainer.h"
#include "test_model_support.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace l4q {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(ActivationCheckpoint, MatchesTheDirectBlockWithDropout) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto opt = at::TensorOptions().dtype(at::kDouble);
  const auto w1 = at::normal(0, 0.5, {6, 4}, gen, opt).requires_grad_(true);
  const auto w2 = at::normal(0, 0.5, {4, 6}, gen, opt).requires_grad_(true);
  const auto frozen = at::normal(0, 0.5, {4}, gen, opt);  // read by the block, no grad
  const auto x0 = at::normal(0, 1, {3, 5, 4}, gen, opt);
  const BlockFn block = [&](const at::Tensor& x) {
    const auto h = at::dropout(at::silu(at::matmul(x, w1.t())), 0.5, /*train=*/true);
    return x + at::matmul(h, w2.t()) * frozen;
  };

  struct Result {
    at::Tensor y, gx, g1, g2, next_random;
  };
  auto run = [&](bool checkpoint) {
    at::manual_seed(11);
    const auto x = (x0 * 1.0).requires_grad_(true);
    const auto y = checkpoint ? checkpointed(block, x, {w1, w2}) : block(x);
    const auto gy = at::ones_like(y) + at::arange(y.numel(), opt).view(y.sizes()) / 7;
    const auto g = torch::autograd::grad({y}, {x, w1, w2}, {gy});
    // Backward must hand the generator back where the forward left it.
    return Result{y.detach(), g[0], g[1], g[2], at::rand({4}, opt)};
  };
  const auto plain = run(false), ckpt = run(true);
  // The dropout must matter, or the replay is untested: a different seed changes y.
  at::manual_seed(12);
  EXPECT_GT(max_abs_diff(block(x0), plain.y), 1e-3);
  EXPECT_TRUE(at::equal(plain.y, ckpt.y));
  EXPECT_LE(max_abs_diff(plain.gx, ckpt.gx), 1e-12);
  EXPECT_LE(max_abs_diff(plain.g1, ckpt.g1), 1e-12);
  EXPECT_LE(max_abs_diff(plain.g2, ckpt.g2), 1e-12);
  EXPECT_GT(plain.g1.abs().max().item<double>(), 0);
  EXPECT_TRUE(at::equal(plain.next_random, ckpt.next_random));
}

TEST(ActivationCheckpoint, AccumulatesIntoLeavesAndSkipsWithoutGrad) {
  const auto opt = at::TensorOptions().dtype(at::kDouble);
  const auto w = at::full({3}, 2.0, opt).requires_grad_(true);
  const auto x = at::arange(3, opt);  // no grad: only w's gradient is wanted
  const BlockFn block = [&](const at::Tensor& in) { return (in * w).pow(2); };
  checkpointed(block, x, {w}).sum().backward();
  ASSERT_TRUE(w.grad().defined());
  // d/dw sum((x w)^2) = 2 x^2 w
  EXPECT_TRUE(at::allclose(w.grad(), 2 * x * x * w.detach()));
  {
    at::NoGradGuard no_grad;
    const auto y = checkpointed(block, x, {w});
    EXPECT_FALSE(y.requires_grad());
    EXPECT_TRUE(at::equal(y, block(x)));
  }
  test::expect_error([&] { checkpointed(BlockFn(), x, {w}); }, {"checkpointed", "block is empty"});
}

// Two models with the same weights and method layers (LoRA B made non-zero so every adapter
// gets a gradient), one checkpointing its blocks.
struct ModelPair {
  std::unique_ptr<LlamaModel> plain, ckpt;
};

ModelPair make_pair(const MethodSpec& spec, const LlamaConfig& c) {
  const auto weights = test::random_llama_weights(c, at::kFloat, 21);
  ModelPair p;
  p.plain = std::make_unique<LlamaModel>(c, weights, make_linear_factory(spec));
  p.ckpt = std::make_unique<LlamaModel>(c, weights, make_linear_factory(spec));
  p.ckpt->set_activation_checkpointing(true);
  for (auto* m : {p.plain.get(), p.ckpt.get()}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
    at::NoGradGuard no_grad;
    for (auto& [name, lin] : m->named_linears())
      for (auto& prm : lin->parameters())
        if (prm.name.find("lora_b") != std::string::npos)
          prm.tensor.copy_(at::normal(0, 0.05, prm.tensor.sizes(), gen, prm.tensor.options()));
    m->set_training(true);
  }
  return p;
}

struct LossAndGrads {
  double loss = 0;
  std::vector<std::string> names;
  std::vector<at::Tensor> grads;
};

LossAndGrads loss_and_grads(LlamaModel& model, const at::Tensor& tokens) {
  const int64_t T = tokens.size(1) - 1, V = model.config().vocab_size;
  at::manual_seed(99);  // the same dropout masks for both models
  const auto logits = model.forward(tokens.narrow(1, 0, T));
  const auto loss = at::cross_entropy_loss(logits.reshape({-1, V}), tokens.narrow(1, 1, T).reshape({-1}));
  loss.backward();  // into .grad, as the trainer does
  LossAndGrads r;
  r.loss = loss.item<double>();
  for (auto& [name, lin] : model.named_linears())
    for (auto& prm : lin->parameters()) {
      r.names.push_back(name + "." + prm.name);
      r.grads.push_back(prm.tensor.grad().defined() ? prm.tensor.grad().clone() : at::Tensor());
    }
  return r;
}

TEST(ActivationCheckpoint, LlamaLossAndGradientsMatchPerMethod) {
  const auto c = test::tiny_llama_config(4, 2);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto tokens = at::randint(0, c.vocab_size, {3, 13}, gen, at::kLong);
  struct Case {
    const char* method;
    double dropout;
  };
  for (const Case k : {Case{"l4q", 0.0}, Case{"lora", 0.0}, Case{"lora", 0.25}, Case{"qat-lora", 0.1}}) {
    SCOPED_TRACE(std::string(k.method) + " dropout " + std::to_string(k.dropout));
    MethodSpec spec;
    spec.method = parse_linear_method(k.method);
    spec.lora = {4, 8.0, k.dropout};
    spec.grid = {4, 16};
    spec.seed = 4;
    auto pair = make_pair(spec, c);
    const auto a = loss_and_grads(*pair.plain, tokens);
    const auto b = loss_and_grads(*pair.ckpt, tokens);
    EXPECT_NEAR(a.loss, b.loss, 1e-6 * std::abs(a.loss));
    ASSERT_EQ(a.grads.size(), b.grads.size());
    ASSERT_GE(a.grads.size(), 14u * 2);
    for (size_t i = 0; i < a.grads.size(); ++i) {
      ASSERT_TRUE(a.grads[i].defined()) << a.names[i];
      ASSERT_TRUE(b.grads[i].defined()) << b.names[i] << " got no gradient with checkpointing";
      const double scale = std::max(a.grads[i].abs().max().item<double>(), 1e-12);
      EXPECT_LE(max_abs_diff(a.grads[i], b.grads[i]), 1e-5 * scale) << a.names[i];
    }
  }
}

TEST(ActivationCheckpoint, KeepsLessAliveBetweenForwardAndBackward) {
  auto c = test::tiny_llama_config(4, 2);
  c.num_hidden_layers = 4;
  MethodSpec spec;
  spec.method = LinearMethod::Lora;
  spec.lora = {4, 8.0, 0.0};
  auto pair = make_pair(spec, c);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto tokens = at::randint(0, c.vocab_size, {4, 64}, gen, at::kLong);
  auto held_bytes = [&](LlamaModel& m) {
    MemoryMeter meter;
    const int64_t before = meter.live_bytes();
    auto loss = m.forward(tokens).logsumexp(-1).mean();
    const int64_t held = meter.live_bytes() - before;  // the graph's saved tensors, mostly
    loss.backward();
    return held;
  };
  const int64_t plain = held_bytes(*pair.plain), ckpt = held_bytes(*pair.ckpt);
  // Per block, checkpointing keeps one [B, T, hidden] input instead of ~20 tensors of that
  // size or larger (attention scores, MLP activations).
  EXPECT_LT(ckpt * 2, plain) << "plain " << plain << " B, checkpointed " << ckpt << " B";
  // Eval/generation (no grad) is unaffected.
  at::NoGradGuard no_grad;
  pair.plain->set_training(false);
  pair.ckpt->set_training(false);
  EXPECT_TRUE(at::equal(pair.plain->forward(tokens), pair.ckpt->forward(tokens)));
}

std::string asset(const std::string& rel) { return std::string(L4Q_SOURCE_DIR) + "/" + rel; }

std::string small_run(const std::string& out, bool checkpointing) {
  return R"({
    "model": ")" + asset("assets/stories260K/stories260K.gguf") + R"(",
    "method": "lora", "lora": {"rank": 2, "alpha": 4, "dropout": 0.2},
    "data": {"train": ")" + asset("assets/alpaca/alpaca_en_demo.json") + R"(",
             "val_fraction": 0.2, "max_length": 160, "max_records": 20},
    "optim": {"lr": 1e-2, "warmup_steps": 1},
    "batch_size": 2, "max_steps": 3, "eval_batches": 1, "seed": 3, "threads": 1,
    "activation_checkpointing": )" + (checkpointing ? "true" : "false") + R"(,
    "output_dir": ")" + out + R"("
  })";
}

TEST(ActivationCheckpoint, TrainerConfigKeyAndBitIdenticalRun) {
  const auto root = fs::temp_directory_path() / ("l4q-test-ckpt-" + std::to_string(::getpid()));
  fs::remove_all(root);
  TrainerOptions o;
  o.progress = false;
  o.quiet = true;
  std::vector<at::Tensor> finals;
  for (bool on : {false, true}) {
    const auto out = (root / (on ? "on" : "off")).string();
    const auto cfg = parse_train_config(small_run(out, on), "t");
    EXPECT_EQ(cfg.activation_checkpointing, on);
    EXPECT_EQ(parse_train_config(to_json(cfg), "round trip").activation_checkpointing, on);
    const auto s = train(cfg, o);
    EXPECT_EQ(s.steps, 3);
    const auto f = SafetensorsFile::open(find_checkpoint(out) + "/trainable.safetensors");
    std::vector<at::Tensor> ps;
    for (const auto& t : f.tensors())
      if (t.name.rfind("param/", 0) == 0) ps.push_back(f.tensor(t.name).reshape(-1));
    ASSERT_FALSE(ps.empty());
    finals.push_back(at::cat(ps));
  }
  EXPECT_TRUE(at::equal(finals[0], finals[1]));
  test::expect_error(
      [] { parse_train_config(R"({"model": "m", "activation_checkpointing": 1})", "c.json"); },
      {"c.json", "activation_checkpointing", "true or false"});
  fs::remove_all(root);
}

}  // namespace
}  // namespace l4q
