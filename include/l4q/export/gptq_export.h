// GPTQ v2 export (AutoGPTQ / GPTQModel checkpoint layout, FORMATS.md §7): an HF directory
// whose quantized projections are stored as
//   qweight int32 [in*bits/32, out]   codes q = w_int - Qn packed along `in`, LSB first
//   qzeros  int32 [groups, out*bits/32] zero points z packed the same way along `out`
//   scales  fp16  [groups, out]       fp16(s)
//   g_idx   int32 [in]                i / group_size
// dequantized by readers as W[i, o] = scales[g, o] * (q[i, o] - z[g, o]), g = g_idx[i].
// 2, 4 and 8 bits put 32/bits codes in each word; 3 bits put 32 codes in 3 words (a code
// straddles words 0/1 and 1/2). "gptq_v2" stores z as-is (v1 stores z - 1).
//
// L4Q's W_q = s*w_int + b maps to z = -Qn - k with k = round(b/s) clamped so that z is in
// [0, 2^bits - 1]: exact when b = s*k (integer-offset training, quant.integer_offset), else
// off by |b - s*k| per group, reported as max_offset_error. q/k rows stay in HF order.
// Float layers (untargeted modules) are written as `.weight` and left out of
// quantization_config.modules_in_block_to_quantize / excluded through GPTQModel's `dynamic`.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "l4q/export/report.h"
#include "l4q/quant/merged_weight.h"
#include "l4q/train/run.h"

namespace l4q {

// Writes the directory `out_dir` (model.safetensors, config.json with quantization_config,
// quantize_config.json, tokenizer.model), atomically. Throws l4q::Error naming every layer
// that GPTQ cannot hold (bits not 2/3/4/8, in or out not a multiple of the packing, a group
// size other than the model's), or when out_dir exists and !opt.force.
ExportReport export_gptq(const TrainedRun& run, const std::string& out_dir, const ExportOptions& opt);

// Packs v [rows, cols] (integers in [0, 2^bits - 1], any integer dtype) along dim 0 into
// int32 [rows*bits/32, cols] with AutoGPTQ's pack() bit layout. rows must be a multiple of
// 32/bits (2, 4, 8 bits) or of 32 (3 bits). Throws l4q::Error otherwise.
at::Tensor gptq_pack_rows(const at::Tensor& v, int bits);
// The inverse: int32 [rows*bits/32, cols] -> int32 [rows, cols].
at::Tensor gptq_unpack_rows(const at::Tensor& packed, int bits, int64_t rows);

struct GptqTensors {
  at::Tensor qweight, qzeros, scales, g_idx;
  double max_offset_error = 0;  // max |b - s*k| over the groups
};
// The four GPTQ tensors of one merged weight. Throws l4q::Error (naming `name`) when the
// layer cannot be packed.
GptqTensors gptq_layer(const MergedWeight& w, const std::string& name);
// Dequantizes the four tensors as GPTQ readers do, in fp32: scales * (q - z).
at::Tensor gptq_dequantize(const GptqTensors& t, int bits);

}  // namespace l4q
