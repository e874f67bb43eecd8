// The trainer: config parsing and validation, schedule, AdamW, bit-identical resume, and the
// refusals (existing output, incompatible resume, non-finite loss).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "l4q/io/safetensors.h"
#include "l4q/train/adamw.h"
#include "l4q/train/config.h"
#include "l4q/train/run.h"
#include "l4q/train/schedule.h"
#include "l4q/train/trainer.h"
#include "quant/codes_matmul.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace l4q {
namespace {

std::string asset(const std::string& rel) { return std::string(L4Q_SOURCE_DIR) + "/" + rel; }

fs::path scratch(const std::string& name) {
  auto p = fs::temp_directory_path() / ("l4q-test-train-" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p;
}

// A small, fast run on the bundled model and data.
std::string tiny_config(const std::string& out, const std::string& method = "l4q") {
  return R"({
    "model": ")" + asset("assets/stories260K/stories260K.gguf") + R"(",
    "method": ")" + method + R"(",
    "lora": {"rank": 2, "alpha": 4},
    "quant": {"bits": 3, "group_size": 32, "indivisible": "per-channel"},
    "data": {"train": ")" + asset("assets/alpaca/alpaca_en_demo.json") + R"(",
             "val_fraction": 0.2, "max_length": 160, "max_records": 40},
    "optim": {"lr": 1e-2, "quant_lr": 1e-3, "warmup_steps": 1},
    "batch_size": 2, "grad_accum": 2, "max_steps": 6, "log_every": 1, "eval_batches": 2,
    "seed": 3, "threads": 1,
    "output_dir": ")" + out + R"("
  })";
}

TrainerOptions quiet() {
  TrainerOptions o;
  o.progress = false;
  o.quiet = true;
  return o;
}

TEST(TrainConfig, ParsesOverridesAndRoundTrips) {
  const auto text = apply_overrides(tiny_config("/tmp/x"), {"optim.lr=0.5", "method=lora", "lora.dropout=0.1"}, "t");
  const auto c = parse_train_config(text, "t");
  EXPECT_EQ(c.optim.lr, 0.5);
  EXPECT_EQ(c.method.method, LinearMethod::Lora);
  EXPECT_EQ(c.method.lora.dropout, 0.1);
  EXPECT_EQ(c.method.grid.bits, 3);
  EXPECT_TRUE(c.method.per_channel_if_indivisible);
  const auto again = parse_train_config(to_json(c), "round trip");
  EXPECT_EQ(to_json(again), to_json(c));
}

TEST(TrainConfig, RejectsBadInput) {
  test::expect_error([] { parse_train_config(R"({"model": "m", "optim": {"lr": 1e-3, "lrr": 1}})", "c.json"); },
                     {"c.json", "unknown key 'optim.lrr'"});
  test::expect_error([] { parse_train_config(R"({"model": "m", "batch_size": "8"})", "c.json"); },
                     {"c.json", "'batch_size'", "integer", "string"});
  test::expect_error([] { parse_train_config("{\n  \"model\": \"m\",\n  \"max_steps\": ,\n}", "c.json"); },
                     {"c.json", "line 3", "column"});
  test::expect_error([] { parse_train_config(R"({"model": "m", "quant": {"bits": 9}})", "c.json"); },
                     {"quant.bits", "9"});
  test::expect_error([] { parse_train_config(R"({"model": "m", "method": "l4q", "lora": {"dropout": 0.1}})", "c.json"); },
                     {"lora.dropout"});
  test::expect_error([] { parse_train_config(R"({"model": "m", "method": "qlora"})", "c.json"); },
                     {"method", "qlora"});
  test::expect_error([] { parse_train_config(R"({"model": "m", "optim": {"schedule": "step"}})", "c.json"); },
                     {"optim.schedule", "step"});
  test::expect_error([] { apply_overrides("{}", {"novalue"}, "cli"); }, {"novalue", "key.path=value"});
}

