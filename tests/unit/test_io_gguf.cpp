// GGUF reader/writer and the ggml block formats: layouts checked against hand-computed bytes,
// writer -> reader round trips for every metadata type and tensor type, the real
// stories260K.gguf, and each malformed-file rule with its message.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "l4q/io/gguf.h"
#include "l4q/io/gguf_llama.h"
#include "l4q/quant/ggml_blocks.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::expect_error;
using test::put;
using test::put_str;
using test::TempDir;

// ---------------------------------------------------------------------------------------------
// ggml blocks
// ---------------------------------------------------------------------------------------------

TEST(GgmlBlocks, TraitsMatchGgml) {
  EXPECT_EQ(sizeof(BlockQ4_0), 18u);
  EXPECT_EQ(sizeof(BlockQ4_1), 20u);
  EXPECT_EQ(sizeof(BlockQ8_0), 34u);
  const auto& q4k = ggml_traits(GgmlType::Q4_K);
  EXPECT_EQ(q4k.block_size, 256);
  EXPECT_EQ(q4k.type_size, 144);
  EXPECT_EQ(ggml_traits(GgmlType::Q6_K).type_size, 210);
  EXPECT_EQ(ggml_traits(GgmlType::BF16).type_size, 2);
  EXPECT_EQ(find_ggml_type(4), nullptr);  // retired Q4_2
  EXPECT_EQ(find_ggml_type(31), nullptr);
  EXPECT_EQ(parse_ggml_type("q4_1"), GgmlType::Q4_1);
  expect_error([] { parse_ggml_type("Q9"); }, {"'Q9'"});
  EXPECT_EQ(ggml_nbytes(GgmlType::Q4_1, 64, "t"), 40u);
  expect_error([] { ggml_nbytes(GgmlType::Q8_0, 40, "w"); }, {"w: 40 elements of type Q8_0", "block size 32"});
}

TEST(GgmlBlocks, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(fp32_to_fp16(1e6f), 0x7c00);                      // overflow -> inf
  EXPECT_EQ(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);        // tie -> even
  EXPECT_EQ(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);        // tie -> even (up)
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));    // subnormal
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(fp32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie -> even
  EXPECT_EQ(fp32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_fp32(0xc040), -3.0f);
}

TEST(GgmlBlocks, NibbleOrderAndFormulas) {
  // One hand-built block per type, decoded by the documented formula.
  BlockQ4_0 q40{};
  q40.d = fp32_to_fp16(0.5f);
  for (int j = 0; j < 16; ++j) q40.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  BlockQ4_1 q41{};
  q41.d = fp32_to_fp16(0.25f);
  q41.m = fp32_to_fp16(-1.0f);
  std::memcpy(q41.qs, q40.qs, 16);
  BlockQ8_0 q80{};
  q80.d = fp32_to_fp16(2.0f);
  for (int j = 0; j < 32; ++j) q80.qs[j] = static_cast<int8_t>(j - 16);
  float y[32];
  ggml_traits(GgmlType::Q4_0).to_float(&q40, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f);
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f);
  }
  ggml_traits(GgmlType::Q4_1).to_float(&q41, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.0f);
    EXPECT_EQ(y[j + 16], (15 - j) * 0.25f - 1.0f);
  }
  ggml_traits(GgmlType::Q8_0).to_float(&q80, y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j - 16) * 2.0f);
}

