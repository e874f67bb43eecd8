// The entry points of merged_rows.h: the instruction set's variant, chosen at run time. The
// loops themselves are in merged_rows_kernels.h (generic) and merged_rows_avx2.cpp /
// merged_rows_avx512.cpp (x86-64).
#include "quant/merged_rows.h"

#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>

#include "l4q/error.h"
#include "quant/merged_rows_kernels.h"

namespace l4q::cpu {
namespace {

using namespace kernels;

bool cpu_has_avx2_fma() {
#if L4Q_HAVE_X86_VARIANTS
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if L4Q_HAVE_X86_VARIANTS
  static const bool has = cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq");
  return has;
#else
  return false;
#endif
}

// The baseline variants: the generic code.
template <typename T>
void merged_rows_base(const T* W0, const T* A, const T* B, T scale, int64_t r, int64_t rows,
                      int64_t in, T* dst) {
  merged_rows_impl(W0, A, B, scale, r, rows, in, dst);
}
template <typename T>
void merged_quantize_rows_base(const T* W0, const T* A, const T* B, T scale, int64_t r,
                               const T* s, const T* b, int64_t rows, int64_t in, int64_t gs,
                               int bits, T* dst, int32_t* clipped) {
  merged_quantize_rows_impl(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, clipped);
}
template <typename T>
void merged_quantize_backward_rows_base(const T* W0, const T* A, const T* At, int64_t rp,
                                        const T* B, T scale, int64_t r, const T* s, const T* b,
                                        int64_t rows, int64_t in, int64_t gs, int bits, T* dst,
                                        T* G, bool mask_G, T* ds, T* db, T* dB_clip, T* dAt_clip,
                                        const uint8_t* direct) {
  merged_quantize_backward_rows_impl(W0, A, At, rp, B, scale, r, s, b, rows, in, gs, bits, dst, G,
                                     mask_G, ds, db, dB_clip, dAt_clip, direct);
}

std::atomic<int> g_isa{-1};  // -1: automatic; else a RowsIsa pinned by set_rows_isa

}  // namespace

bool rows_isa_available(RowsIsa isa) {
  switch (isa) {
    case RowsIsa::Base: return true;
    case RowsIsa::Avx2: return cpu_has_avx2_fma();
    case RowsIsa::Avx512: return cpu_has_avx512();
  }
  return false;
}

RowsIsa capped_isa(RowsIsa widest, const char* cap_env) {
  const std::string cap = cap_env ? cap_env : "";
  if (!cap.empty() && cap != "avx512" && cap != "avx2" && cap != "base")
    fail("environment variable L4Q_CPU_ISA: expected avx512, avx2 or base, got '", cap, "'");
  if (cap == "base") return RowsIsa::Base;
  if (cap == "avx2" && widest == RowsIsa::Avx512) return RowsIsa::Avx2;
  return widest;
}

RowsIsa automatic_isa() {
  static const RowsIsa isa = capped_isa(cpu_has_avx512()     ? RowsIsa::Avx512
                                        : cpu_has_avx2_fma() ? RowsIsa::Avx2
                                                             : RowsIsa::Base,
                                        std::getenv("L4Q_CPU_ISA"));
  return isa;
}

RowsIsa rows_isa() {
  const int pinned = g_isa.load(std::memory_order_relaxed);
  return pinned >= 0 ? static_cast<RowsIsa>(pinned) : automatic_isa();
}

void set_rows_isa(std::optional<RowsIsa> isa) {
  if (isa && !rows_isa_available(*isa))
    fail("[set_rows_isa] isa: this CPU or build lacks instruction set ", static_cast<int>(*isa),
         " (0: generic, 1: AVX2 + FMA, 2: AVX-512)");
  g_isa.store(isa ? static_cast<int>(*isa) : -1, std::memory_order_relaxed);
}

#if L4Q_HAVE_X86_VARIANTS
#define L4Q_PICK(name, ...)                                            \
  switch (rows_isa()) {                                                \
    case RowsIsa::Avx512: return kernels::name##_avx512(__VA_ARGS__); \
    case RowsIsa::Avx2: return kernels::name##_avx2(__VA_ARGS__);     \
    default: return name##_base(__VA_ARGS__);                          \
  }
#else
#define L4Q_PICK(name, ...) return name##_base(__VA_ARGS__)
#endif

// The public entry points, for T = float and double (the header's overloads).
#define L4Q_ENTRY_POINTS(T)                                                                     \
  void merged_rows(const T* W0, const T* A, const T* B, T scale, int64_t r, int64_t rows,       \
                   int64_t in, T* dst) {                                                        \
    L4Q_PICK(merged_rows, W0, A, B, scale, r, rows, in, dst);                                   \
  }                                                                                             \
  void merged_quantize_rows(const T* W0, const T* A, const T* B, T scale, int64_t r,            \
                            const T* s, const T* b, int64_t rows, int64_t in, int64_t gs,       \
                            int bits, T* dst, int32_t* clipped) {                               \
    L4Q_PICK(merged_quantize_rows, W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, clipped); \
  }                                                                                             \
  void merged_quantize_backward_rows(const T* W0, const T* A, const T* At, int64_t rp,          \
                                     const T* B, T scale, int64_t r, const T* s, const T* b,    \
                                     int64_t rows, int64_t in, int64_t gs, int bits, T* dst,    \
                                     T* G, bool mask_G, T* ds, T* db, T* dB_clip, T* dAt_clip,  \
                                     const uint8_t* direct) {                                   \
    L4Q_PICK(merged_quantize_backward_rows, W0, A, At, rp, B, scale, r, s, b, rows, in, gs,     \
             bits, dst, G, mask_G, ds, db, dB_clip, dAt_clip, direct);                          \
  }

L4Q_ENTRY_POINTS(float)
L4Q_ENTRY_POINTS(double)

}  // namespace l4q::cpu
