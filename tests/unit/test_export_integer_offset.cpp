// Integer-offset training (quant.integer_offset): b_eff = s * clamp(round(b/s), -Qp, -Qn) with
// a straight-through round. Value exactly fl(s*k); gradients against a float64 reference.
#include <gtest/gtest.h>

#include <filesystem>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "l4q/nn/l4q_linear.h"
#include "l4q/nn/methods.h"
#include "l4q/train/config.h"
#include "test_support.h"

namespace l4q {
namespace {

TEST(IntegerOffset, ValueIsExactlyStepTimesAnInRangeInteger) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const QuantGrid grid{3, 32};
  const auto s = at::rand({64, 5}, gen).add_(0.01);
  const auto b = s * at::normal(0.0, 3.0, {64, 5}, gen);
  const auto be = integer_offset(s, b, grid);
  const auto k = at::round(b / s).clamp(-grid.qp(), -grid.qn());
  EXPECT_TRUE(at::equal(be, s * k));
  EXPECT_TRUE(at::equal(at::round(be / s), k));
  EXPECT_TRUE((k < at::round(b / s)).any().item<bool>());  // some were clamped
}

TEST(IntegerOffset, GradientsMatchTheFloat64Reference) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const QuantGrid grid{4, 32};
  const auto o = at::TensorOptions().dtype(at::kDouble);
  auto s = (at::rand({40, 3}, gen, o) + 0.05).set_requires_grad(true);
  auto b = (s.detach() * at::normal(0.0, 6.0, {40, 3}, gen, o)).set_requires_grad(true);
  const auto w = at::normal(0.0, 1.0, {40, 3}, gen, o);
  (integer_offset(s, b, grid) * w).sum().backward();
  // Reference: in range, d/db = 1 and d/ds = k - b/s; clamped, d/db = 0 and d/ds = k.
  const auto x = b.detach() / s.detach();
  const auto k = at::round(x);
  const auto kc = k.clamp(-grid.qp(), -grid.qn());
  const auto in = (k == kc).to(at::kDouble);
  const auto db_ref = w * in;
  const auto ds_ref = w * (in * (k - x) + (1 - in) * kc);
  EXPECT_TRUE(in.min().item<double>() == 0 && in.max().item<double>() == 1);  // both cases met
  EXPECT_LT(test::rel_err(b.grad(), db_ref), 1e-15);
  EXPECT_LT(test::rel_err(s.grad(), ds_ref), 1e-12);
}

TEST(IntegerOffset, L4QLinearChainsTheOpGradientsThroughTheOffset) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto o = at::TensorOptions().dtype(at::kDouble);
  const auto W0 = at::normal(0.0, 0.3, {24, 64}, gen, o);
  L4QLinearSpec spec;
  spec.grid = {4, 32};
  spec.integer_offset = true;
  L4QLinear lin(W0, at::Tensor(), spec, gen);
  {
    at::NoGradGuard ng;
    const_cast<at::Tensor&>(lin.lora_b()).normal_(0.0, 0.05, gen);
    const_cast<at::Tensor&>(lin.offset()).copy_(lin.step() * at::normal(0.0, 2.0, lin.step().sizes(), gen, o));
  }
  const auto x = at::normal(0.0, 1.0, {7, 64}, gen, o);
  const auto gy = at::normal(0.0, 1.0, {7, 24}, gen, o);
  (lin.forward(x) * gy).sum().backward();

  // Reference: the op with a leaf offset b_eff, then the chain rule of b_eff(s, b) by hand.
  const auto s = lin.step().detach(), b = lin.offset().detach();
  auto s_leaf = s.clone().set_requires_grad(true);
  auto be_leaf = integer_offset(s, b, spec.grid).detach().set_requires_grad(true);
  const auto y = l4q_linear(x, W0, lin.lora_a().detach(), lin.lora_b().detach(), s_leaf, be_leaf,
                            at::Tensor(), lin.options());
  (y * gy).sum().backward();
  const auto k = at::round(b / s), kc = k.clamp(-7, 8);
  const auto in = (k == kc).to(at::kDouble);
  const auto db_ref = be_leaf.grad() * in;
  const auto ds_ref = s_leaf.grad() + be_leaf.grad() * (in * (k - b / s) + (1 - in) * kc);
  EXPECT_LT(test::rel_err(lin.offset().grad(), db_ref), 1e-12);
  EXPECT_LT(test::rel_err(lin.step().grad(), ds_ref), 1e-12);
  // merge() gives the integer offset the forward used.
  const auto mw = lin.merge();
  EXPECT_TRUE(at::equal(mw.b, s * kc));
  EXPECT_TRUE(at::equal(mw.dequantize(), lin.effective_weight()));
}

