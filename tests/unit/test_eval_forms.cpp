// One model in its three forms gives one perplexity: a short L4Q run evaluated fake-quantized
// (the run itself), as its float merge (effective weights in plain float layers) and as its
// l4q export read back packed. Also load_any_model's recognition of each form and its errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "l4q/eval/perplexity.h"
#include "l4q/export/l4q_export.h"
#include "l4q/infer/model_source.h"
#include "l4q/train/config.h"
#include "l4q/train/run.h"
#include "l4q/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace l4q {
namespace {

std::string asset(const std::string& rel) { return std::string(L4Q_SOURCE_DIR) + "/" + rel; }

fs::path scratch(const std::string& name) {
  auto p = fs::temp_directory_path() / ("l4q-test-eval-forms-" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(EvalModelSource, RecognisesCheckpointsAndRejectsTheRest) {
  const auto gguf = load_any_model(asset("assets/stories260K/stories260K.gguf"));
  EXPECT_EQ(gguf.kind, "float");
  ASSERT_TRUE(gguf.tokenizer);
  EXPECT_EQ(gguf.tokenizer->vocab_size(), 512);
  const auto bin = load_any_model(asset("assets/stories260K/stories260K.bin"));  // tok512.model beside it
  EXPECT_EQ(bin.kind, "float");
  EXPECT_EQ(bin.model->config().hidden_size, 64);

  const auto dir = scratch("bad");
  fs::create_directories(dir / "empty");
  test::expect_error([&] { load_any_model((dir / "empty").string()); },
                     {"empty", "without config.json", "l4q-train run", "export directory"});
  std::ofstream(dir / "junk.bin") << "not a model at all";
  test::expect_error([&] { load_any_model((dir / "junk.bin").string()); }, {"junk.bin", "not a GGUF file"});
  test::expect_error([&] { load_any_model((dir / "missing").string()); }, {"missing", "no such file"});
  // A model file with no tokenizer anywhere: an error, or a null tokenizer when optional.
  fs::copy_file(asset("assets/stories260K/stories260K.bin"), dir / "lonely.bin");
  test::expect_error([&] { load_any_model((dir / "lonely.bin").string()); }, {"no tokenizer found"});
  EXPECT_FALSE(load_any_model((dir / "lonely.bin").string(), "", true).tokenizer);
}

TEST(EvalForms, FloatMergeFakeQuantAndPackedAgreeOnPerplexity) {
  const auto out = scratch("run").string();
  const std::string cfg_json = R"({
    "model": ")" + asset("assets/stories260K/stories260K.gguf") + R"(",
    "method": "l4q",
    "lora": {"rank": 2, "alpha": 4},
    "quant": {"bits": 3, "group_size": 32, "indivisible": "per-channel"},
    "data": {"train": ")" + asset("assets/alpaca/alpaca_en_demo.json") + R"(",
             "val_fraction": 0.2, "max_length": 128, "max_records": 24},
    "optim": {"lr": 1e-2, "quant_lr": 1e-3, "warmup_steps": 1},
    "batch_size": 2, "grad_accum": 1, "max_steps": 3, "log_every": 1, "eval_batches": 1,
    "seed": 5, "threads": 1,
    "output_dir": ")" + out + R"("
  })";
  TrainerOptions quiet;
  quiet.progress = false;
  quiet.quiet = true;
  train(parse_train_config(cfg_json, "test"), quiet);

  const auto fake = load_any_model(out);
  EXPECT_EQ(fake.kind, "fake-quant");
  const LlamaModel merged(fake.model->config(), fake.model->effective_state_dict());
  const auto export_dir = scratch("export").string();
  {
    const auto run = load_trained_run(out);
    const auto report = export_l4q(run, export_dir, {});
    EXPECT_GT(report.quantized_layers, 0);
  }
  const auto packed = load_any_model(export_dir);
  EXPECT_EQ(packed.kind, "packed");
  const auto original = load_any_model(asset("assets/stories260K/stories260K.gguf"));

  const auto ids = fake.tokenizer->encode(read_all(asset("assets/stories260K/stories260K.greedy256.txt")));
  ASSERT_GT(ids.size(), 200u);
  PerplexityProtocol p;
  p.context = 96;
  p.stride = 48;
  const auto r_fake = evaluate_perplexity(*fake.model, ids, p);
  const auto r_merged = evaluate_perplexity(merged, ids, p);
  const auto r_packed = evaluate_perplexity(*packed.model, ids, p);
  const auto r_orig = evaluate_perplexity(*original.model, ids, p);
  ASSERT_EQ(r_fake.tokens_scored, r_packed.tokens_scored);
  const double f = r_fake.perplexity();
  EXPECT_LT(std::abs(r_merged.perplexity() - f) / f, 1e-4) << r_merged.perplexity() << " vs " << f;
  EXPECT_LT(std::abs(r_packed.perplexity() - f) / f, 1e-4) << r_packed.perplexity() << " vs " << f;
  // The quantization is real: the 3-bit model is measurably not the float original.
  EXPECT_GT(std::abs(r_orig.perplexity() - f) / f, 1e-3) << r_orig.perplexity() << " vs " << f;
  RecordProperty("ppl_fake_quant", std::to_string(f));
  RecordProperty("ppl_packed", std::to_string(r_packed.perplexity()));
  RecordProperty("ppl_float_merge", std::to_string(r_merged.perplexity()));
  RecordProperty("ppl_original", std::to_string(r_orig.perplexity()));
}

}  // namespace
}  // namespace l4q
