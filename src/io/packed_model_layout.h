// Names shared by the `l4q` export writer (src/export/l4q_export.cpp) and its reader
// (src/io/packed_model.cpp); the layout itself is documented in docs/formats.md.
#pragma once

namespace l4q::packed_layout {

inline constexpr const char* kQuantMethod = "l4q";
inline constexpr int kFormatVersion = 1;
inline constexpr const char* kWeightsFile = "model.safetensors";
inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kTokenizerFile = "tokenizer.model";
// A byte-level BPE (SmolLM2, LLaMA-3) is kept as HF does: tokenizer.json beside a
// tokenizer_config.json naming its special tokens.
inline constexpr const char* kBpeTokenizerFile = "tokenizer.json";

// Tensor suffixes after the module name ("model.layers.0.self_attn.q_proj").
inline constexpr const char* kQweight = ".qweight";  // U8 [out, ceil(in / 32) * 32 * bits / 8]
inline constexpr const char* kScales = ".scales";    // F32 [out, in / group_size]
inline constexpr const char* kOffsets = ".offsets";  // F32 [out, in / group_size]
inline constexpr const char* kWeight = ".weight";    // F32 [out, in]: layers left float
inline constexpr const char* kBias = ".bias";        // F32 [out], optional

}  // namespace l4q::packed_layout
