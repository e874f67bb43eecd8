// llama2.c v0 checkpoints: the real stories260K.bin, shared and separate classifiers, and
// every header/size check.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "l4q/io/llama2c.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::expect_error;
using test::TempDir;

TEST(Llama2c, ReadsStories260K) {
  const auto f = Llama2cFile::open(test::asset("stories260K.bin"));
  const auto& h = f.header();
  EXPECT_EQ(h.dim, 64);
  EXPECT_EQ(h.hidden_dim, 172);
  EXPECT_EQ(h.n_layers, 5);
  EXPECT_EQ(h.n_heads, 8);
  EXPECT_EQ(h.n_kv_heads, 4);
  EXPECT_EQ(h.vocab_size, 512);
  EXPECT_EQ(h.seq_len, 512);
  EXPECT_TRUE(h.shared_classifier());
  EXPECT_EQ(f.names().size(), 11u);  // no wcls
  EXPECT_EQ(f.tensor("wk").sizes(), (at::IntArrayRef{5, 32, 64}));
  EXPECT_EQ(f.tensor("w2").sizes(), (at::IntArrayRef{5, 64, 172}));
  const auto c = config_from_llama2c(h);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_word_embeddings);
  expect_error([&] { f.tensor("wcls"); }, {"no llama2.c array named 'wcls'"});
}

TEST(Llama2c, SeparateClassifierAndSkippedRopeTables) {
  TempDir dir;
  const auto ck = test::random_checkpoint(test::tiny_config(false), 5);
  test::write_llama2c(dir.file("m.bin"), ck, 16);
  const auto f = Llama2cFile::open(dir.file("m.bin"));
  EXPECT_EQ(f.header().vocab_size, -40);
  EXPECT_FALSE(f.header().shared_classifier());
  EXPECT_EQ(f.names().back(), "wcls");
  EXPECT_TRUE(at::equal(f.tensor("wcls"), ck.get("lm_head.weight")));
  EXPECT_TRUE(at::equal(f.tensor("rms_final_weight"), ck.get("model.norm.weight")));
  EXPECT_TRUE(at::equal(f.tensor("w3")[1], ck.get("model.layers.1.mlp.up_proj.weight")));
  EXPECT_FALSE(config_from_llama2c(f.header()).tie_word_embeddings);
}

TEST(Llama2c, RefusesBadHeadersAndSizes) {
  TempDir dir;
  const auto ck = test::random_checkpoint(test::tiny_config(true), 6);
  test::write_llama2c(dir.file("ok.bin"), ck, 16);
  const auto good = test::read_bytes(dir.file("ok.bin"));
  const auto with = [&](int field, int32_t value) {
    auto b = good;
    std::memcpy(b.data() + 4 * field, &value, 4);
    test::write_bytes(dir.file("bad.bin"), b);
    return dir.file("bad.bin");
  };
  const auto open = [](const std::string& p) { return [p] { Llama2cFile::open(p); }; };
  expect_error(open(with(0, 0)), {"bad.bin", "header field 'dim': expected >= 1, got 0"});
  expect_error(open(with(3, 5)), {"n_heads 5 does not divide dim 32"});
  expect_error(open(with(4, 3)), {"n_kv_heads 3 does not divide n_heads 4"});
  expect_error(open(with(5, 0)), {"'vocab_size': expected non-zero"});
  expect_error(open(with(1, 63)), {"hidden_dim 63", "implies 79260 bytes, but the file has 80028"});
  expect_error(open(with(1, 65)), {"hidden_dim 65", "implies more bytes than the file's 80028"});
  expect_error(open(with(5, -40)), {"implies more bytes than the file's"});  // expects a wcls
  expect_error(open(with(1, INT32_MAX)), {"implies more bytes than the file's"});
  // 2^31-scale fields whose byte count overflows 64 bits.
  auto huge = good;
  const int32_t fields[7] = {1 << 30, INT32_MAX, INT32_MAX, 1, 1, 1, INT32_MAX};
  std::memcpy(huge.data(), fields, sizeof fields);
  test::write_bytes(dir.file("bad.bin"), huge);
  expect_error(open(dir.file("bad.bin")), {"dim 1073741824", "implies more bytes than the file's"});
  expect_error(open(with(3, 32)), {"head size 1 is odd"});
  auto extra = good;
  extra.push_back(0);
  test::write_bytes(dir.file("bad.bin"), extra);
  expect_error(open(dir.file("bad.bin")), {"but the file has " + std::to_string(good.size() + 1)});
  test::write_bytes(dir.file("bad.bin"), {good.begin(), good.begin() + 20});
  expect_error(open(dir.file("bad.bin")), {"20 bytes is too short for the llama2.c header"});
  auto v1 = good;
  const uint32_t magic = 0x616b3432;
  std::memcpy(v1.data(), &magic, 4);
  test::write_bytes(dir.file("bad.bin"), v1);
  expect_error(open(dir.file("bad.bin")), {"magic ak42", "not supported"});
}

}  // namespace
}  // namespace l4q
