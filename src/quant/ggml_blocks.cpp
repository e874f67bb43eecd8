#include "l4q/quant/ggml_blocks.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "l4q/error.h"

namespace l4q {

float fp16_to_fp32(ggml_half h) { return c10::detail::fp16_ieee_to_fp32_value(h); }
ggml_half fp32_to_fp16(float f) { return c10::detail::fp16_ieee_from_fp32_value(f); }

float bf16_to_fp32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ggml_compute_fp32_to_bf16: NaN forced quiet, otherwise round to nearest even.
uint16_t fp32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

namespace {

// --- plain float formats -------------------------------------------------------------------
void f32_to_float(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, n * 4); }
void f32_from_float(const float* src, void* dst, int64_t n) { std::memcpy(dst, src, n * 4); }

void f16_to_float(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    ggml_half h;
    std::memcpy(&h, p + 2 * i, 2);
    dst[i] = fp16_to_fp32(h);
  }
}
void f16_from_float(const float* src, void* dst, int64_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const ggml_half h = fp32_to_fp16(src[i]);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

void bf16_to_float(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    dst[i] = bf16_to_fp32(h);
  }
}
void bf16_from_float(const float* src, void* dst, int64_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = fp32_to_bf16(src[i]);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

// --- block formats (dequantize_row_* / quantize_row_*_ref of ggml-quants.c) ----------------
template <typename Block>
Block load_block(const void* src, int64_t i) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(src) + i * sizeof(Block), sizeof(Block));
  return b;
}
template <typename Block>
void store_block(void* dst, int64_t i, const Block& b) {
  std::memcpy(static_cast<uint8_t*>(dst) + i * sizeof(Block), &b, sizeof(Block));
}

void q4_0_to_float(const void* src, float* y, int64_t n) {
  constexpr int64_t qk = kQK4_0;
  for (int64_t i = 0; i < n / qk; ++i) {
    const auto b = load_block<BlockQ4_0>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int64_t j = 0; j < qk / 2; ++j) {
      y[i * qk + j] = static_cast<float>((b.qs[j] & 0x0F) - 8) * d;
      y[i * qk + j + qk / 2] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
    }
  }
}

void q4_0_from_float(const float* x, void* dst, int64_t n) {
  constexpr int64_t qk = kQK4_0;
  for (int64_t i = 0; i < n / qk; ++i) {
    float amax = 0.0f, max = 0.0f;  // the element of largest magnitude keeps its sign
    for (int64_t j = 0; j < qk; ++j) {
      const float v = x[i * qk + j];
      if (amax < std::fabs(v)) {
        amax = std::fabs(v);
        max = v;
      }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 b{};
    b.d = fp32_to_fp16(d);
    for (int64_t j = 0; j < qk / 2; ++j) {
      const float x0 = x[i * qk + j] * id;
      const float x1 = x[i * qk + qk / 2 + j] * id;
      const auto xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
      const auto xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
      b.qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
    store_block(dst, i, b);
  }
}

void q4_1_to_float(const void* src, float* y, int64_t n) {
  constexpr int64_t qk = kQK4_1;
  for (int64_t i = 0; i < n / qk; ++i) {
    const auto b = load_block<BlockQ4_1>(src, i);
    const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
    for (int64_t j = 0; j < qk / 2; ++j) {
      y[i * qk + j] = static_cast<float>(b.qs[j] & 0x0F) * d + m;
      y[i * qk + j + qk / 2] = static_cast<float>(b.qs[j] >> 4) * d + m;
    }
  }
}

void q4_1_from_float(const float* x, void* dst, int64_t n) {
  constexpr int64_t qk = kQK4_1;
  for (int64_t i = 0; i < n / qk; ++i) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int64_t j = 0; j < qk; ++j) {
      const float v = x[i * qk + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_1 b{};
    b.d = fp32_to_fp16(d);
    b.m = fp32_to_fp16(min);
    for (int64_t j = 0; j < qk / 2; ++j) {
      const float x0 = (x[i * qk + j] - min) * id;
      const float x1 = (x[i * qk + qk / 2 + j] - min) * id;
      const auto xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
      const auto xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f))));
      b.qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
    store_block(dst, i, b);
  }
}

void q8_0_to_float(const void* src, float* y, int64_t n) {
  constexpr int64_t qk = kQK8_0;
  for (int64_t i = 0; i < n / qk; ++i) {
    const auto b = load_block<BlockQ8_0>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int64_t j = 0; j < qk; ++j) y[i * qk + j] = static_cast<float>(b.qs[j]) * d;
  }
}