TEST(LrSchedule, WarmupThenCosineOrLinear) {
  OptimConfig o;
  o.warmup_steps = 2;
  o.schedule = ScheduleKind::cosine;
  LrSchedule cos(o, 10);
  EXPECT_DOUBLE_EQ(cos.factor(0), 0.5);
  EXPECT_DOUBLE_EQ(cos.factor(1), 1.0);
  EXPECT_DOUBLE_EQ(cos.factor(2), 1.0);
  EXPECT_NEAR(cos.factor(6), 0.5, 1e-12);
  EXPECT_NEAR(cos.factor(10), 0.0, 1e-12);
  o.schedule = ScheduleKind::linear;
  o.min_lr_ratio = 0.1;
  EXPECT_NEAR(LrSchedule(o, 10).factor(6), 0.1 + 0.9 * 0.5, 1e-12);
  o.warmup_steps = -1;
  o.warmup_ratio = 0.1;
  EXPECT_EQ(LrSchedule(o, 200).warmup_steps(), 20);
}

TEST(AdamW, MatchesTheTorchUpdate) {
  auto p = at::tensor({1.0, -2.0, 3.0}, at::kDouble).set_requires_grad(true);
  AdamW opt({{"adapter", {"p"}, {p}, 0.1, 0.01}}, 0.9, 0.999, 1e-8);
  const double g[2][3] = {{0.5, -1.0, 2.0}, {0.1, 0.2, -0.3}};
  double ref[3] = {1.0, -2.0, 3.0}, m[3] = {}, v[3] = {};
  for (int t = 1; t <= 2; ++t) {
    p.mutable_grad() = at::tensor({g[t - 1][0], g[t - 1][1], g[t - 1][2]}, at::kDouble);
    opt.step(1.0);
    for (int i = 0; i < 3; ++i) {
      ref[i] *= 1 - 0.1 * 0.01;
      m[i] = 0.9 * m[i] + 0.1 * g[t - 1][i];
      v[i] = 0.999 * v[i] + 0.001 * g[t - 1][i] * g[t - 1][i];
      const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.999, t);
      ref[i] -= 0.1 / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + 1e-8);
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i].item<double>(), ref[i], 1e-14);
  p.mutable_grad() = at::tensor({3.0, 4.0, 0.0}, at::kDouble);
  EXPECT_DOUBLE_EQ(opt.clip_grad_norm(1.0), 5.0);
  EXPECT_NEAR(p.grad().norm().item<double>(), 1.0, 1e-6);
}

at::Tensor final_params(const std::string& run) {
  const auto f = SafetensorsFile::open(find_checkpoint(run) + "/trainable.safetensors");
  std::vector<at::Tensor> ps;
  for (const auto& t : f.tensors())
    if (t.name.rfind("param/", 0) == 0) ps.push_back(f.tensor(t.name).reshape(-1));
  return at::cat(ps);
}

// N steps, stop, resume, N more steps == 2N steps straight, bit for bit; across the end of the
// quantization warm-up, with dropout-free L4Q and with dropout in float LoRA (RNG restored).
TEST(Trainer, ResumeIsBitIdenticalToAStraightRun) {
  for (const char* method : {"l4q", "lora"}) {
    SCOPED_TRACE(method);
    const auto straight = scratch(std::string("straight-") + method).string();
    const auto split = scratch(std::string("split-") + method).string();
    auto overrides = std::vector<std::string>{};
    if (std::string(method) == "l4q") overrides.push_back("quant.warmup_steps=2");
    else overrides.push_back("lora.dropout=0.2");
    const auto c1 = parse_train_config(apply_overrides(tiny_config(straight, method), overrides, "t"), "t");
    const auto s1 = train(c1, quiet());
    EXPECT_EQ(s1.steps, 6);
    EXPECT_FALSE(s1.interrupted);
    const auto c2 = parse_train_config(apply_overrides(tiny_config(split, method), overrides, "t"), "t");
    auto o = quiet();
    o.stop_after = 1;
    const auto s2a = train(c2, o);
    EXPECT_TRUE(s2a.interrupted);
    EXPECT_EQ(s2a.steps, 1);
    o.stop_after = 0;
    o.resume = split;
    const auto s2b = train(c2, o);
    EXPECT_EQ(s2b.steps, 6);
    EXPECT_TRUE(at::equal(final_params(straight), final_params(split)));
    EXPECT_LT(s1.val_loss_after, s1.val_loss_before);
  }
}

