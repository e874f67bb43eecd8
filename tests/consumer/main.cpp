// Uses the installed l4q: builds an L4Q layer, runs forward and backward, merges, and checks
// that the merged integer weight dequantizes to what the forward pass used.
#include <ATen/ATen.h>
#include <l4q/nn/l4q_linear.h>
#include <l4q/openmp_spin.h>
#include <l4q/runtime.h>

#include <cstdio>
#include <cstdlib>

L4Q_SHORT_OPENMP_SPIN();

int main() {
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr) {
    std::fprintf(stderr, "consumer: L4Q_SHORT_OPENMP_SPIN() did not re-execute with GOMP_SPINCOUNT\n");
    return 1;
  }
  l4q::init_runtime();
  at::manual_seed(0);
  l4q::L4QLinearSpec spec;
  spec.lora = {4, 8.0, 0.0};
  spec.grid = {3, 16};
  l4q::L4QLinear layer(at::randn({24, 64}), at::Tensor(), spec);
  auto x = at::randn({5, 64});
  auto y = layer.forward(x);
  y.pow(2).sum().backward();
  const bool grads = layer.lora_a().grad().defined() && layer.step().grad().defined();
  // x = identity makes y = W_q^T exactly.
  auto wq = layer.forward(at::eye(64)).t().detach();
  const bool exact = at::equal(wq, layer.merge().dequantize());
  std::printf("l4q consumer: y %s, grads %s, merge exact %s\n",
              y.sizes().vec().size() == 2 ? "ok" : "bad", grads ? "ok" : "missing",
              exact ? "yes" : "no");
  return grads && exact ? 0 : 1;
}
