// HF config.json <-> LlamaConfig: defaults, rope scaling forms, wrong types named by key,
// and the writer's output read back.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "l4q/io/hf_config.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::expect_error;

TEST(HfConfig, ReadsALlama31Config) {
  const auto c = config_from_hf_json(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "attention_bias": false, "mlp_bias": false,
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "vocab_size": 128256, "tie_word_embeddings": true,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"})");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_hidden_layers, 16);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_id, 128001);  // the first of the list
}

TEST(HfConfig, AppliesTransformersDefaults) {
  const auto c = config_from_hf_json(R"({"hidden_size": 64, "num_attention_heads": 8, "num_hidden_layers": 2,
                                         "intermediate_size": 100, "vocab_size": 50, "num_key_value_heads": null,
                                         "rope_scaling": null})");
  EXPECT_EQ(c.num_key_value_heads, 8);  // = heads
  EXPECT_EQ(c.head_dim, 8);             // = hidden / heads
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, "none");
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  const auto d = config_from_hf_json("{}");  // every default: LLaMA-7B's shape
  EXPECT_EQ(d.hidden_size, 4096);
  EXPECT_EQ(d.vocab_size, 32000);
  EXPECT_EQ(d.head_dim, 128);
}

TEST(HfConfig, ReadsLinearScalingAndTransformersV5RopeParameters) {
  const auto lin = config_from_hf_json(R"({"hidden_size": 64, "num_attention_heads": 8,
                                           "rope_scaling": {"type": "linear", "factor": 4}})");
  EXPECT_EQ(lin.rope_scaling.type, "linear");
  EXPECT_EQ(lin.rope_scaling.factor, 4.0);
  const auto v5 = config_from_hf_json(R"({"hidden_size": 64, "num_attention_heads": 8,
                                          "rope_parameters": {"rope_type": "default", "rope_theta": 1234.5}})");
  EXPECT_EQ(v5.rope_theta, 1234.5);
  EXPECT_EQ(v5.rope_scaling.type, "none");
  const auto dflt = config_from_hf_json(R"({"hidden_size": 64, "num_attention_heads": 8,
                                            "rope_scaling": {"rope_type": "default"}})");
  EXPECT_EQ(dflt.rope_scaling.type, "none");
}

TEST(HfConfig, WrongTypesNameTheKey) {
  const std::string base = R"("num_attention_heads": 8, )";
  expect_error([&] { config_from_hf_json(R"({"hidden_size": "64"})", "cfg/config.json"); },
               {"cfg/config.json", "key 'hidden_size': expected an integer, got string \"64\""});
  expect_error([&] { config_from_hf_json(R"({"num_hidden_layers": 2.5})"); },
               {"key 'num_hidden_layers': expected an integer, got number 2.5"});
  expect_error([&] { config_from_hf_json(R"({"rms_norm_eps": "1e-5"})"); }, {"key 'rms_norm_eps': expected a number"});
  expect_error([&] { config_from_hf_json(R"({"tie_word_embeddings": "yes"})"); },
               {"key 'tie_word_embeddings': expected true or false, got string"});
  expect_error([&] { config_from_hf_json(R"({"eos_token_id": []})"); },
               {"key 'eos_token_id': expected an integer or a non-empty list"});
  expect_error([&] { config_from_hf_json(R"({"eos_token_id": [2, "x"]})"); },
               {"key 'eos_token_id': expected an integer, got string"});
  expect_error([&] { config_from_hf_json(R"({"rope_scaling": "llama3"})"); },
               {"key 'rope_scaling': expected null or an object, got string"});
  expect_error([&] { config_from_hf_json(R"({"rope_scaling": {"rope_type": "llama3", "factor": 8}})"); },
               {"rope_scaling: key 'low_freq_factor': required for rope type llama3"});
  expect_error([&] { config_from_hf_json(R"({"rope_scaling": {"rope_type": "yarn", "factor": 8}})"); },
               {"rope type 'yarn' is not supported"});
  expect_error([&] { config_from_hf_json(R"({"rope_scaling": {"type": "linear", "factor": "2"}})"); },
               {"rope_scaling: key 'factor': expected a number"});
  expect_error([&] { config_from_hf_json(R"({"hidden_act": "gelu"})"); }, {"key 'hidden_act'", "\"gelu\""});
  expect_error([&] { config_from_hf_json(R"({"model_type": "mistral"})"); }, {"key 'model_type'", "mistral"});
  expect_error([&] { config_from_hf_json(R"({"mlp_bias": true})"); }, {"key 'mlp_bias': biases are not supported"});
  expect_error([&] { config_from_hf_json(R"({"hidden_size": 64, "num_attention_heads": 0})"); },
               {"'num_attention_heads': expected >= 1, got 0"});
  expect_error([&] { config_from_hf_json(R"({"num_key_value_heads": 5})"); }, {"num_key_value_heads", "5"});
  expect_error([&] { config_from_hf_json("[1]"); }, {"expected a JSON object, got array"});
  expect_error([&] { config_from_hf_json("{\"a\": "); }, {"not valid JSON"});
  expect_error([&] { config_from_hf_json(R"({"vocab_size": 18446744073709551615})"); },
               {"key 'vocab_size': expected an int64"});
  expect_error([] { read_hf_config("/nonexistent/config.json"); }, {"/nonexistent/config.json", "cannot open"});
}

TEST(HfConfig, WriterOutputReadsBackIdentically) {
  for (const char* rope : {"none", "linear", "llama3"}) {
    auto c = test::tiny_config(true);
    c.rope_theta = 500000.0;
    c.rms_norm_eps = 1e-5;
    c.rope_scaling.type = rope;
    if (std::string(rope) != "none") c.rope_scaling.factor = 8.0;
    c.rope_scaling.low_freq_factor = 1.5;
    c.rope_scaling.high_freq_factor = 3.5;
    c.rope_scaling.original_max_position_embeddings = 4096;
    c.eos_token_id = 7;
    c.bos_token_id = 3;
    const auto text = to_hf_config_json(c);
    const auto j = nlohmann::json::parse(text);
    EXPECT_EQ(j["model_type"], "llama");
    EXPECT_EQ(j["architectures"], nlohmann::json({"LlamaForCausalLM"}));
    EXPECT_EQ(j["torch_dtype"], "float32");
    EXPECT_EQ(j["rope_theta"], 500000.0);
    EXPECT_EQ(j["head_dim"], 8);
    if (std::string(rope) == "none") EXPECT_TRUE(j["rope_scaling"].is_null());
    else EXPECT_EQ(j["rope_scaling"]["rope_type"], rope);
    const auto back = config_from_hf_json(text);
    test::expect_same_config(back, c);
    if (std::string(rope) == "llama3") {
      EXPECT_EQ(back.rope_scaling.low_freq_factor, 1.5);
      EXPECT_EQ(back.rope_scaling.high_freq_factor, 3.5);
      EXPECT_EQ(back.rope_scaling.original_max_position_embeddings, 4096);
    }
  }
}

}  // namespace
}  // namespace l4q
