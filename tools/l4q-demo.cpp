// l4q-demo: one L4Q layer learns a low-rank update of a frozen weight at 3 bits, compared
// with the two things a user would otherwise do: round the base weight (RTN), or train float
// LoRA and round the merged weight afterwards (LoRA -> RTN).
//
//   l4q-demo [--bits 3] [--group 32] [--steps 300] [--rank 4] [--threads 0]
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/optim/adam.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "l4q/nn/l4q_linear.h"
#include "l4q/runtime.h"

namespace {

double mse(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y) {
  return (at::mm(X, W.t()) - Y).pow(2).mean().item<double>();
}

// Round-to-nearest with min-max scales: the usual PTQ baseline.
at::Tensor rtn(const at::Tensor& W, const l4q::QuantGrid& grid) {
  auto so = l4q::init_step_offset(W, grid, l4q::LsqInit::MinMax);
  return l4q::quantize_weight(W, so.s, so.b, grid).dequantize();
}

}  // namespace

int main(int argc, char** argv) {
  int bits = 3, steps = 300, threads = 0;
  int64_t group = 32, rank = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long v = std::atol(argv[i + 1]);
    if (k == "--bits") bits = static_cast<int>(v);
    else if (k == "--group") group = v;
    else if (k == "--steps") steps = static_cast<int>(v);
    else if (k == "--rank") rank = v;
    else if (k == "--threads") threads = static_cast<int>(v);
    else {
      std::fprintf(stderr, "l4q-demo: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    l4q::init_runtime(threads);
    at::manual_seed(0);
    const int64_t in = 256, out = 256, n = 2048;
    const auto W0 = at::randn({out, in}) / 16.0;
    // The task: the frozen weight plus a low-rank change, seen only through (X, Y) pairs.
    const auto delta = at::mm(at::randn({out, rank}), at::randn({rank, in})) / 64.0;
    const auto W_target = W0 + delta;
    const auto X = at::randn({n, in});
    const auto Y = at::mm(X, W_target.t());
    const l4q::QuantGrid grid{bits, group};

    std::printf("l4q-demo: learn W0 + rank-%lld update at %s (%lld x %lld, %lld samples)\n",
                (long long)rank, grid.describe().c_str(), (long long)out, (long long)in,
                (long long)n);

    // Float LoRA, then round the merged weight.
    auto A = l4q::init_lora_a(rank, in, at::kFloat).set_requires_grad(true);
    auto B = l4q::init_lora_b(out, rank, at::kFloat).set_requires_grad(true);
    const double scale = 2.0;
    {
      torch::optim::Adam opt({A, B}, torch::optim::AdamOptions(1e-2));
      for (int t = 0; t < steps; ++t) {
        opt.zero_grad();
        const auto pred = at::mm(X, W0.t()) + scale * at::mm(at::mm(X, A.t()), B.t());
        (pred - Y).pow(2).mean().backward();
        opt.step();
      }
    }
    const auto lora_merged = (W0 + scale * at::mm(B, A)).detach();

    // L4Q: the same adapter merged before quantization, trained through the quantizer.
    l4q::L4QLinearSpec spec;
    spec.lora = {rank, scale * static_cast<double>(rank), 0.0};
    spec.grid = grid;
    l4q::L4QLinear layer(W0, at::Tensor(), spec);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<at::Tensor>{layer.lora_a(), layer.lora_b()},
                        std::make_unique<torch::optim::AdamOptions>(1e-2));
    groups.emplace_back(std::vector<at::Tensor>{layer.step(), layer.offset()},
                        std::make_unique<torch::optim::AdamOptions>(1e-3));
    torch::optim::Adam opt(std::move(groups), torch::optim::AdamOptions(1e-2));
    double first = 0, last = 0;
    for (int t = 0; t < steps; ++t) {
      opt.zero_grad();
      auto loss = (layer.forward(X) - Y).pow(2).mean();
      loss.backward();
      opt.step();
      layer.project_parameters_();
      if (t == 0) first = loss.item<double>();
      last = loss.item<double>();
      if ((t + 1) % 100 == 0) std::printf("  l4q step %4d  loss %.6f\n", t + 1, last);
    }
    const auto merged = layer.merge();
    const auto wq = merged.dequantize();
    at::NoGradGuard ng;
    const bool exact = at::equal(layer.forward(at::eye(in)).t(), wq);

    std::printf("\n| model | bits | mse vs target |\n|---|---|---|\n");
    std::printf("| base weight W0 (float) | 32 | %.6f |\n", mse(X, W0, Y));
    std::printf("| RTN(W0) | %d | %.6f |\n", bits, mse(X, rtn(W0, grid), Y));
    std::printf("| float LoRA | 32 | %.6f |\n", mse(X, lora_merged, Y));
    std::printf("| LoRA -> RTN | %d | %.6f |\n", bits, mse(X, rtn(lora_merged, grid), Y));
    std::printf("| L4Q (merged integer weight) | %d | %.6f |\n", bits, mse(X, wq, Y));
    std::printf("\nL4Q training loss %.6f -> %.6f; merged weight = forward weight bit for bit: %s\n",
                first, last, exact ? "yes" : "NO");
    return exact ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q-demo: %s\n", e.what());
    return 1;
  }
}
