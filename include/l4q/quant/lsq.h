// LSQ+ quantizer parameters: initialisation of the step size s and offset b, the LSQ gradient
// scale, and fake quantization of a weight tensor with straight-through gradients.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "l4q/quant/grid.h"

namespace l4q {

// How s and b are initialised from a weight, per group.
enum class LsqInit {
  L4Q,      // paper's best: s = max(|min/Qn|, |max/Qp|), b = 0
  MinMax,   // asymmetric: s = (max - min) / (2^bits - 1), b = min - s*Qn (min -> Qn, max -> Qp)
  AbsMax,   // symmetric: s = max|W| / Qp, b = 0
  LsqPlus,  // LSQ+ 3-sigma: s = max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(bits-1), b = 0
};

LsqInit parse_lsq_init(const std::string& name);  // "l4q", "minmax", "absmax", "lsq+"
std::string to_string(LsqInit init);

struct StepOffset {
  at::Tensor s;  // [out, groups], fp32 (or fp64 for an fp64 weight), every entry >= kMinStep
  at::Tensor b;  // [out, groups], same dtype as s
};

// Per-group initial s and b for a weight W [out, in]. Computed without autograd.
StepOffset init_step_offset(const at::Tensor& W, const QuantGrid& grid, LsqInit init);

// LSQ's gradient scale g = 1 / sqrt(N * Qp), N = elements sharing one s (the group size).
double lsq_grad_scale(const QuantGrid& grid, int64_t in_features);

// Smallest allowed step size (see kernels/common/quant_math.h).
double min_step();

// Clamps s to >= min_step() in place, outside autograd: call after each optimizer step.
void project_step_(at::Tensor& s);

// Fraction of the elements of W [out, in] whose w = (W - b)/s falls outside [Qn, Qp].
double clipped_fraction(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                        const QuantGrid& grid);

// Fake-quantizes W [out, in] with per-group s, b [out, groups]: returns W_q = Q(W) with the
// STE gradients dW = M * G, ds, db (scaled by grad_scale; <= 0 means lsq_grad_scale).
// Differentiable w.r.t. W, s and b (whichever require grad). Materialises out x in tensors:
// for layers, prefer l4q_linear, which never does.
at::Tensor fake_quantize(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                         const QuantGrid& grid, double grad_scale = 0.0);

}  // namespace l4q
