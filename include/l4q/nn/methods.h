// Method selection: which linear layers a fine-tuning method replaces, and with what.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "l4q/nn/baselines.h"
#include "l4q/nn/l4q_linear.h"
#include "l4q/nn/linear.h"

namespace l4q {

enum class LinearMethod { Float, Lora, LoraRtn, QatLora, QaLora, Lsq, L4Q, Rtn };

LinearMethod parse_linear_method(const std::string& name);  // "l4q", "lora", "qat-lora", ...
std::string to_string(LinearMethod m);
bool is_quantized(LinearMethod m);  // everything but float and lora
bool trains(LinearMethod m);        // everything but float and rtn

struct MethodSpec {
  LinearMethod method = LinearMethod::L4Q;
  LoraSpec lora;                          // lora, lora-rtn, qat-lora, qa-lora, l4q
  QuantGrid grid{4, 128};                 // every quantized method
  LsqInit init = LsqInit::L4Q;            // learned quantizers (l4q, lsq, qat-lora learned)
  LsqInit ptq_init = LsqInit::MinMax;     // RTN / PTQ steps (rtn, lora-rtn, qat-lora export, qa-lora base)
  double grad_scale = 0.0;                // LSQ g, <= 0: 1/sqrt(G*Qp)
  int64_t row_chunk = 0;  // 0: automatic (L4QOptions::row_chunk)
  bool qat_learn_scales = false;          // qat-lora: learn s, b of the base (torchao "range learning")
  // l4q only: the forward uses the offset b_eff = s * clamp(round(b/s), -Qp, -Qn) (straight-
  // through round), so the trained weight is s * (w_int + k) with an integer k and exports
  // to integer-zero-point formats (GPTQ: z = -Qn - k in [0, 2^bits - 1]) without offset error.
  bool integer_offset = false;
  // l4q only, CPU fp32 models: the dtype each frozen weight W0 is kept in: "float32" (as
  // loaded), "bfloat16" or "float16" (half the memory; L4Q's own loops read W0, widening it as
  // they load it, and give the bits of the same values in fp32). Exact for a checkpoint stored
  // in that dtype; an fp32 checkpoint's weights are rounded to it.
  std::string frozen_dtype = "float32";
  // A layer whose in_features the group size does not divide: an error (false), or one
  // group per row for that layer (true; e.g. stories260K's down_proj has in = 172). Layers
  // that fell back are listed by fallback_layers().
  bool per_channel_if_indivisible = false;
  // Module names (the last component of the HF name) the method applies to; others stay float.
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
  uint64_t seed = 0;                      // LoRA A init: per-layer generator seeded from (seed, name)

  void validate(const std::string& where) const;
};

// A factory for LlamaModel: builds `spec.method` layers for targeted module names, float
// layers elsewhere. LoRA A of each layer is drawn from a generator seeded by (seed, name), so
// a model is reproducible whatever order its layers are built in.
LinearFactory make_linear_factory(const MethodSpec& spec);

// The grid a layer with `in_features` gets under `spec` (group_size -1 when it falls back).
QuantGrid grid_for_layer(const MethodSpec& spec, int64_t in_features);

}  // namespace l4q
