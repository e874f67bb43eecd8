// The model under a training method: a LinearFactory that wraps every projection in an
// L4QLinear gives a model whose loss backpropagates into the adapters and quantizers, and a
// few SGD steps on them lower the loss; the frozen float parameters get no gradient.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "l4q/model/llama.h"
#include "l4q/nn/l4q_linear.h"
#include "test_model_support.h"

namespace l4q {
namespace {

TEST(LlamaModelTraining, L4QFactoryBackpropagatesIntoAdapters) {
  const auto c = test::tiny_llama_config(4, 2);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
  L4QLinearSpec spec;
  spec.lora = {4, 8.0, 0.0};
  spec.grid = {4, 16};
  LinearFactory factory = [&](const std::string&, const at::Tensor& w, const at::Tensor& b) {
    return std::make_unique<L4QLinear>(w, b, spec, gen);
  };
  LlamaModel model(c, test::random_llama_weights(c, at::kFloat, 9), factory);
  model.set_training(true);

  const auto tokens = at::randint(0, c.vocab_size, {2, 10}, gen, at::kLong);
  auto loss_of = [&] {
    const auto logits = model.forward(tokens.narrow(1, 0, 9));
    return at::cross_entropy_loss(logits.reshape({-1, c.vocab_size}),
                                  tokens.narrow(1, 1, 9).reshape({-1}));
  };

  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  for (const auto& [name, lin] : model.named_linears()) {
    EXPECT_EQ(lin->method(), "l4q");
    for (const auto& p : lin->parameters()) {
      params.push_back(p.tensor);
      names.push_back(name + "." + p.name);
    }
  }
  ASSERT_GE(params.size(), 14u * 3);
  const auto loss0 = loss_of();
  const auto grads = torch::autograd::grad({loss0}, params, {}, /*retain_graph=*/false,
                                           /*create_graph=*/false, /*allow_unused=*/true);
  int n_b = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(grads[i].defined()) << names[i] << " got no gradient";
    EXPECT_TRUE(grads[i].isfinite().all().item<bool>()) << names[i];
    // B starts at zero, so dA = 0 at first; the offset's STE gradient lives on clipped weights
    // only, and the L4Q init clips none. B and the step sizes must get a real gradient.
    if (names[i].find("lora_b") != std::string::npos || names[i].find("step") != std::string::npos)
      EXPECT_GT(grads[i].abs().max().item<double>(), 0) << names[i];
    n_b += names[i].find("lora_b") != std::string::npos;
  }
  EXPECT_EQ(n_b, 14);
  EXPECT_GT(std::count_if(names.begin(), names.end(),
                          [](const std::string& n) { return n.find("step") != std::string::npos; }),
            0);
  for (const auto& [name, t] : model.named_float_parameters())
    EXPECT_FALSE(t.requires_grad()) << name << " should be frozen";

  // Plain SGD on the adapters and quantizers lowers the loss.
  double loss = loss0.item<double>();
  const double first = loss;
  for (int step = 0; step < 10; ++step) {
    const auto l = loss_of();
    const auto g = torch::autograd::grad({l}, params, {}, false, false, true);
    {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i)
        if (g[i].defined()) params[i].sub_(g[i], 0.05);
    }
    for (const auto& [name, lin] : model.named_linears()) lin->after_step();
    loss = l.item<double>();
  }
  EXPECT_LT(loss_of().item<double>(), first - 0.05);
}

}  // namespace
}  // namespace l4q
