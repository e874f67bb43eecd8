// What an exporter wrote, and everything it could not carry exactly. Exporters never
// approximate silently: each fallback or rounding is a note here, printed by l4q-export and
// saved next to the export as export_report.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace l4q {

struct ExportOptions {
  bool force = false;  // replace an existing output path
};

struct ExportReport {
  std::string format;              // "l4q", "gguf", "gptq", "hf"
  std::string source;              // the run or checkpoint exported
  std::string path;                // what was written (file or directory)
  uint64_t bytes = 0;              // bytes written, all files
  int64_t quantized_layers = 0;    // linear layers written as integer codes
  int64_t float_layers = 0;        // linear layers written as floats (why: notes)
  // Largest |exported - trained| over all quantized weights, steps and offsets, in the units
  // of the weight. 0 for a lossless export.
  double max_weight_error = 0;
  double max_scale_error = 0;      // e.g. |s - fp16(s)|
  double max_offset_error = 0;     // e.g. |m - fp16(m)|, a rounded GPTQ zero point
  std::vector<std::string> notes;  // one line per approximation or fallback

  std::string to_json() const;     // one JSON object, every field
};

}  // namespace l4q
