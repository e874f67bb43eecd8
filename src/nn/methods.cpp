#include "l4q/nn/methods.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <functional>

#include "l4q/error.h"

namespace l4q {

namespace {
struct MethodName {
  LinearMethod m;
  const char* name;
};
constexpr MethodName kMethods[] = {
    {LinearMethod::Float, "float"},       {LinearMethod::Lora, "lora"},
    {LinearMethod::LoraRtn, "lora-rtn"},  {LinearMethod::QatLora, "qat-lora"},
    {LinearMethod::QaLora, "qa-lora"},    {LinearMethod::Lsq, "lsq"},
    {LinearMethod::L4Q, "l4q"},           {LinearMethod::Rtn, "rtn"},
};

std::string last_component(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

// FNV-1a: a stable hash of the module name (std::hash is not stable across builds).
uint64_t stable_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
}  // namespace

LinearMethod parse_linear_method(const std::string& name) {
  for (const auto& m : kMethods)
    if (name == m.name) return m.m;
  fail("method: expected one of float, lora, lora-rtn, qat-lora, qa-lora, lsq, l4q, rtn, got '",
       name, "'");
}

std::string to_string(LinearMethod m) {
  for (const auto& k : kMethods)
    if (k.m == m) return k.name;
  return "?";
}

bool is_quantized(LinearMethod m) { return m != LinearMethod::Float && m != LinearMethod::Lora; }
bool trains(LinearMethod m) { return m != LinearMethod::Float && m != LinearMethod::Rtn; }

void MethodSpec::validate(const std::string& where) const {
  const bool uses_lora = method == LinearMethod::Lora || method == LinearMethod::LoraRtn ||
                         method == LinearMethod::QatLora || method == LinearMethod::QaLora ||
                         method == LinearMethod::L4Q;
  if (uses_lora) lora.validate(where);
  if (method == LinearMethod::L4Q && lora.dropout != 0)
    fail("[", where, "] lora.dropout: expected 0 for method l4q, got ", lora.dropout,
         " (the adapter is merged before quantization: there is no LoRA branch to drop)");
  if (is_quantized(method)) grid.validate(where);
  if (integer_offset && method != LinearMethod::L4Q)
    fail("[", where, "] quant.integer_offset: expected false for method ", to_string(method),
         " (only l4q supports an integer offset), got true");
  if (row_chunk < 0) fail("[", where, "] row_chunk: expected >= 0 (0: automatic), got ", row_chunk);
  if (frozen_dtype != "float32" && frozen_dtype != "bfloat16" && frozen_dtype != "float16")
    fail("[", where, "] quant.frozen_dtype: expected \"float32\", \"bfloat16\" or \"float16\", got \"",
         frozen_dtype, "\"");
  if (frozen_dtype != "float32" && method != LinearMethod::L4Q)
    fail("[", where, "] quant.frozen_dtype: expected \"float32\" for method ", to_string(method),
         " (its frozen weight goes to BLAS in fp32; only l4q reads it in its own loops), got \"",
         frozen_dtype, "\"");
  static const char* known[] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                "gate_proj", "up_proj", "down_proj"};
  for (const auto& t : target_modules)
    if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return t == k; }) ==
        std::end(known))
      fail("[", where, "] target_modules: unknown module '", t,
           "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
}

QuantGrid grid_for_layer(const MethodSpec& spec, int64_t in_features) {
  QuantGrid g = spec.grid;
  if (spec.per_channel_if_indivisible && g.group_size > 0 && in_features % g.group_size != 0)
    g.group_size = -1;
  return g;
}

namespace {

// W0 in spec.frozen_dtype (l4q): a 16-bit copy only for a CPU fp32 weight, the compute the
// L4Q loops widen it back to.
at::Tensor frozen_weight(const MethodSpec& spec, const at::Tensor& w) {
  if (spec.frozen_dtype == "float32") return w;
  if (!w.device().is_cpu() || w.scalar_type() != at::kFloat)
    fail("quant.frozen_dtype \"", spec.frozen_dtype, "\": expected a CPU float32 model, got a ",
         c10::toString(w.scalar_type()), " weight on ", w.device().str());
  return w.to(spec.frozen_dtype == "bfloat16" ? at::kBFloat16 : at::kHalf);
}

}  // namespace

LinearFactory make_linear_factory(const MethodSpec& spec) {
  spec.validate("method");
  return [spec](const std::string& name, const at::Tensor& w,
                const at::Tensor& b) -> std::unique_ptr<Linear> {
    const auto leaf = last_component(name);
    const bool targeted = std::find(spec.target_modules.begin(), spec.target_modules.end(),
                                    leaf) != spec.target_modules.end();
    if (!targeted || spec.method == LinearMethod::Float) return std::make_unique<FloatLinear>(w, b);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(spec.seed ^ stable_hash(name));
    const QuantGrid grid = grid_for_layer(spec, w.size(1));
    const QuantSpec ptq{grid, spec.ptq_init, spec.grad_scale, spec.row_chunk};
    const QuantSpec learned{grid, spec.init, spec.grad_scale, spec.row_chunk};
    try {
      switch (spec.method) {
        case LinearMethod::Lora: return std::make_unique<LoraLinear>(w, b, spec.lora, std::nullopt, gen);
        case LinearMethod::LoraRtn: return std::make_unique<LoraLinear>(w, b, spec.lora, ptq, gen);
        case LinearMethod::QatLora:
          return std::make_unique<QatLoraLinear>(w, b, spec.lora,
                                                 spec.qat_learn_scales ? learned : ptq,
                                                 spec.qat_learn_scales, gen);
        case LinearMethod::QaLora: return std::make_unique<QaLoraLinear>(w, b, spec.lora, ptq, gen);
        case LinearMethod::Lsq: return std::make_unique<LsqLinear>(w, b, learned);
        case LinearMethod::Rtn: return std::make_unique<RtnLinear>(w, b, ptq);
        case LinearMethod::L4Q: {
          L4QLinearSpec s{spec.lora, grid, spec.init, spec.grad_scale, spec.row_chunk,
                          spec.integer_offset};
          return std::make_unique<L4QLinear>(frozen_weight(spec, w), b, s, gen);
        }
        case LinearMethod::Float: break;
      }
    } catch (const Error& e) {
      fail(name, ": ", e.what());
    }
    return std::make_unique<FloatLinear>(w, b);
  };
}

}  // namespace l4q