void q8_0_from_float(const float* x, void* dst, int64_t n) {
  constexpr int64_t qk = kQK8_0;
  for (int64_t i = 0; i < n / qk; ++i) {
    float amax = 0.0f;
    for (int64_t j = 0; j < qk; ++j) amax = std::max(amax, std::fabs(x[i * qk + j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 b{};
    b.d = fp32_to_fp16(d);
    for (int64_t j = 0; j < qk; ++j) b.qs[j] = static_cast<int8_t>(std::round(x[i * qk + j] * id));
    store_block(dst, i, b);
  }
}

constexpr int64_t QK_K = 256;

// Indexed by type id; sizes as in ggml's type_traits (and gguf-py's GGML_QUANT_SIZES).
constexpr GgmlTypeTraits kTraits[] = {
    {GgmlType::F32, "F32", 1, 4, f32_to_float, f32_from_float},
    {GgmlType::F16, "F16", 1, 2, f16_to_float, f16_from_float},
    {GgmlType::Q4_0, "Q4_0", kQK4_0, sizeof(BlockQ4_0), q4_0_to_float, q4_0_from_float},
    {GgmlType::Q4_1, "Q4_1", kQK4_1, sizeof(BlockQ4_1), q4_1_to_float, q4_1_from_float},
    {GgmlType{4}, nullptr, 0, 0, nullptr, nullptr},  // Q4_2, retired
    {GgmlType{5}, nullptr, 0, 0, nullptr, nullptr},  // Q4_3, retired
    {GgmlType::Q5_0, "Q5_0", 32, 2 + 4 + 16, nullptr, nullptr},
    {GgmlType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16, nullptr, nullptr},
    {GgmlType::Q8_0, "Q8_0", kQK8_0, sizeof(BlockQ8_0), q8_0_to_float, q8_0_from_float},
    {GgmlType::Q8_1, "Q8_1", 32, 4 + 4 + 32, nullptr, nullptr},
    {GgmlType::Q2_K, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4, nullptr, nullptr},
    {GgmlType::Q3_K, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, nullptr, nullptr},
    {GgmlType::Q4_K, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12, nullptr, nullptr},
    {GgmlType::Q5_K, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12, nullptr, nullptr},
    {GgmlType::Q6_K, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16, nullptr, nullptr},
    {GgmlType::Q8_K, "Q8_K", QK_K, 4 + QK_K + QK_K / 8, nullptr, nullptr},
    {GgmlType::IQ2_XXS, "IQ2_XXS", QK_K, 2 + QK_K / 4, nullptr, nullptr},
    {GgmlType::IQ2_XS, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32, nullptr, nullptr},
    {GgmlType::IQ3_XXS, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8, nullptr, nullptr},
    {GgmlType::IQ1_S, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16, nullptr, nullptr},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 2 + 16, nullptr, nullptr},
    {GgmlType::IQ3_S, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, nullptr, nullptr},
    {GgmlType::IQ2_S, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16, nullptr, nullptr},
    {GgmlType::IQ4_XS, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, nullptr, nullptr},
    {GgmlType::I8, "I8", 1, 1, nullptr, nullptr},
    {GgmlType::I16, "I16", 1, 2, nullptr, nullptr},
    {GgmlType::I32, "I32", 1, 4, nullptr, nullptr},
    {GgmlType::I64, "I64", 1, 8, nullptr, nullptr},
    {GgmlType::F64, "F64", 1, 8, nullptr, nullptr},
    {GgmlType::IQ1_M, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, nullptr, nullptr},
    {GgmlType::BF16, "BF16", 1, 2, bf16_to_float, bf16_from_float},
};
constexpr uint32_t kNumTraits = sizeof(kTraits) / sizeof(kTraits[0]);
static_assert(static_cast<uint32_t>(GgmlType::BF16) == kNumTraits - 1, "traits table out of order");

}  // namespace

const GgmlTypeTraits* find_ggml_type(uint32_t id) {
  if (id >= kNumTraits || kTraits[id].name == nullptr) return nullptr;
  return &kTraits[id];
}

const GgmlTypeTraits& ggml_traits(GgmlType type) {
  const auto* t = find_ggml_type(static_cast<uint32_t>(type));
  if (t == nullptr) fail("ggml type id ", static_cast<uint32_t>(type), ": unknown type");
  return *t;
}

std::string to_string(GgmlType type) {
  const auto* t = find_ggml_type(static_cast<uint32_t>(type));
  return t != nullptr ? t->name : "ggml_type(" + std::to_string(static_cast<uint32_t>(type)) + ")";
}

GgmlType parse_ggml_type(const std::string& name) {
  std::string up = name;
  std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return std::toupper(c); });
  for (const auto& t : kTraits)
    if (t.name != nullptr && up == t.name) return t.type;
  fail("ggml type '", name, "': unknown (expected F32, F16, BF16, Q4_0, Q4_1, Q8_0, ...)");
}

uint64_t ggml_nbytes(GgmlType type, int64_t n, const std::string& what) {
  const auto& t = ggml_traits(type);
  if (n < 0 || n % t.block_size != 0)
    fail(what, ": ", n, " elements of type ", t.name, ": expected a multiple of the block size ",
         t.block_size);
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(n / t.block_size), static_cast<uint64_t>(t.type_size), &bytes))
    fail(what, ": byte size of ", n, " elements of type ", t.name, " overflows");
  return bytes;
}

}  // namespace l4q
