// Argument checks shared by the quantization ops (private to src/). Messages follow
// "[op] tensor 'name': expected X, got Y".
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "l4q/error.h"

namespace l4q::detail {

// "[2, 3]" (or "undefined" for an undefined tensor): the shape in error messages.
std::string shape_str(at::IntArrayRef shape);
std::string shape_str(const at::Tensor& t);

// 2-D, CPU, fp32 or fp64.
void check_weight(const char* op, const char* name, const at::Tensor& W);

// A frozen weight (W0 of l4q_linear, L4QLinear's weight) may also be kept in 16 bits on CPU,
// bfloat16 or half: the L4Q row loops widen it to fp32 as they read it (src/quant/merged_rows.h).
bool is_16bit_storage(const at::Tensor& W);
void check_frozen_weight(const char* op, const char* name, const at::Tensor& W);
// The dtype the computation with W runs in: fp32 for 16-bit storage, else W's own.
at::ScalarType compute_dtype_of(const at::Tensor& W);
// s and b: defined, [rows, groups], fp32, or fp64 when compute is fp64.
void check_step_offset(const char* op, const at::Tensor& s, const at::Tensor& b, int64_t rows,
                       int64_t groups, at::ScalarType compute);
// Throws unless every element is finite.
void check_finite(const char* op, const char* name, const at::Tensor& t);

// Rows per at::parallel_for task so each task touches at least ~32k elements.
inline int64_t row_grain(int64_t in) { return in >= 32768 ? 1 : 32768 / in; }

}  // namespace l4q::detail
