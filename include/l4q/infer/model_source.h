// One loader for every form of a model that generation and evaluation accept:
//   float       an HF directory, a GGUF file or a llama2.c .bin (io/checkpoint.h), float layers;
//   fake-quant  an l4q-train run or checkpoint directory (train/run.h): the trained method's
//               layers, which multiply by their fake-quantized weight s*w_int + b
//               ("float" instead when the run's method is not quantized, e.g. lora);
//   packed      an l4q export directory (io/packed_model.h): PackedLinear layers on the codes.
// The form is recognised by content, in that order of checks: run/checkpoint directory,
// packed export directory, then load_checkpoint's own detection.
#pragma once
#include <memory>
#include <string>

#include "l4q/model/llama.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

struct LoadedModel {
  std::unique_ptr<Tokenizer> tokenizer;  // null only when asked with tokenizer_optional
  std::unique_ptr<LlamaModel> model;     // in eval mode (set_training(false))
  std::string kind;                      // "float", "fake-quant" or "packed"
  std::string description;               // one line for logs, e.g. "training run runs/x (l4q, step 200)"
};

// `tokenizer`: a SentencePiece .model that replaces the model's own (empty: the run's, the
// export's, or load_model_tokenizer's search for a checkpoint). With tokenizer_optional, a
// float checkpoint without any tokenizer loads with a null tokenizer instead of throwing
// (callers that work on ids only). Throws l4q::Error naming the path and the forms accepted
// when `path` is none of them, and when the tokenizer has more pieces than the model's
// vocabulary.
LoadedModel load_any_model(const std::string& path, const std::string& tokenizer = "",
                           bool tokenizer_optional = false);

}  // namespace l4q
