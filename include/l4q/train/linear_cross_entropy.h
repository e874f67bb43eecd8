// The language-model loss head without its [tokens, vocab] logits.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace l4q {

// sum_i cross_entropy(hidden[i] @ weight^T, targets[i]): hidden [N, H], weight [V, H] (the
// lm_head), targets [N] int64 in [0, V). Returns a scalar, float (double for double inputs),
// differentiable in hidden and weight.
//
// Why: the plain head (logits, log_softmax, nll_loss, and their backward) keeps several
// [N, V] float tensors alive at once; with SmolLM2's 49,152-token vocabulary they are most of
// a fine-tuning step's memory. Here the logits exist one block of `chunk_rows` rows at a
// time. While gradients are wanted, each block's softmax gradient is turned into its share
// of d hidden (and d weight, when the weight is trained) at once, during the forward pass:
// the loss is the graph's last node, so backward only scales the saved gradients by the
// incoming scalar. Same two GEMMs as the plain head, no extra ones.
//
// chunk_rows <= 0 picks blocks of about 32 MiB of float logits (below glibc's largest mmap
// threshold, so blocks are recycled from the heap instead of being page-faulted in afresh).
at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight,
                                    const at::Tensor& targets, int64_t chunk_rows = 0);

}  // namespace l4q
