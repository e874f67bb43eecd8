// Baseline linear methods and the method factory.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "l4q/nn/methods.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::rel_err;

struct Setup {
  at::Tensor W, bias, x;
};

Setup setup(at::ScalarType dt = at::kDouble, uint64_t seed = 0) {
  at::manual_seed(seed);
  const auto o = at::TensorOptions().dtype(dt);
  return {at::randn({12, 32}, o) * 0.5, at::randn({12}, o), at::randn({3, 5, 32}, o)};
}

void randomize_lora(const Linear& l) {
  at::NoGradGuard ng;
  for (const auto& p : l.parameters())
    if (p.role == ParamRole::Adapter) const_cast<at::Tensor&>(p.tensor).normal_(0, 0.3);
}

const QuantSpec kQ{{3, 8}, LsqInit::MinMax, 0.0, 5};

TEST(Baselines, ForwardMultipliesByTheEffectiveWeight) {
  auto s = setup();
  const LoraSpec lora{4, 8.0, 0.0};
  std::vector<std::unique_ptr<Linear>> layers;
  layers.push_back(std::make_unique<LoraLinear>(s.W, s.bias, lora));
  layers.push_back(std::make_unique<QaLoraLinear>(s.W, s.bias, lora, kQ));
  layers.push_back(std::make_unique<LsqLinear>(s.W, s.bias, kQ));
  layers.push_back(std::make_unique<RtnLinear>(s.W, s.bias, kQ));
  for (auto& l : layers) {
    randomize_lora(*l);
    at::NoGradGuard ng;
    const auto y = l->forward(s.x);
    const auto ref = at::matmul(s.x, l->effective_weight().t()) + s.bias;
    EXPECT_LT(rel_err(y, ref), 1e-12) << l->method();
    if (l->method() != "lora") {
      ASSERT_TRUE(l->quantized_weight().has_value()) << l->method();
      EXPECT_TRUE(at::equal(l->quantized_weight()->dequantize(), l->effective_weight())) << l->method();
    }
  }
}

TEST(Baselines, LoraGradientsMatchComposite) {
  auto s = setup();
  LoraLinear l(s.W, s.bias, {3, 6.0, 0.0});
  randomize_lora(l);
  const auto A = l.parameters()[0].tensor, B = l.parameters()[1].tensor;
  const auto R = at::randn({3, 5, 12}, at::kDouble);
  (l.forward(s.x) * R).sum().backward();
  auto Ar = A.detach().clone().set_requires_grad(true), Br = B.detach().clone().set_requires_grad(true);
  (at::matmul(s.x, (s.W + 2.0 * at::mm(Br, Ar)).t()) * R).sum().backward();
  EXPECT_LT(rel_err(A.grad(), Ar.grad()), 1e-12);
  EXPECT_LT(rel_err(B.grad(), Br.grad()), 1e-12);
}

TEST(Baselines, LoraDropoutTouchesOnlyTheLoraBranch) {
  auto s = setup(at::kFloat);
  LoraLinear l(s.W, {}, {4, 8.0, 0.5});
  // B = 0: the LoRA branch is zero, so dropout must not change the output at all.
  at::NoGradGuard ng;
  EXPECT_TRUE(at::allclose(l.forward(s.x), at::matmul(s.x, s.W.t())));
  randomize_lora(l);
  l.set_training(false);
  EXPECT_LT(rel_err(l.forward(s.x), at::matmul(s.x, l.effective_weight().t())), 1e-5);
  l.set_training(true);
  EXPECT_GT(rel_err(l.forward(s.x), at::matmul(s.x, l.effective_weight().t())), 1e-3);
}

TEST(Baselines, LoraRtnExportsRoundToNearestOfTheMergedWeight) {
  auto s = setup();
  LoraLinear l(s.W, {}, {4, 8.0, 0.0}, kQ);
  randomize_lora(l);
  const auto merged = l.merged_float_weight();
  const auto q = l.quantized_weight();
  ASSERT_TRUE(q.has_value());
  EXPECT_TRUE(at::equal(q->w_int, round_to_nearest(merged, kQ).w_int));
  EXPECT_EQ(l.method(), "lora-rtn");
}

TEST(Baselines, QatLoraFakeQuantizesTheBaseOnly) {
  auto s = setup();
  for (bool learn : {false, true}) {
    QatLoraLinear l(s.W, {}, {4, 8.0, 0.0}, kQ, learn);
    randomize_lora(l);
    const auto ps = l.parameters();
    const auto x = s.x.detach().clone().requires_grad_(true);
    const auto y = l.forward(x);
    const auto base = round_to_nearest(s.W, kQ).dequantize();
    const auto w_total = (base + 2.0 * at::mm(ps[1].tensor, ps[0].tensor)).detach();
    const auto ref = at::matmul(s.x, w_total.t());
    EXPECT_LT(rel_err(y, ref), 1e-12);
    y.sum().backward();
    // d/dx sum(x W^T) = 1 W, for the cached fixed-scale base as for the blocked op.
    EXPECT_LT(rel_err(x.grad(), at::matmul(at::ones_like(y), w_total)), 1e-12);
    EXPECT_EQ(ps.size(), learn ? 4u : 2u);
    if (learn) EXPECT_GT(ps[2].tensor.grad().abs().sum().item<double>(), 0);
    // Export: PTQ of the merged weight, which differs from the training-time forward.
    at::NoGradGuard ng;
    EXPECT_TRUE(at::equal(l.quantized_weight()->w_int,
                          round_to_nearest(s.W + 2.0 * at::mm(ps[1].tensor, ps[0].tensor), kQ).w_int));
  }
}

