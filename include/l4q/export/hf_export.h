// HF export: the trained model dequantized to a float LLaMA directory (config.json,
// model.safetensors with F32 tensors, tokenizer.model) that any tool reads. Every weight is
// exactly the W_q the run trained with (fp32), so the export is lossless; the integer
// structure is not kept (use l4q, gguf or gptq for that).
#pragma once
#include <string>

#include "l4q/export/report.h"
#include "l4q/train/run.h"

namespace l4q {

// Writes directory `out_dir` atomically. Throws l4q::Error when it exists and !opt.force.
ExportReport export_hf(const TrainedRun& run, const std::string& out_dir, const ExportOptions& opt);

}  // namespace l4q
