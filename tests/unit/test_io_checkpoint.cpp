// load_checkpoint / save_hf_directory: the real stories260K in both its forms, exact round
// trips through every format, the q/k permutation, tensor name/shape checks with their
// messages, zero-copy loading, and the l4q-convert tool.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "l4q/io/checkpoint.h"
#include "l4q/io/gguf.h"
#include "l4q/io/hf_config.h"
#include "l4q/io/qk_layout.h"
#include "l4q/memory.h"
#include "l4q/text/tokenizer.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::expect_error;
using test::TempDir;

TEST(QkLayout, MovesInterleavedRowsToRotateHalf) {
  const int64_t heads = 2, hd = 6;
  const auto w = at::arange(heads * hd, at::kFloat).view({heads * hd, 1}).repeat({1, 3});
  const auto h = interleaved_to_rotate_half(w, heads);
  for (int64_t head = 0; head < heads; ++head)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t c = 0; c < 2; ++c)  // interleaved row 2i+c -> row c*hd/2 + i
        EXPECT_EQ(h[head * hd + c * (hd / 2) + i][0].item<float>(), float(head * hd + 2 * i + c));
  EXPECT_TRUE(at::equal(rotate_half_to_interleaved(h, heads), w));
  expect_error([&] { interleaved_to_rotate_half(w, 5); }, {"12 rows", "n_heads (5)"});
  expect_error([&] { interleaved_to_rotate_half(at::zeros({6, 2}), 2); }, {"even size"});
}

TEST(Checkpoint, Stories260KFromGgufAndLlama2cAgree) {
  const auto g = load_checkpoint(test::asset("stories260K.gguf"));
  const auto b = load_checkpoint(test::asset("stories260K.bin"));
  for (const auto* ck : {&g, &b}) {
    EXPECT_EQ(ck->config.hidden_size, 64);
    EXPECT_EQ(ck->config.intermediate_size, 172);
    EXPECT_EQ(ck->config.num_hidden_layers, 5);
    EXPECT_EQ(ck->config.num_attention_heads, 8);
    EXPECT_EQ(ck->config.num_key_value_heads, 4);
    EXPECT_EQ(ck->config.vocab_size, 512);
    EXPECT_EQ(ck->config.head_dim, 8);
    EXPECT_TRUE(ck->config.tie_word_embeddings);
    EXPECT_EQ(ck->tensors.size(), 1u + 5 * 9 + 1);
  }
  EXPECT_EQ(g.config.rms_norm_eps, b.config.rms_norm_eps);
  test::expect_same_tensors(g, b);  // bit-identical after both permutations

  // The permutation itself, against the raw GGUF rows: HF row c*4+i of head h is GGUF row 2i+c.
  const auto raw = GgufFile::open(test::asset("stories260K.gguf")).tensor_f32("blk.2.attn_k.weight");
  const auto& k = g.get("model.layers.2.self_attn.k_proj.weight");
  ASSERT_EQ(raw.sizes(), k.sizes());
  for (int64_t h = 0; h < 4; ++h)
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t c = 0; c < 2; ++c) EXPECT_TRUE(at::equal(k[h * 8 + c * 4 + i], raw[h * 8 + 2 * i + c]));
  EXPECT_FALSE(at::equal(k, raw));
}

TEST(Checkpoint, GgufToHfToLoadIsExact) {
  TempDir dir;
  const auto g = load_checkpoint(test::asset("stories260K.gguf"));
  save_hf_directory(g, dir.path(), test::asset("tok512.model"));
  EXPECT_TRUE(std::filesystem::exists(dir.file("config.json")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("model.safetensors")));
  EXPECT_EQ(test::read_bytes(dir.file("tokenizer.model")), test::read_bytes(test::asset("tok512.model")));
  const auto h = load_checkpoint(dir.path());
  test::expect_same_config(h.config, g.config);
  test::expect_same_tensors(h, g);
  const auto f = SafetensorsFile::open(dir.file("model.safetensors"));
  EXPECT_EQ(f.find("lm_head.weight"), nullptr);  // tied: not stored
  EXPECT_EQ(f.metadata().at("format"), "pt");
  // Also reachable through the file names inside the directory.
  test::expect_same_tensors(load_checkpoint(dir.file("model.safetensors")), g);
  test::expect_same_tensors(load_checkpoint(dir.file("config.json")), g);
}

