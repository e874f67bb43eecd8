// The `l4q` export format: export_l4q -> load_packed_model is lossless (every layer's W_q bit
// for bit), the packed model computes what the fake-quant model computes (prefill and KV-cached
// decode), a real training run exports and keeps its perplexity, and bad input (existing
// output, unsupported bits, wrong or corrupt files) gives clear l4q::Errors.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>

#include "l4q/export/l4q_export.h"
#include "l4q/infer/packed_linear.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/packed_model.h"
#include "l4q/io/safetensors.h"
#include "l4q/model/kv_cache.h"
#include "l4q/nn/methods.h"
#include "l4q/text/tokenizer.h"
#include "l4q/train/config.h"
#include "l4q/train/run.h"
#include "l4q/train/trainer.h"
#include "test_io_support.h"
#include "test_model_support.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace l4q {
namespace {

std::string asset(const std::string& rel) { return std::string(L4Q_SOURCE_DIR) + "/" + rel; }

// A random tiny model (hidden 32, intermediate 48: down_proj's in 48 is not a multiple of 32 and
// falls back to one group per row) with `method` layers and a non-zero LoRA B, as a TrainedRun.
TrainedRun tiny_run(const std::string& method, int bits, uint64_t seed = 1) {
  TrainedRun run;
  run.config.method.method = parse_linear_method(method);
  run.config.method.grid = {bits, 32};
  run.config.method.lora.rank = 2;
  run.config.method.lora.alpha = 4;
  run.config.method.per_channel_if_indivisible = true;
  run.config.tokenizer = asset("assets/stories260K/tok512.model");
  run.checkpoint_dir = "tiny";
  const auto cfg = test::tiny_llama_config();
  run.model = std::make_unique<LlamaModel>(cfg, test::random_llama_weights(cfg, at::kFloat, seed),
                                           make_linear_factory(run.config.method));
  at::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 7);
  for (auto& [name, lin] : run.model->named_linears())
    for (auto& p : lin->parameters())
      if (p.name == "lora_b") p.tensor.copy_(at::normal(0.0, 0.05, p.tensor.sizes(), gen));
  run.model->set_training(false);
  return run;
}

// Every projection of `packed` holds the W_q of `src` bit for bit and is a PackedLinear
// (or a float layer where `src` has no integer weight).
void expect_same_weights(const LlamaModel& src, const LlamaModel& packed) {
  const auto a = src.named_linears();
  const auto b = packed.named_linears();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].first);
    ASSERT_EQ(a[i].first, b[i].first);
    const auto mw = a[i].second->quantized_weight();
    if (mw) {
      ASSERT_NE(dynamic_cast<const PackedLinear*>(b[i].second), nullptr);
      EXPECT_TRUE(at::equal(b[i].second->effective_weight(), mw->dequantize()));
      EXPECT_TRUE(at::equal(b[i].second->effective_weight(), a[i].second->effective_weight()));
      EXPECT_TRUE(at::equal(b[i].second->quantized_weight()->w_int, mw->w_int));
    } else {
      EXPECT_EQ(b[i].second->method(), "float");
      EXPECT_TRUE(at::equal(b[i].second->effective_weight(), a[i].second->effective_weight()));
    }
  }
  for (const auto& [name, t] : src.named_float_parameters()) {
    bool found = false;
    for (const auto& [n2, t2] : packed.named_float_parameters())
      if (n2 == name) {
        found = true;
        EXPECT_TRUE(at::equal(t, t2)) << name;
      }
    EXPECT_TRUE(found) << name;
  }
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(PackedExport, RoundTripIsLosslessAndComputesTheSameLogits) {
  test::TempDir dir;
  at::NoGradGuard ng;
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE(testing::Message() << bits << "-bit");
    const auto run = tiny_run("l4q", bits, bits);
    const auto out = dir.file("export-" + std::to_string(bits));
    const auto rep = export_l4q(run, out, {});
    EXPECT_EQ(rep.format, "l4q");
    EXPECT_EQ(rep.quantized_layers, 14);
    EXPECT_EQ(rep.float_layers, 0);
    EXPECT_EQ(rep.max_weight_error, 0.0);
    EXPECT_GT(rep.bytes, 0u);
    EXPECT_TRUE(fs::is_regular_file(fs::path(out) / "tokenizer.model"));
    EXPECT_TRUE(is_packed_model(out));
    EXPECT_FALSE(is_packed_model(dir.path()));

    // config.json: the documented quantization_config; down_proj (in 48) overridden to one group.
    const auto cfg = nlohmann::json::parse(std::ifstream(fs::path(out) / "config.json"));
    const auto& q = cfg.at("quantization_config");
    EXPECT_EQ(q.at("quant_method"), "l4q");
    EXPECT_EQ(q.at("format_version"), 1);
    EXPECT_EQ(q.at("bits"), bits);
    EXPECT_EQ(q.at("group_size"), 32);
    EXPECT_EQ(q.at("overrides").at("model.layers.1.mlp.down_proj").at("group_size"), 48);
    EXPECT_EQ(q.at("overrides").size(), 2u);
    // Tensor names and dtypes of the documented layout.
    const auto f = SafetensorsFile::open(out + "/model.safetensors");
    const auto& qi = f.info("model.layers.0.mlp.down_proj.qweight");
    EXPECT_EQ(qi.dtype, SafetensorsDtype::U8);
    EXPECT_EQ(qi.shape, (std::vector<int64_t>{32, 2 * 32 * bits / 8}));  // 48 -> 2 blocks
    EXPECT_EQ(f.info("model.layers.0.mlp.down_proj.scales").shape, (std::vector<int64_t>{32, 1}));
    EXPECT_EQ(f.info("model.layers.0.self_attn.q_proj.offsets").dtype, SafetensorsDtype::F32);
    EXPECT_EQ(f.find("model.layers.0.self_attn.q_proj.weight"), nullptr);

    auto pm = load_packed_model(out);
    ASSERT_NE(pm.tokenizer, nullptr);
    EXPECT_EQ(pm.tokenizer->vocab_size(), 512);
    EXPECT_EQ(pm.config.hidden_size, 32);
    EXPECT_NE(pm.quantization_json.find("\"l4q\""), std::string::npos);
    expect_same_weights(*run.model, *pm.model);

    // Prefill (tiled GEMM path) and KV-cached decode (fused kernel, one row at a time).
    const auto tokens = at::randint(0, 61, {2, 9}, at::TensorOptions().dtype(at::kLong));
    const auto ref = run.model->forward(tokens);
    EXPECT_LT(max_abs_diff(pm.model->forward(tokens), ref), 1e-4);
    KvCache cache;
    for (int64_t t = 0; t < tokens.size(1); ++t) {
      const auto step = pm.model->forward(tokens.narrow(1, t, 1), &cache);
      EXPECT_LT(max_abs_diff(step.squeeze(1), ref.select(1, t)), 1e-4) << "position " << t;
    }
  }
}

