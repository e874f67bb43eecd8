#include "l4q/quant/lsq.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "common/quant_math.h"
#include "l4q/error.h"
#include "quant/fake_quant_rows.h"
#include "quant/tensor_checks.h"

namespace l4q {

LsqInit parse_lsq_init(const std::string& name) {
  if (name == "l4q") return LsqInit::L4Q;
  if (name == "minmax") return LsqInit::MinMax;
  if (name == "absmax") return LsqInit::AbsMax;
  if (name == "lsq+" || name == "lsqplus") return LsqInit::LsqPlus;
  fail("quant.init: expected one of l4q, minmax, absmax, lsq+, got '", name, "'");
}

std::string to_string(LsqInit init) {
  switch (init) {
    case LsqInit::L4Q: return "l4q";
    case LsqInit::MinMax: return "minmax";
    case LsqInit::AbsMax: return "absmax";
    case LsqInit::LsqPlus: return "lsq+";
  }
  return "?";
}

double min_step() { return qmath::kMinStep; }

double lsq_grad_scale(const QuantGrid& grid, int64_t in_features) {
  return 1.0 / std::sqrt(static_cast<double>(grid.group_size_for(in_features)) * grid.qp());
}

void project_step_(at::Tensor& s) {
  at::NoGradGuard no_grad;
  s.clamp_min_(min_step());
}

StepOffset init_step_offset(const at::Tensor& W, const QuantGrid& grid, LsqInit init) {
  detail::check_weight("init_step_offset", "W", W);
  grid.validate("init_step_offset", W.size(1));
  at::NoGradGuard no_grad;
  const auto param_dtype = W.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t out = W.size(0), in = W.size(1), gs = grid.group_size_for(in);
  const auto Wg = W.detach().to(param_dtype).reshape({out, in / gs, gs});
  const double qn = grid.qn(), qp = grid.qp();
  at::Tensor s, b;
  switch (init) {
    case LsqInit::L4Q: {
      const auto mn = std::get<0>(Wg.min(-1)), mx = std::get<0>(Wg.max(-1));
      s = at::maximum((mn / qn).abs(), (mx / qp).abs());
      b = at::zeros_like(s);
      break;
    }
    case LsqInit::MinMax: {
      const auto mn = std::get<0>(Wg.min(-1)), mx = std::get<0>(Wg.max(-1));
      s = ((mx - mn) / static_cast<double>(grid.levels() - 1)).clamp_min(min_step());
      b = mn - s * qn;
      break;
    }
    case LsqInit::AbsMax: {
      s = Wg.abs().amax(-1) / qp;
      b = at::zeros_like(s);
      break;
    }
    case LsqInit::LsqPlus: {
      const auto mu = Wg.mean(-1);
      const auto sd = Wg.std(-1, /*unbiased=*/false);
      s = at::maximum((mu - 3 * sd).abs(), (mu + 3 * sd).abs()) / std::ldexp(1.0, grid.bits - 1);
      b = at::zeros_like(s);
      break;
    }
  }
  s = s.clamp_min(min_step()).contiguous();
  return {s, b.contiguous()};
}

double clipped_fraction(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                        const QuantGrid& grid) {
  at::NoGradGuard no_grad;
  const int64_t gs = grid.group_size_for(W.size(1));
  const auto w = (W.detach() - b.detach().to(W.scalar_type()).repeat_interleave(gs, 1)) /
                 s.detach().to(W.scalar_type()).clamp_min(min_step()).repeat_interleave(gs, 1);
  const auto outside = (w < grid.qn()) | (w > grid.qp());
  return outside.to(at::kDouble).mean().item<double>();
}

namespace {

// Fake quantization of a whole weight with STE gradients (used by QAT baselines and tests;
// layers use l4q_linear, which never materialises out x in tensors).
struct FakeQuantFunction : public torch::autograd::Function<FakeQuantFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& W,
                            const at::Tensor& s, const at::Tensor& b, int64_t bits,
                            int64_t gs, double grad_scale) {
    const auto Wc = W.contiguous();
    const auto st = s.to(W.scalar_type()).contiguous(), bt = b.to(W.scalar_type()).contiguous();
    auto out = Wc.clone();
    const int64_t rows = W.size(0), in = W.size(1), groups = in / gs;
    AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "fake_quantize", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      const scalar_t* sp = st.data_ptr<scalar_t>();
      const scalar_t* bp = bt.data_ptr<scalar_t>();
      at::parallel_for(0, rows, detail::row_grain(in), [&](int64_t r0, int64_t r1) {
        cpu::quantize_rows(o + r0 * in, sp + r0 * groups, bp + r0 * groups, r1 - r0, in, gs,
                           static_cast<int>(bits));
      });
    });
    ctx->save_for_backward({W, s, b});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["gs"] = gs;
    ctx->saved_data["g"] = grad_scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &W = saved[0], &s = saved[1], &b = saved[2];
    const int bits = static_cast<int>(ctx->saved_data["bits"].toInt());
    const int64_t gs = ctx->saved_data["gs"].toInt();
    const double g = ctx->saved_data["g"].toDouble();
    const int64_t rows = W.size(0), in = W.size(1), groups = in / gs;
    auto Wbuf = W.contiguous().clone();
    auto G = grads[0].to(W.scalar_type()).contiguous().clone();
    const auto st = s.to(W.scalar_type()).contiguous(), bt = b.to(W.scalar_type()).contiguous();
    auto ds = at::empty({rows, groups}, W.options()), db = at::empty({rows, groups}, W.options());
    AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "fake_quantize_backward", [&] {
      scalar_t* wp = Wbuf.data_ptr<scalar_t>();
      scalar_t* gp = G.data_ptr<scalar_t>();
      at::parallel_for(0, rows, detail::row_grain(in), [&](int64_t r0, int64_t r1) {
        cpu::quantize_backward_rows(wp + r0 * in, gp + r0 * in,
                                    st.data_ptr<scalar_t>() + r0 * groups,
                                    bt.data_ptr<scalar_t>() + r0 * groups,
                                    ds.data_ptr<scalar_t>() + r0 * groups,
                                    db.data_ptr<scalar_t>() + r0 * groups, r1 - r0, in, gs, bits);
      });
    });
    ds.mul_(g);
    db.mul_(g);
    return {ctx->needs_input_grad(0) ? G : at::Tensor(), ds.to(s.scalar_type()),
            db.to(b.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor fake_quantize(const at::Tensor& W, const at::Tensor& s, const at::Tensor& b,
                         const QuantGrid& grid, double grad_scale) {
  detail::check_weight("fake_quantize", "W", W);
  grid.validate("fake_quantize", W.size(1));
  const int64_t gs = grid.group_size_for(W.size(1));
  detail::check_step_offset("fake_quantize", s, b, W.size(0), W.size(1) / gs, W.scalar_type());
  const double g = grad_scale > 0 ? grad_scale : lsq_grad_scale(grid, W.size(1));
  return FakeQuantFunction::apply(W, s, b, grid.bits, gs, g);
}

}  // namespace l4q