TEST(Checkpoint, RoundTripsThroughEveryFormat) {
  for (const bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    TempDir dir;
    auto ck = test::random_checkpoint(test::tiny_config(tied), tied ? 21 : 22);
    ck.config.max_position_embeddings = 16;  // llama2.c stores seq_len
    // HF directory.
    save_hf_directory(ck, dir.file("hf"));
    const auto hf = load_checkpoint(dir.file("hf"));
    test::expect_same_config(hf.config, ck.config);
    test::expect_same_tensors(hf, ck);
    // Sharded HF directory.
    save_hf_directory(ck, dir.file("sharded"), "", 20000);
    EXPECT_TRUE(std::filesystem::exists(dir.file("sharded/model.safetensors.index.json")));
    EXPECT_FALSE(std::filesystem::exists(dir.file("sharded/model.safetensors")));
    test::expect_same_tensors(load_checkpoint(dir.file("sharded")), ck);
    // GGUF (F32: exact) written llama.cpp style with interleaved q/k.
    test::write_llama_gguf(dir.file("m.gguf"), ck);
    const auto gg = load_checkpoint(dir.file("m.gguf"));
    test::expect_same_config(gg.config, ck.config);
    test::expect_same_tensors(gg, ck);
    // llama2.c.
    test::write_llama2c(dir.file("m.bin"), ck, 16);
    const auto lc = load_checkpoint(dir.file("m.bin"));
    test::expect_same_config(lc.config, ck.config);
    test::expect_same_tensors(lc, ck);
  }
}

TEST(Checkpoint, DequantizesGgufTypesAndConvertsHalfSafetensors) {
  TempDir dir;
  const auto ck = test::random_checkpoint(test::tiny_config(false), 23);
  for (const auto type : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1}) {
    SCOPED_TRACE(to_string(type));
    test::write_llama_gguf(dir.file("q.gguf"), ck, type);
    const auto raw = GgufFile::open(dir.file("q.gguf"));
    const auto got = load_checkpoint(dir.file("q.gguf"));
    for (const auto& [name, t] : got.tensors) {
      ASSERT_EQ(t.scalar_type(), at::kFloat);
      auto want = raw.tensor_f32(gguf_name_from_hf(name));  // the reader's own dequantization
      if (name.find(".q_proj.") != std::string::npos) want = interleaved_to_rotate_half(want, 4);
      if (name.find(".k_proj.") != std::string::npos) want = interleaved_to_rotate_half(want, 2);
      EXPECT_TRUE(at::equal(t, want)) << name;
      const double tol = type == GgmlType::Q4_0 || type == GgmlType::Q4_1 ? 0.5 : 0.05;
      EXPECT_TRUE(at::allclose(t, ck.get(name), 0, tol)) << name;
    }
  }
  // HF directory with bf16 and f16 weights: converted to fp32 exactly.
  for (const auto dt : {at::kBFloat16, at::kHalf}) {
    NamedTensors half;
    for (const auto& [n, t] : ck.tensors) half.emplace_back(n, t.to(dt));
    std::filesystem::create_directories(dir.file("half"));
    write_safetensors(dir.file("half/model.safetensors"), half);
    test::write_text(dir.file("half/config.json"), to_hf_config_json(ck.config));
    const auto got = load_checkpoint(dir.file("half"));
    for (size_t i = 0; i < half.size(); ++i)
      EXPECT_TRUE(at::equal(got.tensors[i].second, half[i].second.to(at::kFloat))) << half[i].first;
  }
}

TEST(Checkpoint, LoadsFp32WithoutCopyingAndHalfWithOneCopy) {
  TempDir dir;
  const auto ck = test::random_checkpoint(test::tiny_config(false), 24);
  int64_t fp32_bytes = 0;
  for (const auto& nt : ck.tensors) fp32_bytes += nt.second.numel() * 4;
  save_hf_directory(ck, dir.file("f32"));
  {
    MemoryMeter meter;
    const auto got = load_checkpoint(dir.file("f32"));
    EXPECT_EQ(meter.peak_bytes(), 0) << "fp32 tensors must alias the mapped file";
  }
  NamedTensors half;
  for (const auto& [n, t] : ck.tensors) half.emplace_back(n, t.to(at::kBFloat16));
  std::filesystem::create_directories(dir.file("bf16"));
  write_safetensors(dir.file("bf16/model.safetensors"), half);
  test::write_text(dir.file("bf16/config.json"), to_hf_config_json(ck.config));
  MemoryMeter meter;
  const auto got = load_checkpoint(dir.file("bf16"));
  EXPECT_EQ(meter.live_bytes(), fp32_bytes);  // exactly one fp32 buffer per tensor
  EXPECT_LE(meter.peak_bytes(), fp32_bytes + 64 * 1024);
}

