// `l4q-export --format l4q`: l4q's own packed directory, lossless for every quantized method.
//
//   OUT/config.json        the HF llama config plus "quantization_config" (docs/formats.md)
//   OUT/model.safetensors  per quantized projection <module>.qweight (U8 packed codes),
//                          <module>.scales and <module>.offsets (F32 per group); float
//                          projections as <module>.weight (F32); embeddings, norms, lm_head F32
//   OUT/tokenizer.model    the run's SentencePiece model
//
// Dequantizing what is written (PackedWeight::dequantize, load_packed_model) gives the training
// forward's W_q bit for bit; export_l4q checks that for every layer before committing.
#pragma once
#include <string>

#include "l4q/export/report.h"
#include "l4q/train/run.h"

namespace l4q {

// Writes `run` to directory `out_dir`. The directory is built beside it under a temporary
// name and renamed into place, so `out_dir` is either absent/unchanged or complete.
// Throws l4q::Error before writing anything when `out_dir` exists and !opt.force, or when a
// layer's bit width has no packed form (5, 6, 7 bits: the format stores 2, 3, 4, 8).
// Float methods (float, lora) export every projection as a float <module>.weight (a note in
// the report says so).
ExportReport export_l4q(const TrainedRun& run, const std::string& out_dir, const ExportOptions& opt);

}  // namespace l4q
