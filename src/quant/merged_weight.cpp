#include "l4q/quant/merged_weight.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include "l4q/quant/lsq.h"
#include "quant/fake_quant_rows.h"
#include "quant/tensor_checks.h"

namespace l4q {

MergedWeight quantize_weight(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                             const QuantGrid& grid) {
  detail::check_weight("quantize_weight", "W", W);
  grid.validate("quantize_weight", W.size(1));
  const int64_t out = W.size(0), in = W.size(1), gs = grid.group_size_for(in), groups = in / gs;
  detail::check_step_offset("quantize_weight", s, b, out, groups, W.scalar_type());
  at::NoGradGuard no_grad;
  const auto Wc = W.detach().contiguous();
  const auto st = s.detach().to(W.scalar_type()).contiguous();
  const auto bt = b.detach().to(W.scalar_type()).contiguous();
  auto codes = at::empty({out, in}, at::TensorOptions().dtype(at::kChar));
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "quantize_weight", [&] {
    at::parallel_for(0, out, detail::row_grain(in), [&](int64_t r0, int64_t r1) {
      cpu::quantize_codes_rows(Wc.data_ptr<scalar_t>() + r0 * in,
                               st.data_ptr<scalar_t>() + r0 * groups,
                               bt.data_ptr<scalar_t>() + r0 * groups,
                               codes.data_ptr<int8_t>() + r0 * in, r1 - r0, in, gs, grid.bits);
    });
  });
  QuantGrid resolved = grid;
  resolved.group_size = gs;
  return {codes, s.detach().clone(), b.detach().clone(), resolved};
}

at::Tensor MergedWeight::dequantize() const {
  const int64_t out = w_int.size(0), in = w_int.size(1), gs = grid.group_size_for(in),
                groups = in / gs;
  auto W = at::empty({out, in}, s.options());
  const auto st = s.contiguous(), bt = b.contiguous(), codes = w_int.contiguous();
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "dequantize", [&] {
    at::parallel_for(0, out, detail::row_grain(in), [&](int64_t r0, int64_t r1) {
      cpu::dequantize_rows(codes.data_ptr<int8_t>() + r0 * in,
                           st.data_ptr<scalar_t>() + r0 * groups,
                           bt.data_ptr<scalar_t>() + r0 * groups, W.data_ptr<scalar_t>() + r0 * in,
                           r1 - r0, in, gs);
    });
  });
  return W;
}

at::Tensor MergedWeight::unsigned_codes() const {
  return (w_int.to(at::kShort) - grid.qn()).to(at::kByte);
}

at::Tensor MergedWeight::min_offset() const {
  return b + s.clamp_min(min_step()) * static_cast<double>(grid.qn());
}

}  // namespace l4q
