// GGUF export for llama.cpp: a GGUF v3 file with llama metadata, the SentencePiece vocabulary
// and the tensors under llama.cpp's names, q/k rows in Meta's interleaved order.
//
// Linear layers, by what the trained grid allows (FORMATS.md §5-6):
//   bits <= 4, group a multiple of 32  -> Q4_1 carrying the trained codes unchanged:
//       nibble q = w_int - Qn, d = fp16(s), m = fp16(b + s*Qn) repeated over the 32-element
//       blocks of a group. Only the fp16 rounding of d and m differs from training.
//   8 bits, offset b == 0 everywhere, group a multiple of 32 -> Q8_0: qs = w_int, d = fp16(s).
//   anything else (group 172 of a per-channel fallback, 5-8 asymmetric bits, a float method)
//       -> the trained W_q as F16 when that is lossless, else F32; listed in the notes.
// Embedding, norms and an untied lm_head are F32 (what training used). The report gives the
// measured max |exported - trained| over all weights, and the max fp16 errors of d and m.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "l4q/export/report.h"
#include "l4q/quant/merged_weight.h"
#include "l4q/train/run.h"

namespace l4q {

// Writes `out_path` (a .gguf file, atomically). Throws l4q::Error when it exists and
// !opt.force, or when the run's vocabulary cannot be found or is larger than the model's.
ExportReport export_gguf(const TrainedRun& run, const std::string& out_path, const ExportOptions& opt);

// Whether a layer with this merged grid and in_features can be stored as Q4_1 / Q8_0
// exactly up to fp16 scales; `why` receives the reason when not.
bool fits_q4_1(const QuantGrid& grid, int64_t in_features, std::string* why = nullptr);
bool fits_q8_0(const MergedWeight& w, std::string* why = nullptr);

// Q4_1 blocks of a merged weight, rows in the order given: out * in/32 blocks of 20 bytes.
// Requires fits_q4_1. (Permute rows before, e.g. with rotate_half_to_interleaved.)
std::vector<uint8_t> pack_q4_1(const MergedWeight& w);
// Q8_0 blocks (34 bytes per 32 weights). Requires fits_q8_0.
std::vector<uint8_t> pack_q8_0(const MergedWeight& w);

// The same rows reordered (codes, s and b together), for q/k: rotate-half -> interleaved.
MergedWeight permute_rows_to_interleaved(const MergedWeight& w, int64_t n_heads);

}  // namespace l4q