TEST(PackedExport, FloatMethodsExportFloatLayers) {
  test::TempDir dir;
  const auto run = tiny_run("lora", 4);
  const auto rep = export_l4q(run, dir.file("lora"), {});
  EXPECT_EQ(rep.quantized_layers, 0);
  EXPECT_EQ(rep.float_layers, 14);
  ASSERT_FALSE(rep.notes.empty());
  EXPECT_NE(rep.notes[0].find("float32"), std::string::npos);
  auto pm = load_packed_model(dir.file("lora"));
  expect_same_weights(*run.model, *pm.model);
  at::NoGradGuard ng;
  const auto tokens = at::randint(0, 61, {1, 5}, at::TensorOptions().dtype(at::kLong));
  EXPECT_LT(max_abs_diff(pm.model->forward(tokens), run.model->forward(tokens)), 1e-5);
}

TEST(PackedExport, RefusesExistingOutputAndUnsupportedBits) {
  test::TempDir dir;
  const auto run = tiny_run("l4q", 4);
  const auto out = dir.file("out");
  fs::create_directories(out);
  { std::ofstream(out + "/keep.txt") << "mine"; }
  test::expect_error([&] { export_l4q(run, out, {}); }, {out, "exists", "--force"});
  EXPECT_TRUE(fs::exists(out + "/keep.txt"));  // untouched
  ExportOptions force;
  force.force = true;
  export_l4q(run, out, force);
  EXPECT_FALSE(fs::exists(out + "/keep.txt"));
  EXPECT_TRUE(is_packed_model(out));
  // Nothing but the output is left in the parent (no temporary directories).
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) entries += e.path().filename() != "out";
  EXPECT_EQ(entries, 0);

  for (int bits : {5, 6, 7}) {
    const auto bad = tiny_run("l4q", bits);
    test::expect_error([&] { export_l4q(bad, dir.file("bad"), {}); },
                       {"q_proj", "2, 3, 4 or 8", std::to_string(bits)});
    EXPECT_FALSE(fs::exists(dir.file("bad")));
  }
  test::expect_error([&] { export_l4q(run, dir.file("no/such/parent"), {}); }, {"parent directory", "does not exist"});
}

