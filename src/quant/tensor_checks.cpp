#include "quant/tensor_checks.h"

#include <ATen/ATen.h>

#include <sstream>

namespace l4q::detail {

std::string shape_str(at::IntArrayRef shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

std::string shape_str(const at::Tensor& t) {
  return t.defined() ? shape_str(t.sizes()) : std::string("undefined");
}

void check_weight(const char* op, const char* name, const at::Tensor& W) {
  if (!W.defined()) fail("[", op, "] tensor '", name, "': expected a defined tensor");
  if (W.dim() != 2)
    fail("[", op, "] tensor '", name, "': expected 2-D [out, in], got ", shape_str(W));
  if (W.device().is_cuda()) {
#if L4Q_WITH_CUDA_KERNELS
    if (W.scalar_type() != at::kFloat && W.scalar_type() != at::kBFloat16)
      fail("[", op, "] tensor '", name, "': expected float32 or bfloat16 on CUDA, got ",
           c10::toString(W.scalar_type()));
    return;
#else
    fail("[", op, "] tensor '", name, "': is on ", W.device().str(),
         " but this l4q was built without CUDA kernels (build against a CUDA LibTorch)");
#endif
  }
  if (!W.device().is_cpu())
    fail("[", op, "] tensor '", name, "': expected a CPU tensor, got ", W.device().str());
  if (W.scalar_type() != at::kFloat && W.scalar_type() != at::kDouble)
    fail("[", op, "] tensor '", name, "': expected float32 or float64 (CPU compute is fp32), got ",
         c10::toString(W.scalar_type()));
}

bool is_16bit_storage(const at::Tensor& W) {
  return W.defined() && W.device().is_cpu() &&
         (W.scalar_type() == at::kBFloat16 || W.scalar_type() == at::kHalf);
}

void check_frozen_weight(const char* op, const char* name, const at::Tensor& W) {
  if (!is_16bit_storage(W)) return check_weight(op, name, W);
  if (W.dim() != 2)
    fail("[", op, "] tensor '", name, "': expected 2-D [out, in], got ", shape_str(W));
  if (W.requires_grad())
    fail("[", op, "] tensor '", name, "': kept in ", c10::toString(W.scalar_type()),
         ", so it is frozen and cannot require grad (train it in float32)");
}

at::ScalarType compute_dtype_of(const at::Tensor& W) {
  return is_16bit_storage(W) ? at::kFloat : W.scalar_type();
}

void check_step_offset(const char* op, const at::Tensor& s, const at::Tensor& b, int64_t rows,
                       int64_t groups, at::ScalarType compute) {
  const std::pair<const char*, const at::Tensor*> items[] = {{"s", &s}, {"b", &b}};
  for (const auto& [name, t] : items) {
    if (!t->defined()) fail("[", op, "] tensor '", name, "': expected a defined tensor");
    if (t->dim() != 2 || t->size(0) != rows || t->size(1) != groups)
      fail("[", op, "] tensor '", name, "': expected [", rows, ", ", groups, "], got ",
           shape_str(*t));
    const auto dt = t->scalar_type();
    if (!(dt == at::kFloat || (dt == at::kDouble && compute == at::kDouble)))
      fail("[", op, "] tensor '", name, "': expected float32 (float64 only for fp64 compute), got ",
           c10::toString(dt));
  }
}

void check_finite(const char* op, const char* name, const at::Tensor& t) {
  if (!at::isfinite(t).all().item<bool>())
    fail("[", op, "] tensor '", name, "': contains NaN or Inf");
}

}  // namespace l4q::detail