TEST(GgmlBlocks, ReferenceQuantizersAreExactOnTheirGrid) {
  // Values on each format's grid survive quantize -> dequantize bit for bit.
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = static_cast<float>((i * 7) % 16) * 0.125f - 0.5f;  // Q4_1 grid
  x[0] = -0.5f, x[1] = 1.375f;  // pin min and max of block 0
  x[32] = -0.5f, x[33] = 1.375f;
  std::vector<uint8_t> packed(40);
  std::vector<float> y(64);
  ggml_traits(GgmlType::Q4_1).from_float(x.data(), packed.data(), 64);
  ggml_traits(GgmlType::Q4_1).to_float(packed.data(), y.data(), 64);
  EXPECT_EQ(x, y);
  for (int i = 0; i < 64; ++i) x[i] = static_cast<float>((i * 5) % 255 - 127) / 4;  // Q8_0 grid, d = 1/4
  x[0] = x[32] = -127.0f / 4;
  packed.resize(68);
  ggml_traits(GgmlType::Q8_0).from_float(x.data(), packed.data(), 64);
  ggml_traits(GgmlType::Q8_0).to_float(packed.data(), y.data(), 64);
  EXPECT_EQ(x, y);
  for (int i = 0; i < 64; ++i) x[i] = static_cast<float>((i * 3) % 16 - 8) * 0.5f;  // Q4_0 grid, d = 0.5 (max -4)
  x[0] = x[32] = -4.0f;
  packed.resize(36);
  ggml_traits(GgmlType::Q4_0).from_float(x.data(), packed.data(), 64);
  ggml_traits(GgmlType::Q4_0).to_float(packed.data(), y.data(), 64);
  EXPECT_EQ(x, y);
}

