// ggml tensor types and the byte layouts of the block formats l4q reads and writes, after
// ggml-org/ggml src/ggml-common.h and src/ggml-quants.c. One table (ggml_type_traits) gives,
// for every type id, its name, block size, bytes per block and the reference conversions, so
// that the GGUF reader, the GGUF writer and the exporters cannot disagree about a layout.
// No torch here: plain arrays in, plain arrays out.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace l4q {

// ggml_type ids as stored in GGUF tensor infos. Ids 4 and 5 (Q4_2, Q4_3) are retired.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
};

using ggml_half = uint16_t;  // IEEE-754 binary16 bits

// Q4_0: 32 weights, symmetric.  x = (q - 8) * d,  q in [0, 15].  4.5 bits per weight.
// Byte j of qs holds element j (low nibble) and element j + 16 (high nibble).
constexpr int64_t kQK4_0 = 32;
struct BlockQ4_0 {
  ggml_half d;              // scale
  uint8_t qs[kQK4_0 / 2];   // nibbles
};
static_assert(sizeof(BlockQ4_0) == sizeof(ggml_half) + kQK4_0 / 2, "wrong q4_0 block size/padding");

// Q4_1: 32 weights, affine.  x = q * d + m,  q in [0, 15].  5.0 bits per weight.
// Same nibble order as Q4_0. The only llama.cpp type that stores an L4Q group (s, m) directly.
constexpr int64_t kQK4_1 = 32;
struct BlockQ4_1 {
  ggml_half d;              // scale
  ggml_half m;              // offset (the block minimum for the reference quantizer)
  uint8_t qs[kQK4_1 / 2];   // nibbles
};
static_assert(sizeof(BlockQ4_1) == 2 * sizeof(ggml_half) + kQK4_1 / 2, "wrong q4_1 block size/padding");

// Q8_0: 32 weights, symmetric.  x = q * d,  q in [-127, 127].  8.5 bits per weight.
constexpr int64_t kQK8_0 = 32;
struct BlockQ8_0 {
  ggml_half d;              // scale
  int8_t qs[kQK8_0];        // signed codes
};
static_assert(sizeof(BlockQ8_0) == sizeof(ggml_half) + kQK8_0, "wrong q8_0 block size/padding");

// Converts n elements (n a multiple of block_size) of packed bytes to fp32, or fp32 to packed
// bytes with ggml's reference quantizer (quantize_row_*_ref: bit for bit the same bytes).
// Neither pointer needs any alignment.
using GgmlToFloat = void (*)(const void* src, float* dst, int64_t n);
using GgmlFromFloat = void (*)(const float* src, void* dst, int64_t n);

struct GgmlTypeTraits {
  GgmlType type;
  const char* name;           // as ggml spells it: "F32", "Q4_0", ...
  int64_t block_size;         // elements per block
  int64_t type_size;          // bytes per block
  GgmlToFloat to_float;       // nullptr: l4q cannot dequantize this type
  GgmlFromFloat from_float;   // nullptr: l4q cannot quantize to this type
};

// The traits of a type id, or nullptr when ggml defines no type with that id.
const GgmlTypeTraits* find_ggml_type(uint32_t id);
// The traits of a known type.
const GgmlTypeTraits& ggml_traits(GgmlType type);
// "F32", "Q4_1", ...
std::string to_string(GgmlType type);
// Parses a name as spelled by to_string (case-insensitive). Throws l4q::Error otherwise.
GgmlType parse_ggml_type(const std::string& name);
// Bytes of n elements; throws l4q::Error naming `what` when n is not a multiple of the block
// size or the size overflows.
uint64_t ggml_nbytes(GgmlType type, int64_t n, const std::string& what);

// Scalar conversions with ggml's rounding (round to nearest even; bf16 keeps NaN quiet).
float fp16_to_fp32(ggml_half h);
ggml_half fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

}  // namespace l4q