TEST(Checkpoint, NamesMissingUnexpectedAndMisshapenTensors) {
  TempDir dir;
  const auto ck = test::random_checkpoint(test::tiny_config(false), 25);
  const auto cfg = to_hf_config_json(ck.config);
  const auto hf_dir = [&](const NamedTensors& ts) {
    std::filesystem::remove_all(dir.file("hf"));
    std::filesystem::create_directories(dir.file("hf"));
    write_safetensors(dir.file("hf/model.safetensors"), ts);
    test::write_text(dir.file("hf/config.json"), cfg);
    return dir.file("hf");
  };
  auto ts = ck.tensors;
  ts.erase(ts.begin() + 8);  // model.layers.0.mlp.up_proj.weight
  expect_error([&] { load_checkpoint(hf_dir(ts)); }, {"missing tensor 'model.layers.0.mlp.up_proj.weight'"});
  ts = ck.tensors;
  ts.emplace_back("model.layers.0.self_attn.q_proj.bias", at::zeros({32}));
  expect_error([&] { load_checkpoint(hf_dir(ts)); },
               {"model.safetensors", "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'"});
  ts = ck.tensors;
  ts.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", at::zeros({4}));  // ignored like HF
  EXPECT_EQ(load_checkpoint(hf_dir(ts)).tensors.size(), ck.tensors.size());
  ts = ck.tensors;
  ts[2].second = at::zeros({32, 16});  // q_proj
  expect_error([&] { load_checkpoint(hf_dir(ts)); },
               {"tensor 'model.layers.0.self_attn.q_proj.weight' has wrong shape; expected [32, 32], got [32, 16]"});
  ts = ck.tensors;
  ts[1].second = at::zeros({32}, at::kInt);
  expect_error([&] { load_checkpoint(hf_dir(ts)); },
               {"tensor 'model.layers.0.input_layernorm.weight': dtype I32 is not supported"});
  // Tied config but lm_head present.
  auto tied = ck.config;
  tied.tie_word_embeddings = true;
  hf_dir(ck.tensors);
  test::write_text(dir.file("hf/config.json"), to_hf_config_json(tied));
  expect_error([&] { load_checkpoint(dir.file("hf")); }, {"unexpected tensor 'lm_head.weight'", "tie_word_embeddings"});
  test::write_text(dir.file("hf/config.json"), R"({"hidden_size": "32"})");
  expect_error([&] { load_checkpoint(dir.file("hf")); }, {"config.json", "key 'hidden_size': expected an integer"});
  std::filesystem::remove(dir.file("hf/model.safetensors"));
  test::write_text(dir.file("hf/config.json"), cfg);
  expect_error([&] { load_checkpoint(dir.file("hf")); }, {"no model.safetensors or model.safetensors.index.json"});

  // GGUF: names and shapes in GGUF terms (ne order), as llama.cpp reports them.
  test::write_llama_gguf(dir.file("m.gguf"), ck, GgmlType::F32, "model.layers.1.mlp.gate_proj.weight");
  expect_error([&] { load_checkpoint(dir.file("m.gguf")); }, {"m.gguf: missing tensor 'blk.1.ffn_gate.weight'"});
  test::write_llama_gguf(dir.file("m.gguf"), ck, GgmlType::F32, "", true);
  expect_error([&] { load_checkpoint(dir.file("m.gguf")); }, {"unexpected tensor 'blk.0.attn_extra.weight'"});
  auto bad = ck;
  bad.tensors[3].second = at::zeros({32, 32});  // k_proj should be [16, 32]
  test::write_llama_gguf(dir.file("m.gguf"), bad);
  expect_error([&] { load_checkpoint(dir.file("m.gguf")); },
               {"tensor 'blk.0.attn_k.weight' has wrong shape; expected [32, 16], got [32, 32]"});

  // Neither format.
  test::write_text(dir.file("x.bin"), "hello world, not a model at all");
  expect_error([&] { load_checkpoint(dir.file("x.bin")); }, {"x.bin: not a GGUF file, an HF directory or a valid llama2.c"});
  expect_error([&] { load_checkpoint(dir.file("nothing")); }, {"nothing: no such file or directory"});
}