TEST(GgmlBlocks, QuantizationErrorIsWithinHalfAStep) {
  at::manual_seed(3);
  const auto x = at::randn({8 * 32});
  const auto* xp = x.data_ptr<float>();
  for (const auto type : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0}) {
    const auto& t = ggml_traits(type);
    std::vector<uint8_t> packed(ggml_nbytes(type, x.numel(), "x"));
    std::vector<float> y(x.numel());
    t.from_float(xp, packed.data(), x.numel());
    t.to_float(packed.data(), y.data(), x.numel());
    for (int64_t b = 0; b < x.numel() / 32; ++b) {
      const auto blk = x.slice(0, b * 32, b * 32 + 32);
      // Half a step, except Q4_0, whose codes -8..7 reach only 7/8 of the side opposite the
      // largest magnitude: up to one step there.
      const float bound = type == GgmlType::Q4_1 ? (blk.max() - blk.min()).item<float>() / 15 * 0.505f
                          : type == GgmlType::Q4_0 ? blk.abs().max().item<float>() / 8 * 1.005f
                                                   : blk.abs().max().item<float>() / 127 * 0.505f;
      for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(y[b * 32 + j] - xp[b * 32 + j]), bound) << t.name;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writer -> reader
// ---------------------------------------------------------------------------------------------

std::vector<std::pair<std::string, GgufValue>> every_value() {
  return {
      {"t.u8", GgufValue::of<uint8_t>(200)},
      {"t.i8", GgufValue::of<int8_t>(-100)},
      {"t.u16", GgufValue::of<uint16_t>(60000)},
      {"t.i16", GgufValue::of<int16_t>(-30000)},
      {"t.u32", GgufValue::of<uint32_t>(4000000000u)},
      {"t.i32", GgufValue::of<int32_t>(-2000000000)},
      {"t.f32", GgufValue::of<float>(1.25f)},
      {"t.bool", GgufValue::of<bool>(true)},
      {"t.str", GgufValue::of<std::string>("h\xc3\xa9llo")},
      {"t.u64", GgufValue::of<uint64_t>(1ull << 60)},
      {"t.i64", GgufValue::of<int64_t>(-(1ll << 60))},
      {"t.f64", GgufValue::of<double>(0.1)},
      {"t.arr_str", GgufValue::array_of<std::string>({"a", "", "\xe2\x96\x81x"})},
      {"t.arr_f32", GgufValue::array_of<float>({0.5f, -1.0f})},
      {"t.arr_i32", GgufValue::array_of<int32_t>({1, 2, 6})},
      {"t.arr_u8", GgufValue::array_of<uint8_t>({})},
      {"t.arr_bool", GgufValue::array_of<bool>({true, false})},
      {"t.arr_u64", GgufValue::array_of<uint64_t>({1, 2})},
      {"t.arr_f64", GgufValue::array_of<double>({1e300})},
      {"t.arr_i8", GgufValue::array_of<int8_t>({-1})},
      {"t.arr_u16", GgufValue::array_of<uint16_t>({7})},
      {"t.arr_i16", GgufValue::array_of<int16_t>({-7})},
      {"t.arr_u32", GgufValue::array_of<uint32_t>({9})},
      {"t.arr_i64", GgufValue::array_of<int64_t>({-9})},
  };
}

GgufWriter every_value_type() {
  GgufWriter w;
  for (const auto& [k, v] : every_value()) w.set(k, v);
  return w;
}

TEST(Gguf, WriterRoundTripsEveryValueType) {
  TempDir dir;
  auto w = every_value_type();
  w.set_scalar<uint32_t>("t.u32", 7);  // replacing keeps the position
  w.write(dir.file("m.gguf"));
  const auto f = GgufFile::open(dir.file("m.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  ASSERT_EQ(f.metadata().size(), 24u);
  EXPECT_EQ(f.metadata()[4].first, "t.u32");
  EXPECT_EQ(f.get<uint32_t>("t.u32"), 7u);
  EXPECT_EQ(f.get<uint8_t>("t.u8"), 200);
  EXPECT_EQ(f.get<int8_t>("t.i8"), -100);
  EXPECT_EQ(f.get<uint16_t>("t.u16"), 60000);
  EXPECT_EQ(f.get<int16_t>("t.i16"), -30000);
  EXPECT_EQ(f.get<int32_t>("t.i32"), -2000000000);
  EXPECT_EQ(f.get<float>("t.f32"), 1.25f);
  EXPECT_EQ(f.get<bool>("t.bool"), true);
  EXPECT_EQ(f.get<std::string>("t.str"), "h\xc3\xa9llo");
  EXPECT_EQ(f.get<uint64_t>("t.u64"), 1ull << 60);
  EXPECT_EQ(f.get<int64_t>("t.i64"), -(1ll << 60));
  EXPECT_EQ(f.get<double>("t.f64"), 0.1);
  EXPECT_EQ(f.get_array<std::string>("t.arr_str"), (std::vector<std::string>{"a", "", "\xe2\x96\x81x"}));
  EXPECT_EQ(f.get_array<float>("t.arr_f32"), (std::vector<float>{0.5f, -1.0f}));
  EXPECT_EQ(f.get_array<int32_t>("t.arr_i32"), (std::vector<int32_t>{1, 2, 6}));
  EXPECT_TRUE(f.get_array<uint8_t>("t.arr_u8").empty());
  EXPECT_EQ(f.get_array<bool>("t.arr_bool"), (std::vector<bool>{true, false}));
  EXPECT_EQ(f.find("t.arr_str")->element_type(), GgufType::STRING);
  EXPECT_EQ(f.find("t.arr_str")->to_string(), "['a', '', '\xe2\x96\x81x']");
  // Every other entry equals what was written, in order.
  const auto ref = every_value();
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, ref[i].first);
    if (ref[i].first != "t.u32") EXPECT_TRUE(f.metadata()[i].second == ref[i].second) << ref[i].first;
  }
  EXPECT_FALSE(f.find("t.u32")->operator==(ref[4].second));
  // Element access and construction from scalars agree with the typed accessors.
  const auto* arr = f.find("t.arr_i32");
  EXPECT_EQ(arr->size(), 3u);
  EXPECT_EQ(std::get<int32_t>(arr->element(2)), 6);
  EXPECT_TRUE(*arr == GgufValue::array_of_scalars(GgufType::INT32, arr->elements()));
  expect_error([&] { GgufValue::array_of_scalars(GgufType::INT32, {GgufValue::Scalar(1.0f)}); },
               {"element 0 has another type"});
  expect_error([&] { arr->element(3); }, {"element 3 out of range"});
}

TEST(Gguf, ReadsVersion2) {
  // v2 has v3's layout (v3 only added big-endian files): the same bytes with version 2 read.
  TempDir dir;
  GgufWriter w;
  w.set_scalar<std::string>("general.name", "v2");
  w.add_tensor("t", at::arange(4, at::kFloat), GgmlType::F32);
  w.write(dir.file("v.gguf"));
  auto b = test::read_bytes(dir.file("v.gguf"));
  b[4] = 2;
  test::write_bytes(dir.file("v2.gguf"), b);
  const auto f = GgufFile::open(dir.file("v2.gguf"));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get<std::string>("general.name"), "v2");
  EXPECT_TRUE(at::equal(f.tensor_f32("t"), at::arange(4, at::kFloat)));
}

