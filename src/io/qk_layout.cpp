#include "l4q/io/qk_layout.h"

#include <ATen/ATen.h>

#include "l4q/error.h"

namespace l4q {

namespace {

void check(const at::Tensor& w, int64_t n_heads, const char* op) {
  if (!w.defined() || w.dim() < 1) fail("[", op, "] expected a tensor with rows, got none");
  if (n_heads < 1 || w.size(0) % n_heads != 0 || (w.size(0) / n_heads) % 2 != 0)
    fail("[", op, "] ", w.size(0), " rows: expected n_heads (", n_heads, ") heads of even size");
}

std::vector<int64_t> split_rows(const at::Tensor& w, int64_t a, int64_t b, int64_t c) {
  std::vector<int64_t> s{a, b, c};
  for (int64_t d = 1; d < w.dim(); ++d) s.push_back(w.size(d));
  return s;
}

}  // namespace

at::Tensor interleaved_to_rotate_half(const at::Tensor& w, int64_t n_heads) {
  check(w, n_heads, "interleaved_to_rotate_half");
  const int64_t half = w.size(0) / n_heads / 2;
  // [h, i, c] (row h*hd + 2i + c) -> [h, c, i] (row h*hd + c*hd/2 + i)
  return w.reshape(split_rows(w, n_heads, half, 2)).transpose(1, 2).contiguous().view(w.sizes());
}

at::Tensor rotate_half_to_interleaved(const at::Tensor& w, int64_t n_heads) {
  check(w, n_heads, "rotate_half_to_interleaved");
  const int64_t half = w.size(0) / n_heads / 2;
  return w.reshape(split_rows(w, n_heads, 2, half)).transpose(1, 2).contiguous().view(w.sizes());
}

}  // namespace l4q
