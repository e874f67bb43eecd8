#include "l4q/model/activation_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>

#include "l4q/error.h"

namespace l4q {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs besides x: the block and the tensors to differentiate, kept alive by
// the autograd node (saved_data holds it as a capsule) and freed with it, whether or not
// backward ever runs.
struct Recompute : torch::CustomClassHolder {
  BlockFn block;
  std::vector<at::Tensor> params;
  at::Tensor rng_state;  // the device generator's state before the first run
};

at::Generator device_generator(const at::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

// Sets the generator's state for the lifetime of the guard, then puts back what it had.
class GeneratorReplay {
 public:
  GeneratorReplay(at::Generator gen, const at::Tensor& state) : gen_(std::move(gen)) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    saved_ = gen_.get_state();
    gen_.set_state(state);
  }
  ~GeneratorReplay() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(saved_);
  }
  GeneratorReplay(const GeneratorReplay&) = delete;
  GeneratorReplay& operator=(const GeneratorReplay&) = delete;

 private:
  at::Generator gen_;
  at::Tensor saved_;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // params arrive as a TensorList so that autograd links y to them (and hands their
  // gradients on); forward itself runs without grad mode (Function::apply turns it off).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                            const c10::intrusive_ptr<Recompute>& recompute) {
    {
      auto gen = device_generator(x.device());
      std::lock_guard<std::mutex> lock(gen.mutex());
      recompute->rng_state = gen.get_state();
    }
    (void)params;
    ctx->save_for_backward({x});
    ctx->saved_data["recompute"] = at::IValue::make_capsule(recompute);
    return recompute->block(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto recompute = c10::static_intrusive_pointer_cast<Recompute>(
        ctx->saved_data["recompute"].toCapsule());
    const size_t n_params = recompute->params.size();
    const at::Tensor x = saved[0].detach().requires_grad_(ctx->needs_input_grad(0));

    // Differentiate only what the outer graph wants a gradient for.
    std::vector<size_t> wanted;  // index into the forward inputs: 0 = x, 1 + i = params[i]
    variable_list inputs;
    if (ctx->needs_input_grad(0)) {
      wanted.push_back(0);
      inputs.push_back(x);
    }
    for (size_t i = 0; i < n_params; ++i)
      if (ctx->needs_input_grad(1 + i)) {
        wanted.push_back(1 + i);
        inputs.push_back(recompute->params[i]);
      }

    // One slot per forward input (x, each param, the capsule): undefined = no gradient.
    variable_list out(2 + n_params);
    if (inputs.empty()) return out;
    at::Tensor y;
    {
      GeneratorReplay replay(device_generator(x.device()), recompute->rng_state);
      at::AutoGradMode enable(true);
      y = recompute->block(x);
    }
    if (!y.requires_grad())
      fail("[checkpointed] the recomputed block output does not depend on its input or on any "
           "of the ", n_params, " parameters given (nothing to differentiate)");
    // A nested (reentrant) backward through the recomputed graph; allow_unused because a
    // block may ignore a parameter (e.g. a frozen branch).
    const auto g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false,
                                         /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < wanted.size(); ++k) out[wanted[k]] = g[k];
    return out;
  }
};

}  // namespace

at::Tensor checkpointed(const BlockFn& block, const at::Tensor& x,
                        const std::vector<at::Tensor>& params) {
  if (!block) fail("[checkpointed] block is empty");
  if (!x.defined()) fail("[checkpointed] x is undefined");
  bool needs_grad = x.requires_grad();
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].defined()) fail("[checkpointed] params[", i, "] is undefined");
    needs_grad = needs_grad || params[i].requires_grad();
  }
  if (!at::GradMode::is_enabled() || !needs_grad) return block(x);
  auto recompute = c10::make_intrusive<Recompute>();
  recompute->block = block;
  recompute->params = params;
  return CheckpointFunction::apply(x, at::TensorList(params), recompute);
}

}  // namespace l4q