TEST(Gguf, TypedAccessorsNameKeyAndTypes) {
  TempDir dir;
  every_value_type().write(dir.file("m.gguf"));
  const auto f = GgufFile::open(dir.file("m.gguf"));
  expect_error([&] { f.get<uint32_t>("t.f32"); },
               {"m.gguf", "key 't.f32' has wrong type: expected UINT32, got FLOAT32"});
  expect_error([&] { f.get<std::string>("t.arr_str"); }, {"key 't.arr_str'", "expected STRING, got ARRAY of STRING"});
  expect_error([&] { f.get_array<int32_t>("t.arr_f32"); }, {"expected ARRAY of INT32, got ARRAY of FLOAT32"});
  expect_error([&] { f.get_array<int32_t>("t.i32"); }, {"expected ARRAY of INT32, got INT32"});
  expect_error([&] { f.get<float>("nope"); }, {"m.gguf: missing key 'nope'"});
  EXPECT_EQ(f.get_or<float>("nope", 3.0f), 3.0f);
  expect_error([&] { f.get_or<float>("t.f64", 3.0f); }, {"expected FLOAT32, got FLOAT64"});
}

TEST(Gguf, WriterRoundTripsEveryTensorType) {
  TempDir dir;
  at::manual_seed(11);
  const auto w32 = at::randn({3, 64});
  GgufWriter w;
  w.set_scalar<uint32_t>("general.alignment", 64);
  const GgmlType types[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0};
  for (const auto t : types) w.add_tensor("w." + to_string(t), w32, t);
  w.add_tensor("norm", at::arange(5, at::kFloat), GgmlType::F32);
  // Raw bytes: one Q4_1 block with d = 1, m = 0, codes 0..15 / 15..0.
  BlockQ4_1 blk{};
  blk.d = fp32_to_fp16(1.0f);
  for (int j = 0; j < 16; ++j) blk.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  std::vector<uint8_t> raw(sizeof blk);
  std::memcpy(raw.data(), &blk, sizeof blk);
  w.add_tensor_bytes("raw", GgmlType::Q4_1, {1, 32}, raw);
  w.write(dir.file("t.gguf"));

  const auto f = GgufFile::open(dir.file("t.gguf"));
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_EQ(f.tensors().size(), 8u);
  for (const auto& ti : f.tensors()) EXPECT_EQ(ti.offset % 64, 0u) << ti.name;
  for (const auto t : types) {
    const auto& ti = f.tensor_info("w." + to_string(t));
    EXPECT_EQ(ti.type, t);
    EXPECT_EQ(ti.ne, (std::vector<int64_t>{64, 3}));  // ne reversed
    EXPECT_EQ(ti.shape(), (std::vector<int64_t>{3, 64}));
    // Expected: the traits' own quantize -> dequantize of the same values.
    std::vector<uint8_t> packed(ggml_nbytes(t, w32.numel(), "w"));
    auto ref = at::empty({3, 64});
    ggml_traits(t).from_float(w32.data_ptr<float>(), packed.data(), w32.numel());
    ggml_traits(t).to_float(packed.data(), ref.data_ptr<float>(), w32.numel());
    EXPECT_EQ(0, std::memcmp(f.data(ti), packed.data(), packed.size())) << to_string(t);
    EXPECT_TRUE(at::equal(f.tensor_f32(ti.name), ref)) << to_string(t);
  }
  EXPECT_TRUE(at::equal(f.tensor_f32("w.F32"), w32));
  EXPECT_TRUE(at::allclose(f.tensor_f32("w.Q8_0"), w32, 0, 0.02));
  EXPECT_TRUE(at::equal(f.tensor_f32("norm"), at::arange(5, at::kFloat)));
  const auto r = f.tensor_f32("raw");
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(r[0][j].item<float>(), float(j));
    EXPECT_EQ(r[0][j + 16].item<float>(), float(15 - j));
  }
  // The F32 tensor is a view of the mapping.
  EXPECT_EQ(f.tensor_f32("w.F32").data_ptr(), static_cast<const void*>(f.data(f.tensor_info("w.F32"))));
}

