#include "l4q/train/adamw.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>

#include "l4q/error.h"

namespace l4q {

AdamW::AdamW(std::vector<AdamWGroup> groups, double beta1, double beta2, double eps)
    : groups_(std::move(groups)), b1_(beta1), b2_(beta2), eps_(eps) {
  for (const auto& g : groups_) {
    if (g.names.size() != g.params.size())
      fail("AdamW: group '", g.name, "' has ", g.params.size(), " tensors but ", g.names.size(), " names");
    m_.emplace_back();
    v_.emplace_back();
    for (const auto& p : g.params) {
      m_.back().push_back(at::zeros_like(p));
      v_.back().push_back(at::zeros_like(p));
    }
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

double AdamW::clip_grad_norm(double max_norm) {
  at::NoGradGuard ng;
  double sq = 0;
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const double scale = max_norm / (norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
    for (auto& g : groups_)
      for (auto& p : g.params)
        if (p.grad().defined()) p.mutable_grad().mul_(scale);
  }
  return norm;
}

void AdamW::step(double lr_factor) {
  at::NoGradGuard ng;
  ++t_;
  const double bc1 = 1 - std::pow(b1_, static_cast<double>(t_));
  const double bc2 = 1 - std::pow(b2_, static_cast<double>(t_));
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    auto& g = groups_[gi];
    const double lr = g.lr * lr_factor;
    for (size_t i = 0; i < g.params.size(); ++i) {
      auto& p = g.params[i];
      if (!p.grad().defined()) continue;
      const auto& grad = p.grad();
      if (g.weight_decay != 0) p.mul_(1 - lr * g.weight_decay);
      auto& m = m_[gi][i];
      auto& v = v_[gi][i];
      m.mul_(b1_).add_(grad, 1 - b1_);
      v.mul_(b2_).addcmul_(grad, grad, 1 - b2_);
      const auto denom = (v.sqrt() / std::sqrt(bc2)).add_(eps_);
      p.addcdiv_(m, denom, -lr / bc1);
    }
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      out.emplace_back("exp_avg/" + groups_[gi].names[i], m_[gi][i]);
      out.emplace_back("exp_avg_sq/" + groups_[gi].names[i], v_[gi][i]);
    }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, int64_t steps) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  at::NoGradGuard ng;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      for (auto [prefix, dst] : {std::pair<const char*, at::Tensor*>{"exp_avg/", &m_[gi][i]},
                                 {"exp_avg_sq/", &v_[gi][i]}}) {
        const auto key = prefix + groups_[gi].names[i];
        auto it = by_name.find(key);
        if (it == by_name.end()) fail("optimizer state: tensor '", key, "' missing");
        if (!it->second.sizes().equals(dst->sizes()))
          fail("optimizer state: tensor '", key, "' has the wrong shape");
        dst->copy_(it->second);
      }
    }
  t_ = steps;
}

}  // namespace l4q