// Rewrites model.safetensors of `src` into `dst` after `edit` changes the tensor list.
void rewrite(const std::string& src, const std::string& dst,
             const std::function<void(NamedTensors&)>& edit) {
  fs::create_directories(dst);
  fs::copy(src, dst, fs::copy_options::overwrite_existing | fs::copy_options::recursive);
  const auto f = SafetensorsFile::open(src + "/model.safetensors");
  NamedTensors ts;
  for (const auto& i : f.tensors()) ts.emplace_back(i.name, f.tensor(i.name).clone());
  edit(ts);
  write_safetensors(dst + "/model.safetensors", ts);
}

void edit_config(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  edit(j);
  std::ofstream(dir + "/config.json") << j.dump(2);
}

TEST(PackedExport, LoaderNamesWhatIsWrong) {
  test::TempDir dir;
  const auto good = dir.file("good");
  export_l4q(tiny_run("l4q", 4), good, {});
  const std::string q = "model.layers.0.self_attn.q_proj";
  rewrite(good, dir.file("a"), [&](NamedTensors& ts) {
    for (auto& [n, t] : ts)
      if (n == q + ".scales") t = t.narrow(1, 0, 0);
  });
  test::expect_error([&] { load_packed_model(dir.file("a")); },
                     {"model.safetensors", q + ".scales", "wrong shape", "expected [32, 1]", "got [32, 0]"});
  rewrite(good, dir.file("b"), [&](NamedTensors& ts) {
    for (auto& [n, t] : ts)
      if (n == q + ".qweight") t = t.to(at::kChar);
  });
  test::expect_error([&] { load_packed_model(dir.file("b")); }, {q + ".qweight", "wrong dtype", "expected U8", "got I8"});
  rewrite(good, dir.file("c"), [&](NamedTensors& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [&](auto& p) { return p.first == q + ".offsets"; }), ts.end());
  });
  test::expect_error([&] { load_packed_model(dir.file("c")); }, {"missing tensor", q + ".offsets", "F32 [32, 1]"});
  rewrite(good, dir.file("d"), [&](NamedTensors& ts) { ts.emplace_back("extra.weight", at::zeros({2})); });
  test::expect_error([&] { load_packed_model(dir.file("d")); }, {"unexpected tensor 'extra.weight'"});
  rewrite(good, dir.file("e"), [&](NamedTensors& ts) {
    for (auto& [n, t] : ts)
      if (n == q + ".scales") t = -t;
  });
  test::expect_error([&] { load_packed_model(dir.file("e")); }, {q, "scales", ">= 1e-08"});

  struct ConfigCase {
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> fragments;
  };
  const std::vector<ConfigCase> cases = {
      {[](auto& j) { j["quantization_config"]["bits"] = 5; }, {"quantization_config", "bits", "2, 3, 4 or 8", "5"}},
      {[](auto& j) { j["quantization_config"]["format_version"] = 2; }, {"format_version", "reads version 1", "got 2"}},
      {[](auto& j) { j["quantization_config"]["quant_method"] = "gptq"; }, {"quant_method", "\"l4q\"", "gptq"}},
      {[](auto& j) { j["quantization_config"]["group_size"] = 24; }, {"group_size 24", "does not divide", "32"}},
      {[](auto& j) { j["quantization_config"]["overrides"]["model.layers.9.mlp.up_proj"] = {{"bits", 2}}; },
       {"overrides", "model.layers.9.mlp.up_proj", "not a projection"}},
      {[](auto& j) { j["quantization_config"]["bits"] = 3; }, {"qweight", "wrong shape"}},
      {[](auto& j) { j.erase("quantization_config"); }, {"quantization_config", "missing"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    const auto d = dir.file("cfg" + std::to_string(i));
    fs::copy(good, d, fs::copy_options::recursive);
    edit_config(d, cases[i].edit);
    try {
      load_packed_model(d);
      ADD_FAILURE() << "expected l4q::Error";
    } catch (const Error& e) {
      for (const auto& frag : cases[i].fragments)
        EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what() << " lacks " << frag;
    }
  }
  test::expect_error([&] { load_packed_model(dir.file("nothing")); }, {"nothing", "not a directory"});
}

// Seeded mutations of a valid export's files: each load succeeds or throws l4q::Error.
TEST(PackedExport, CorruptFilesGiveErrors) {
  test::TempDir dir{/*in_memory=*/true};
  const auto good = dir.file("good");
  export_l4q(tiny_run("l4q", 3), good, {});
  const auto bad = dir.file("bad");
  fs::copy(good, bad, fs::copy_options::recursive);
  std::mt19937_64 rng(2024);
  int loaded = 0, refused = 0;
  constexpr int kCases = 300;
  for (int i = 0; i < kCases; ++i) {
    const char* file = (i % 4 == 3) ? "config.json" : "model.safetensors";
    auto bytes = test::read_bytes(good + "/" + file);
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      bytes.resize(rng() % bytes.size());  // truncate
    } else if (kind == 1) {
      for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) bytes[rng() % bytes.size()] ^= uint8_t(1u << (rng() % 8));
    } else if (kind == 2) {
      // Bytes in the header (JSON) or config, where structure lives.
      const size_t lim = std::min<size_t>(bytes.size(), 2048);
      for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) bytes[rng() % lim] = static_cast<uint8_t>(rng());
    } else {
      const size_t at = rng() % bytes.size(), n = 1 + rng() % 16;
      bytes.erase(bytes.begin() + at, bytes.begin() + std::min(bytes.size(), at + n));
    }
    test::write_bytes(bad + "/" + file, bytes);
    try {
      auto pm = load_packed_model(bad);
      at::NoGradGuard ng;
      pm.model->forward(at::zeros({1, 2}, at::kLong));
      ++loaded;
    } catch (const Error&) {
      ++refused;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "case " << i << " (" << file << "): non-l4q exception: " << e.what();
    }
    fs::copy_file(good + "/" + file, bad + "/" + file, fs::copy_options::overwrite_existing);
  }
  EXPECT_GT(refused, kCases / 2);
  EXPECT_GT(loaded, 0);  // flips inside packed codes or float data still load
}