TEST(Trainer, RefusesToOverwriteAndIncompatibleResume) {
  const auto out = scratch("refuse").string();
  auto c = parse_train_config(apply_overrides(tiny_config(out), {"max_steps=1"}, "t"), "t");
  train(c, quiet());
  const auto before = final_params(out);
  test::expect_error([&] { train(c, quiet()); }, {"holds a run already", "--resume", "--force"});
  auto other = parse_train_config(apply_overrides(tiny_config(out, "qat-lora"), {"max_steps=3"}, "t"), "t");
  auto o = quiet();
  o.resume = out;
  test::expect_error([&] { train(other, o); }, {"method", "qat-lora", "l4q"});
  EXPECT_TRUE(at::equal(before, final_params(out)));  // nothing overwritten
  auto forced = quiet();
  forced.force = true;
  EXPECT_EQ(train(c, forced).steps, 1);
}

TEST(Trainer, StopsOnNonFiniteLossKeepingTheLastCheckpoint) {
  const auto out = scratch("nan").string();
  auto c = parse_train_config(
      apply_overrides(tiny_config(out, "lora"), {"optim.lr=1e30", "optim.max_grad_norm=0", "save_every=1"}, "t"), "t");
  test::expect_error([&] { train(c, quiet()); }, {"is", "Last good checkpoint", "step-"});
  // The checkpoint it names loads and holds finite parameters.
  EXPECT_TRUE(at::isfinite(final_params(out)).all().item<bool>());
}

TEST(Trainer, RunLoadsBackWithItsTrainedWeights) {
  const auto out = scratch("load").string();
  auto c = parse_train_config(apply_overrides(tiny_config(out), {"max_steps=2"}, "t"), "t");
  train(c, quiet());
  auto run = load_trained_run(out);
  EXPECT_EQ(run.step, 2);
  // The start event says whether the layers' products may run on AMX tiles.
  {
    std::ifstream metrics(fs::path(out) / "metrics.jsonl");
    std::string first;
    std::getline(metrics, first);
    const auto start = nlohmann::json::parse(first);
    EXPECT_EQ(start.at("event"), "start");
    EXPECT_EQ(start.at("amx_tiles").get<bool>(), cpu::amx_enabled());
  }
  // The trained adapter is in the model: some LoRA B is non-zero after two steps.
  double bsum = 0;
  for (auto& [name, lin] : run.model->named_linears())
    for (const auto& p : lin->parameters())
      if (p.name == "lora_b") bsum += p.tensor.abs().sum().item<double>();
  EXPECT_GT(bsum, 0);
  test::expect_error([] { load_trained_run("/nonexistent-run-dir"); }, {"no finished checkpoint"});
}

// lora-rtn is rounded only at export: the summary also scores the exported model, and that is
// not the training-time loss. L4Q's training-time model is the exported one: no extra number.
TEST(Trainer, SummaryScoresTheExportedModelOfMethodsThatRoundAfterTraining) {
  const auto out = scratch("deployed").string();
  auto c = parse_train_config(apply_overrides(tiny_config(out, "lora-rtn"), {"max_steps=2"}, "t"), "t");
  const auto s = train(c, quiet());
  ASSERT_GT(s.val_loss_deployed, 0);
  EXPECT_GT(std::abs(s.val_loss_deployed - s.val_loss_after), 1e-4);
  std::ifstream f(out + "/summary.json");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"val_loss_deployed\""), std::string::npos);
  const auto out2 = scratch("deployed-l4q").string();
  auto c2 = parse_train_config(apply_overrides(tiny_config(out2), {"max_steps=1"}, "t"), "t");
  EXPECT_EQ(train(c2, quiet()).val_loss_deployed, -1);
}

}  // namespace
}  // namespace l4q
