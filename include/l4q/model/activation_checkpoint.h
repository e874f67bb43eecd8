// Activation checkpointing: run a piece of a network without keeping its intermediate
// activations, and recompute them when the backward pass reaches it. Trades one extra forward
// of the piece for the memory of everything it would have saved for backward (in a decoder
// block: the attention scores, the MLP's intermediate_size-wide tensors, every projection's
// input), keeping only the piece's input.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace l4q {

using BlockFn = std::function<at::Tensor(const at::Tensor&)>;

// y = block(x), where the graph keeps only x. When backward reaches y, `block` runs again
// with gradients enabled on a detached copy of x and the incoming gradient is propagated
// through it into x and into `params`: every tensor requiring grad that block reads besides x
// (the gradients reach them as if block had run without checkpointing). Tensors block reads
// that are not in params get no gradient.
//
// Dropout inside block sees the same random numbers in the recompute: the default generator
// of x's device is saved before the first run, replayed for the second, and restored after.
//
// Without grad mode, or when neither x nor any of params requires grad, this is block(x).
// block (and everything it captures) must stay valid until backward has run.
at::Tensor checkpointed(const BlockFn& block, const at::Tensor& x,
                        const std::vector<at::Tensor>& params);

}  // namespace l4q