TEST(IntegerOffset, ConfigKeyForL4QOnly) {
  const std::string data = R"("data": {"train": "t.json"})";
  const auto c = parse_train_config(R"({"model": "m.gguf", "method": "l4q", "quant": {"integer_offset": true}, )" + data + "}",
                                    "c.json");
  EXPECT_TRUE(c.method.integer_offset);
  EXPECT_TRUE(parse_train_config(to_json(c), "round trip").method.integer_offset);
  EXPECT_FALSE(parse_train_config(R"({"model": "m.gguf", )" + data + "}", "c.json").method.integer_offset);
  test::expect_error(
      [&] {
        parse_train_config(R"({"model": "m.gguf", "method": "lsq", "quant": {"integer_offset": true}, )" + data + "}",
                           "c.json");
      },
      {"c.json", "quant.integer_offset", "lsq"});
}

// quant.frozen_dtype keeps l4q's frozen weights in 16 bits: parsed, round-tripped, refused for
// methods that give W0 to BLAS and for unknown names; the factory's layers hold such weights.
TEST(FrozenDtype, ConfigKeyForL4QOnlyAndTheLayersKeepIt) {
  const std::string data = R"("data": {"train": "t.json"})";
  const auto c = parse_train_config(
      R"({"model": "m.gguf", "method": "l4q", "quant": {"frozen_dtype": "bfloat16"}, )" + data + "}",
      "c.json");
  EXPECT_EQ(c.method.frozen_dtype, "bfloat16");
  EXPECT_EQ(parse_train_config(to_json(c), "round trip").method.frozen_dtype, "bfloat16");
  EXPECT_EQ(parse_train_config(R"({"model": "m.gguf", )" + data + "}", "c.json").method.frozen_dtype,
            "float32");
  test::expect_error(
      [&] {
        parse_train_config(
            R"({"model": "m.gguf", "method": "lora", "quant": {"frozen_dtype": "float16"}, )" +
                data + "}",
            "c.json");
      },
      {"c.json", "quant.frozen_dtype", "lora"});
  test::expect_error(
      [&] {
        parse_train_config(
            R"({"model": "m.gguf", "method": "l4q", "quant": {"frozen_dtype": "fp8"}, )" + data + "}",
            "c.json");
      },
      {"c.json", "quant.frozen_dtype", "fp8"});
  for (const auto& [name, dt] : {std::pair{"bfloat16", at::kBFloat16}, std::pair{"float16", at::kHalf},
                                 std::pair{"float32", at::kFloat}}) {
    MethodSpec spec;
    spec.grid = {4, 32};
    spec.frozen_dtype = name;
    const auto w = at::randn({16, 64});
    const auto layer = make_linear_factory(spec)("model.layers.0.mlp.up_proj", w, {});
    const auto* l4q = dynamic_cast<const L4QLinear*>(layer.get());
    ASSERT_NE(l4q, nullptr);
    EXPECT_EQ(l4q->weight().scalar_type(), dt) << name;
    EXPECT_TRUE(at::equal(l4q->weight().to(at::kFloat), w.to(dt).to(at::kFloat))) << name;
  }
}

// Every shipped config parses and validates (the 7B recipe keeps its fp16 weights in fp16).
TEST(FrozenDtype, ShippedConfigsParse) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(L4Q_SOURCE_DIR) + "/configs")) {
    if (e.path().extension() != ".json") continue;
    const auto c = load_train_config(e.path().string());
    c.method.validate(e.path().string());
    if (e.path().filename() == "llama2-7b-l4q-4bit.json") EXPECT_EQ(c.method.frozen_dtype, "float16");
    ++n;
  }
  EXPECT_GE(n, 3);
}

}  // namespace
}  // namespace l4q
