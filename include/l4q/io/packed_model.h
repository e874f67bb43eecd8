// Reading an `l4q` export (export_l4q; layout in docs/formats.md) into a LlamaModel whose
// projections are PackedLinear layers: the weights stay packed (the file's mapping is used in
// place) and no float copy of a quantized matrix is made.
#pragma once
#include <memory>
#include <string>

#include "l4q/model/config.h"
#include "l4q/model/llama.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

struct PackedModel {
  LlamaConfig config;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer.model
  std::unique_ptr<LlamaModel> model;
  std::string quantization_json;         // config.json's "quantization_config", as JSON text
};

// Is `path` a directory whose config.json has quantization_config.quant_method "l4q"?
// Never throws.
bool is_packed_model(const std::string& path);

// Loads `dir`. Every tensor's name, dtype and shape is checked against the config
// ("tensor 'x' has wrong shape; expected [a, b], got [c, d]"), missing and unexpected tensors
// are errors, steps must be finite and >= the minimum step, offsets finite; a malformed or
// truncated file throws l4q::Error naming the file and the tensor or key.
PackedModel load_packed_model(const std::string& dir);

}  // namespace l4q