// Deployed mode (what the trainer's val_loss_deployed and l4q-eval on a run directory use):
// lora-rtn and qat-lora then multiply by the exported weight; other methods are unaffected.
TEST(Baselines, DeployedModeRunsOnTheExportedWeight) {
  auto s = setup();
  LoraLinear rtn(s.W, s.bias, {4, 8.0, 0.0}, kQ);
  QatLoraLinear qat(s.W, s.bias, {4, 8.0, 0.0}, kQ, false);
  LoraLinear lora(s.W, s.bias, {4, 8.0, 0.0});
  for (Linear* l : std::initializer_list<Linear*>{&rtn, &qat, &lora}) {
    randomize_lora(*l);
    at::NoGradGuard ng;
    const auto trained = l->forward(s.x);
    l->set_deployed(true);
    const auto deployed = l->forward(s.x);
    l->set_deployed(false);
    EXPECT_TRUE(at::equal(l->forward(s.x), trained)) << l->method();
    EXPECT_LT(rel_err(deployed, at::matmul(s.x, l->effective_weight().t()) + s.bias), 1e-12)
        << l->method();
    if (l->rounds_at_export()) EXPECT_GT(rel_err(deployed, trained), 1e-3) << l->method();
    else EXPECT_TRUE(at::equal(deployed, trained)) << l->method();
  }
  EXPECT_TRUE(rtn.rounds_at_export());
  EXPECT_TRUE(qat.rounds_at_export());
  EXPECT_FALSE(lora.rounds_at_export());
}

TEST(Baselines, QaLoraMergesExactlyIntoTheOffset) {
  auto s = setup();
  QaLoraLinear l(s.W, s.bias, {4, 8.0, 0.0}, kQ);
  EXPECT_EQ(l.parameters()[0].tensor.sizes(), (at::IntArrayRef{4, 4}));  // A [r, in/G]
  randomize_lora(l);
  const auto q = l.quantized_weight();
  EXPECT_TRUE(at::equal(q->w_int, round_to_nearest(s.W, kQ).w_int));  // codes untouched
  at::NoGradGuard ng;
  EXPECT_LT(rel_err(l.forward(s.x), at::matmul(s.x, q->dequantize().t()) + s.bias), 1e-12);
}

TEST(Baselines, LsqTrainsTheFullWeight) {
  auto s = setup();
  LsqLinear l(s.W, {}, kQ);
  const auto ps = l.parameters();
  ASSERT_EQ(ps[0].role, ParamRole::Weight);
  l.forward(s.x).pow(2).sum().backward();
  EXPECT_GT(ps[0].tensor.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(ps[1].tensor.grad().abs().sum().item<double>(), 0);
}

TEST(L4QLinearWarmup, DisabledQuantizationIsFloatLoraThenReinitialises) {
  auto s = setup(at::kFloat);
  L4QLinearSpec spec{{4, 8.0, 0.0}, {3, 8}, LsqInit::L4Q, 0.0, 4};
  L4QLinear l(s.W, s.bias, spec);
  randomize_lora(l);
  l.disable_quantization();
  at::NoGradGuard ng;
  const auto merged = l.merged_float_weight();
  EXPECT_LT(rel_err(l.forward(s.x), at::matmul(s.x, merged.t()) + s.bias), 1e-5);
  EXPECT_TRUE(at::equal(l.effective_weight(), merged));
  l.enable_quantization(LsqInit::L4Q);
  EXPECT_TRUE(at::equal(l.step(), init_step_offset(merged, spec.grid, LsqInit::L4Q).s));
  EXPECT_TRUE(at::equal(l.effective_weight(), l.merge().dequantize()));
}

TEST(MethodFactory, BuildsTargetsAndIsDeterministic) {
  auto s = setup(at::kFloat);
  MethodSpec spec;
  spec.method = LinearMethod::L4Q;
  spec.grid = {3, 8};
  spec.target_modules = {"q_proj", "down_proj"};
  spec.seed = 7;
  auto f = make_linear_factory(spec);
  auto q = f("model.layers.0.self_attn.q_proj", s.W, {});
  auto k = f("model.layers.0.self_attn.k_proj", s.W, {});
  EXPECT_EQ(q->method(), "l4q");
  EXPECT_EQ(k->method(), "float");
  auto q2 = f("model.layers.0.self_attn.q_proj", s.W, {});
  auto q_other = f("model.layers.1.self_attn.q_proj", s.W, {});
  EXPECT_TRUE(at::equal(q->parameters()[0].tensor, q2->parameters()[0].tensor));
  EXPECT_FALSE(at::equal(q->parameters()[0].tensor, q_other->parameters()[0].tensor));
  for (const char* m : {"lora", "lora-rtn", "qat-lora", "qa-lora", "lsq", "rtn", "l4q", "float"}) {
    spec.method = parse_linear_method(m);
    EXPECT_EQ(to_string(spec.method), m);
    EXPECT_EQ(make_linear_factory(spec)("model.layers.0.self_attn.q_proj", s.W, {})->method(), m);
  }
}

TEST(MethodFactory, RejectsBadSpecs) {
  test::expect_error([] { parse_linear_method("qlora"); }, {"method", "qlora", "l4q"});
  MethodSpec spec;
  spec.target_modules = {"q_proj", "lm_head"};
  test::expect_error([&] { make_linear_factory(spec); }, {"target_modules", "lm_head"});
  spec = MethodSpec{};
  spec.lora.dropout = 0.1;
  test::expect_error([&] { make_linear_factory(spec); }, {"lora.dropout", "l4q"});
  spec = MethodSpec{};
  spec.grid = {3, 12};
  auto f = make_linear_factory(spec);
  test::expect_error([&] { f("model.layers.2.mlp.up_proj", at::randn({4, 32}), {}); },
                     {"model.layers.2.mlp.up_proj", "group_size", "12"});
}

}  // namespace
}  // namespace l4q