TEST(Checkpoint, SaveValidatesFirst) {
  TempDir dir;
  auto ck = test::random_checkpoint(test::tiny_config(false), 26);
  ck.tensors.pop_back();
  expect_error([&] { save_hf_directory(ck, dir.file("out")); }, {"missing tensor 'lm_head.weight'"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));
  ck = test::random_checkpoint(test::tiny_config(false), 26);
  ck.tensors[0].second = ck.tensors[0].second.to(at::kHalf);
  expect_error([&] { save_hf_directory(ck, dir.file("out")); }, {"'model.embed_tokens.weight': expected float32"});
  ck = test::random_checkpoint(test::tiny_config(false), 26);
  expect_error([&] { save_hf_directory(ck, dir.file("out"), dir.file("no.model")); }, {"is not a file"});
  std::reverse(ck.tensors.begin(), ck.tensors.end());  // any order is accepted, files are canonical
  save_hf_directory(ck, dir.file("out"));
  EXPECT_EQ(load_checkpoint(dir.file("out")).tensors.front().first, "model.embed_tokens.weight");
}

// The tools directory of this build: <build>/tests/l4q_unit_tests -> <build>/tools.
std::string tool_path(const std::string& name) {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return (std::filesystem::path(buf).parent_path().parent_path() / "tools" / name).string();
}

int run(const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()); }

TEST(ConvertTool, ConvertsGgufAndLlama2cAndRefusesToOverwrite) {
  const auto tool = tool_path("l4q-convert");
  if (!std::filesystem::exists(tool)) GTEST_SKIP() << "l4q-convert not built next to the tests (" << tool << ")";
  TempDir dir;
  const auto ref = load_checkpoint(test::asset("stories260K.gguf"));
  ASSERT_EQ(run(tool + " --in " + test::asset("stories260K.gguf") + " --out " + dir.file("g") + " --tokenizer " +
                test::asset("tok512.model")),
            0);
  test::expect_same_tensors(load_checkpoint(dir.file("g")), ref);
  EXPECT_TRUE(std::filesystem::exists(dir.file("g/tokenizer.model")));
  const auto before = test::read_bytes(dir.file("g/config.json"));
  // Existing output: refused without --force, untouched.
  EXPECT_NE(run(tool + " --in " + test::asset("stories260K.bin") + " --out " + dir.file("g")), 0);
  EXPECT_EQ(test::read_bytes(dir.file("g/config.json")), before);
  // With --force, from the llama2.c file: same weights, context length from the .bin.
  ASSERT_EQ(run(tool + " --in " + test::asset("stories260K.bin") + " --out " + dir.file("g") + " --force"), 0);
  const auto b = load_checkpoint(dir.file("g"));
  test::expect_same_tensors(b, ref);
  EXPECT_EQ(b.config.max_position_embeddings, 512);
  // A GGUF without --tokenizer: tokenizer.model is built from its vocabulary and encodes like
  // the bundled tok512.model.
  ASSERT_EQ(run(tool + " --in " + test::asset("stories260K.gguf") + " --out " + dir.file("t")), 0);
  const auto from_gguf = load_tokenizer(dir.file("t/tokenizer.model"));
  const auto tok512 = load_tokenizer(test::asset("tok512.model"));
  for (const char* text : {"Once upon a time, there was a little girl named Lily.", "Hello  world!\n\t\xe2\x9c\x93"})
    EXPECT_EQ(from_gguf->encode(text, true), tok512->encode(text, true)) << text;
  EXPECT_NE(run(tool + " --in " + dir.file("missing.gguf") + " --out " + dir.file("h")), 0);
  EXPECT_FALSE(std::filesystem::exists(dir.file("h")));
}

}  // namespace
}  // namespace l4q