TEST(Gguf, WriterRejectsBadTensors) {
  GgufWriter w;
  expect_error([&] { w.add_tensor("a", at::zeros({2, 30}), GgmlType::Q4_0); },
               {"tensor 'a'", "innermost dimension 30", "block size 32"});
  expect_error([&] { w.add_tensor(std::string(64, 'n'), at::zeros({2}), GgmlType::F32); }, {"name of 64 bytes"});
  expect_error([&] { w.add_tensor("k", at::zeros({256}), GgmlType::Q4_K); }, {"cannot quantize to Q4_K"});
  expect_error([&] { w.add_tensor_bytes("b", GgmlType::Q8_0, {32}, std::vector<uint8_t>(33)); },
               {"33 bytes given", "needs 34"});
  expect_error([&] { w.add_tensor("i", at::zeros({2}, at::kInt), GgmlType::F32); }, {"expected a float tensor"});
  w.add_tensor("x", at::zeros({2}), GgmlType::F32);
  expect_error([&] { w.add_tensor("x", at::zeros({2}), GgmlType::F32); }, {"tensor 'x': added twice"});
  w.set_scalar<uint32_t>("general.alignment", 48);
  TempDir dir;
  expect_error([&] { w.write(dir.file("a.gguf")); }, {"general.alignment 48: expected a power of two"});
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Gguf, ReadsStories260K) {
  const auto f = GgufFile::open(test::asset("stories260K.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 19u);
  EXPECT_EQ(f.tensors().size(), 48u);
  EXPECT_EQ(f.get<std::string>("general.architecture"), "llama");
  EXPECT_EQ(f.get<uint32_t>("llama.block_count"), 5u);
  EXPECT_EQ(f.get<uint32_t>("tokenizer.ggml.seperator_token_id"), 4294967295u);
  const auto tokens = f.get_array<std::string>("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(f.get_array<int32_t>("tokenizer.ggml.token_type").size(), 512u);
  const auto& q = f.tensor_info("blk.0.attn_q.weight");
  EXPECT_EQ(q.type, GgmlType::F32);
  EXPECT_EQ(q.ne, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(f.tensor_info("blk.0.attn_k.weight").ne, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(f.tensor_info("blk.0.ffn_down.weight").ne, (std::vector<int64_t>{172, 64}));
  const auto c = config_from_gguf(f);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);  // shortest decimal of the stored f32
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_TRUE(c.tie_word_embeddings);  // output.weight duplicates token_embd.weight
}

TEST(GgufLlama, NamesMapBothWays) {
  EXPECT_EQ(gguf_name_from_hf("model.layers.12.self_attn.q_proj.weight"), "blk.12.attn_q.weight");
  EXPECT_EQ(gguf_name_from_hf("model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight");
  EXPECT_EQ(gguf_name_from_hf("lm_head.weight"), "output.weight");
  EXPECT_EQ(hf_name_from_gguf("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(hf_name_from_gguf("token_embd.weight"), "model.embed_tokens.weight");
  for (const auto& [name, shape] : llama_tensor_shapes(test::tiny_config()))
    EXPECT_EQ(hf_name_from_gguf(gguf_name_from_hf(name)), name);
  expect_error([] { gguf_name_from_hf("model.layers.x.mlp.up_proj.weight"); }, {"not a LLaMA weight name"});
  expect_error([] { hf_name_from_gguf("blk.01.attn_q.weight"); }, {"not a LLaMA GGUF tensor name"});
  expect_error([] { hf_name_from_gguf("blk.1.attn_q.bias"); }, {"'blk.1.attn_q.bias'"});
}

TEST(GgufLlama, MetadataRoundTripsAndIsStrictlyTyped) {
  TempDir dir;
  auto c = test::tiny_config();
  c.rope_theta = 500000.0;
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 2.0;
  c.head_dim = 16;  // head_dim * heads != hidden: needs key_length
  GgufWriter w;
  add_llama_metadata(w, c);
  w.add_tensor("token_embd.weight", at::zeros({c.vocab_size, c.hidden_size}), GgmlType::F32);
  w.write(dir.file("c.gguf"));
  const auto back = config_from_gguf(GgufFile::open(dir.file("c.gguf")));
  test::expect_same_config(back, [&] { auto t = c; t.tie_word_embeddings = true; return t; }());

  GgufWriter bad;
  add_llama_metadata(bad, c);
  bad.set_scalar<int32_t>("llama.block_count", 2);
  bad.write(dir.file("bad.gguf"));
  expect_error([&] { config_from_gguf(GgufFile::open(dir.file("bad.gguf"))); },
               {"bad.gguf", "key 'llama.block_count' has wrong type: expected UINT32, got INT32"});
  GgufWriter rot;
  add_llama_metadata(rot, c);
  rot.set_scalar<uint32_t>("llama.rope.dimension_count", 8);
  rot.write(dir.file("rot.gguf"));
  expect_error([&] { config_from_gguf(GgufFile::open(dir.file("rot.gguf"))); },
               {"llama.rope.dimension_count 8: expected head_dim 16"});
  GgufWriter arch;
  add_llama_metadata(arch, c);
  arch.set_scalar<std::string>("general.architecture", "gpt2");
  arch.write(dir.file("arch.gguf"));
  expect_error([&] { config_from_gguf(GgufFile::open(dir.file("arch.gguf"))); },
               {"general.architecture 'gpt2': expected 'llama'"});
  c.rope_scaling.type = "llama3";
  expect_error([&] { add_llama_metadata(bad, c); }, {"llama3 rope scaling"});
}

// ---------------------------------------------------------------------------------------------
// Malformed files
// ---------------------------------------------------------------------------------------------

// Hand-assembled GGUF bytes.
struct Raw {
  std::vector<uint8_t> b;
  Raw(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b = {'G', 'G', 'U', 'F'};
    put<uint32_t>(b, version);
    put<uint64_t>(b, n_tensors);
    put<uint64_t>(b, n_kv);
  }
  Raw& kv_u32(const std::string& k, uint32_t v) {
    put_str(b, k);
    put<uint32_t>(b, 4);
    put<uint32_t>(b, v);
    return *this;
  }
  Raw& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    put_str(b, name);
    put<uint32_t>(b, static_cast<uint32_t>(ne.size()));
    for (auto n : ne) put<uint64_t>(b, n);
    put<uint32_t>(b, type);
    put<uint64_t>(b, offset);
    return *this;
  }
  Raw& pad(size_t align = 32) {
    b.resize((b.size() + align - 1) / align * align, 0);
    return *this;
  }
  Raw& zeros(size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
};

void expect_gguf_error(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> frags) {
  TempDir dir;
  test::write_bytes(dir.file("bad.gguf"), bytes);
  std::vector<std::string> all(frags);
  all.push_back("bad.gguf");
  try {
    GgufFile::open(dir.file("bad.gguf"));
    ADD_FAILURE() << "expected l4q::Error";
  } catch (const Error& e) {
    for (const auto& f : all) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(Gguf, RefusesMalformedHeaders) {
  expect_gguf_error({'G', 'G', 'M', 'L', 0, 0}, {"not a GGUF file"});
  expect_gguf_error(Raw(0, 0, 1).b, {"GGUF version 1 is not supported"});
  expect_gguf_error(Raw(0, 0, 0x03000000).b, {"version 50331648", "big-endian"});
  auto cut = Raw(0, 0).b;
  cut.resize(12);
  expect_gguf_error(cut, {"tensor_count: needs 8 bytes at offset 8"});
  expect_gguf_error(Raw(0, 1ull << 40).b, {"kv_count 1099511627776 cannot fit"});
  expect_gguf_error(Raw(1ull << 50, 0).b, {"tensor_count 1125899906842624 cannot fit"});
  auto dup = Raw(0, 2).kv_u32("a", 1).kv_u32("a", 2).b;
  expect_gguf_error(dup, {"duplicate key 'a'"});
}

TEST(Gguf, RefusesStringsAndArraysPastTheEnd) {
  // Key string whose length runs past the end of the file.
  Raw key(0, 1);
  put<uint64_t>(key.b, 1000);
  key.b.push_back('k');
  expect_gguf_error(key.b, {"key of metadata entry 0", "string of 1000 bytes", "runs past the end of the file"});
  // String value past the end.
  Raw str(0, 1);
  put_str(str.b, "general.name");
  put<uint32_t>(str.b, 8);
  put<uint64_t>(str.b, 1ull << 62);
  expect_gguf_error(str.b, {"key 'general.name'", "string of 4611686018427387904 bytes", "past the end"});
  // Array count past the end (fixed-size elements).
  Raw arr(0, 1);
  put_str(arr.b, "tokenizer.ggml.scores");
  put<uint32_t>(arr.b, 9);
  put<uint32_t>(arr.b, 6);
  put<uint64_t>(arr.b, 1000);
  put<float>(arr.b, 1.0f);
  expect_gguf_error(arr.b, {"key 'tokenizer.ggml.scores'", "array of 1000 FLOAT32 elements runs past the end"});
  // String array whose 3rd element runs past the end.
  Raw sarr(0, 1);
  put_str(sarr.b, "tokenizer.ggml.tokens");
  put<uint32_t>(sarr.b, 9);
  put<uint32_t>(sarr.b, 8);
  put<uint64_t>(sarr.b, 3);
  put_str(sarr.b, "a");
  put_str(sarr.b, "b");
  put<uint64_t>(sarr.b, 99);
  expect_gguf_error(sarr.b, {"key 'tokenizer.ggml.tokens' element 2", "string of 99 bytes", "past the end"});
  // Nested arrays and unknown types.
  Raw nest(0, 1);
  put_str(nest.b, "x");
  put<uint32_t>(nest.b, 9);
  put<uint32_t>(nest.b, 9);
  put<uint64_t>(nest.b, 0);
  expect_gguf_error(nest.b, {"key 'x': nested arrays are not supported"});
  Raw unk(0, 1);
  put_str(unk.b, "x");
  put<uint32_t>(unk.b, 13);
  put<uint32_t>(unk.b, 0);
  expect_gguf_error(unk.b, {"key 'x': unknown value type 13"});
  Raw barr(0, 1);
  put_str(barr.b, "flags");
  put<uint32_t>(barr.b, 9);
  put<uint32_t>(barr.b, 7);
  put<uint64_t>(barr.b, 3);
  barr.b.insert(barr.b.end(), {1, 0, 5});
  expect_gguf_error(barr.b, {"key 'flags' element 2: BOOL byte 5, expected 0 or 1"});
  Raw boolean(0, 1);
  put_str(boolean.b, "x");
  put<uint32_t>(boolean.b, 7);
  boolean.b.push_back(2);
  expect_gguf_error(boolean.b, {"key 'x': BOOL byte 2", "expected 0 or 1"});
}

TEST(Gguf, RefusesBadTensorInfos) {
  expect_gguf_error(Raw(1, 0).tensor(std::string(64, 'n'), {32}, 0, 0).pad().zeros(128).b,
                    {"name of 64 bytes, expected fewer than 64"});
  expect_gguf_error(Raw(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad().zeros(32).b,
                    {"tensor 't': n_dims 5, expected at most 4"});
  expect_gguf_error(Raw(1, 0).tensor("t", {32}, 4, 0).pad().zeros(32).b, {"tensor 't': unknown ggml type 4"});
  expect_gguf_error(Raw(1, 0).tensor("t", {30, 2}, 8, 0).pad().zeros(128).b,
                    {"tensor 't': ne[0] = 30 is not a multiple of the Q8_0 block size 32"});
  expect_gguf_error(Raw(1, 0).tensor("t", {1ull << 63}, 0, 0).pad().b, {"ne[0] = 9223372036854775808 is negative"});
  expect_gguf_error(Raw(1, 0).tensor("t", {1ull << 32, 1ull << 32}, 0, 0).pad().b, {"element count overflows"});
  expect_gguf_error(Raw(2, 0).tensor("a", {8}, 0, 0).tensor("b", {8}, 0, 0).pad().zeros(64).b,
                    {"tensor 'b': data offset 0, expected 32"});
  expect_gguf_error(Raw(2, 0).tensor("a", {8}, 0, 0).tensor("b", {8}, 0, 40).pad().zeros(64).b,
                    {"tensor 'b': data offset 40, expected 32"});
  expect_gguf_error(Raw(1, 0).tensor("a", {8}, 0, 0).pad().zeros(31).b,
                    {"tensor 'a': 32 bytes of F32 data", "run past the end of the file"});
  expect_gguf_error(Raw(2, 0).tensor("a", {8}, 0, 0).tensor("a", {8}, 0, 32).pad().zeros(64).b,
                    {"duplicate tensor name 'a'"});
  expect_gguf_error(Raw(0, 1).kv_u32("general.alignment", 24).b, {"general.alignment 24: expected a power of two"});
  Raw align(0, 1);
  put_str(align.b, "general.alignment");
  put<uint32_t>(align.b, 10);
  put<uint64_t>(align.b, 32);
  expect_gguf_error(align.b, {"'general.alignment' has wrong type: expected UINT32, got UINT64"});
  // A valid hand-made file with alignment 16 reads back.
  TempDir dir;
  auto ok = Raw(2, 1).kv_u32("general.alignment", 16).tensor("a", {2}, 0, 0).tensor("b", {4}, 1, 16).pad(16).b;
  const float av[2] = {1.0f, 2.0f};
  ok.insert(ok.end(), reinterpret_cast<const uint8_t*>(av), reinterpret_cast<const uint8_t*>(av) + 8);
  ok.resize(ok.size() + 8, 0);
  for (int i = 0; i < 4; ++i) put<uint16_t>(ok, fp32_to_fp16(0.5f * i));
  test::write_bytes(dir.file("ok.gguf"), ok);
  const auto f = GgufFile::open(dir.file("ok.gguf"));
  EXPECT_TRUE(at::equal(f.tensor_f32("a"), at::tensor({1.0f, 2.0f})));
  EXPECT_TRUE(at::equal(f.tensor_f32("b"), at::tensor({0.0f, 0.5f, 1.0f, 1.5f})));
  expect_error([&] { f.tensor_f32("c"); }, {"no tensor named 'c'"});
}

TEST(Gguf, RefusesUnsupportedDequantization) {
  TempDir dir;
  auto b = Raw(1, 0).tensor("k", {256}, static_cast<uint32_t>(GgmlType::Q4_K), 0).pad().zeros(160).b;
  test::write_bytes(dir.file("k.gguf"), b);
  const auto f = GgufFile::open(dir.file("k.gguf"));
  expect_error([&] { f.tensor_f32("k"); }, {"tensor 'k': type Q4_K cannot be converted to float"});
}

}  // namespace
}  // namespace l4q