// A real (two-step) l4q training run on stories260K: 3-bit, group 32, down_proj (in 172) one
// group per row. The export reproduces every W_q and the perplexity of the float-after-merge,
// fake-quant and packed forms agree.
TEST(PackedExport, TrainedStories260KRunExportsLosslessly) {
  test::TempDir dir;
  const auto run_dir = dir.file("run");
  const auto text = std::string(R"({
    "model": ")") + asset("assets/stories260K/stories260K.gguf") + R"(",
    "method": "l4q", "lora": {"rank": 2, "alpha": 4},
    "quant": {"bits": 3, "group_size": 32, "indivisible": "per-channel"},
    "data": {"train": ")" + asset("assets/alpaca/alpaca_en_demo.json") + R"(",
             "val_fraction": 0.2, "max_length": 160, "max_records": 40},
    "optim": {"lr": 1e-2, "quant_lr": 1e-3, "warmup_steps": 1},
    "batch_size": 2, "grad_accum": 1, "max_steps": 2, "log_every": 1, "eval_batches": 1,
    "seed": 3, "threads": 1, "output_dir": ")" + run_dir + R"("
  })";
  TrainerOptions o;
  o.progress = false;
  o.quiet = true;
  train(parse_train_config(text, "test"), o);
  const auto run = load_trained_run(run_dir);
  const auto out = dir.file("export");
  const auto rep = export_l4q(run, out, {});
  EXPECT_EQ(rep.quantized_layers, 5 * 7);
  EXPECT_EQ(rep.max_weight_error, 0.0);
  auto pm = load_packed_model(out);
  expect_same_weights(*run.model, *pm.model);
  const auto& down = dynamic_cast<const PackedLinear&>(pm.model->linear("model.layers.0.mlp.down_proj"));
  EXPECT_EQ(down.packed().in, 172);
  EXPECT_EQ(down.packed().group_size, 172);

  // Perplexity of a token sequence under the three forms of the same model.
  at::NoGradGuard ng;
  const auto ids = pm.tokenizer->encode("Once upon a time there was a little girl who loved the sun.", true, false);
  auto tokens = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0);
  auto nll = [&](const LlamaModel& m) {
    const auto logits = m.forward(tokens.narrow(1, 0, tokens.size(1) - 1)).to(at::kDouble);
    const auto lp = at::log_softmax(logits, -1).gather(-1, tokens.narrow(1, 1, tokens.size(1) - 1).unsqueeze(-1));
    return -lp.mean().item<double>();
  };
  const LlamaModel merged(run.model->config(), run.model->effective_state_dict());
  const double p_fake = std::exp(nll(*run.model)), p_packed = std::exp(nll(*pm.model)), p_float = std::exp(nll(merged));
  EXPECT_LT(std::abs(p_packed - p_fake) / p_fake, 1e-4) << p_packed << " vs " << p_fake;
  EXPECT_LT(std::abs(p_float - p_fake) / p_fake, 1e-4) << p_float << " vs " << p_fake;
  // Decoding token by token (fused kernel) gives the same logits as the fake-quant prefill.
  KvCache cache;
  const auto ref = run.model->forward(tokens);
  for (int64_t t = 0; t < tokens.size(1); ++t)
    EXPECT_LT(max_abs_diff(pm.model->forward(tokens.narrow(1, t, 1), &cache).squeeze(1), ref.select(1, t)), 1e-4);
}

}  // namespace
}  // namespace l4q
