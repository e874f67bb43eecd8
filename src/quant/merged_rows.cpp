// The entry points of merged_rows.h: the instruction set's variant, chosen at run time. The
// loops themselves are in merged_rows_kernels.h (generic) and merged_rows_avx2.cpp /
// merged_rows_avx512.cpp (x86-64).
#include "quant/merged_rows.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <c10/util/Half.h>

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

// ---------------------------------------------------------------------------------------
// 16-bit W0
// ---------------------------------------------------------------------------------------

namespace {

// n values widened to fp32 (exactly: every bfloat16 and half value is a float).
void widen(const Bf16* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(src[i].bits) << 16;
    std::memcpy(dst + i, &u, sizeof u);
  }
}

#if L4Q_HAVE_X86_VARIANTS
__attribute__((target("avx,f16c"))) void widen_f16c(const F16* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = c10::detail::fp16_ieee_to_fp32_value(src[i].bits);
}
#endif

void widen(const F16* src, int64_t n, float* dst) {
#if L4Q_HAVE_X86_VARIANTS
  static const bool f16c = __builtin_cpu_supports("f16c");
  if (f16c) return widen_f16c(src, n, dst);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::detail::fp16_ieee_to_fp32_value(src[i].bits);
}

// Calls f(w0, i0, n) for consecutive row ranges [i0, i0 + n) of W0, w0 holding those rows
// widened to fp32: a per-thread buffer of about 512 KiB (L2), at least 4 rows (a forward tile).
template <typename W, typename F>
void by_widened_rows(const W* W0, int64_t rows, int64_t in, F&& f) {
  const int64_t step = std::max<int64_t>(4, (int64_t(1) << 17) / std::max<int64_t>(in, 1) / 4 * 4);
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(std::min(step, rows) * in));
  for (int64_t i0 = 0; i0 < rows; i0 += step) {
    const int64_t n = std::min(step, rows - i0);
    widen(W0 + i0 * in, n * in, buf.data());
    f(buf.data(), i0, n);
  }
}

// The AVX-512 loops read a 16-bit W0 themselves where they can, widening each register as
// they load it; elsewhere the rows are widened first (by_widened_rows). Same values, same bits.
bool avx512_reads_16bit(int64_t gs) {
#if L4Q_HAVE_X86_VARIANTS
  return rows_isa() == RowsIsa::Avx512 && kernels::avx512_reads_16bit(gs);
#else
  (void)gs;
  return false;
#endif
}

template <typename W>
void merged_rows_16(const W* W0, const float* A, const float* B, float scale, int64_t r,
                    int64_t rows, int64_t in, float* dst) {
  by_widened_rows(W0, rows, in, [&](const float* w, int64_t i0, int64_t n) {
    merged_rows(w, A, r > 0 ? B + i0 * r : B, scale, r, n, in, dst + i0 * in);
  });
}

template <typename W>
void quantize_rows_16(const W* W0, const float* A, const float* B, float scale, int64_t r,
                      const float* s, const float* b, int64_t rows, int64_t in, int64_t gs,
                      int bits, float* dst, int32_t* clipped) {
#if L4Q_HAVE_X86_VARIANTS
  if (avx512_reads_16bit(gs))
    return kernels::merged_quantize_rows_avx512(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst,
                                                clipped);
#endif
  const int64_t groups = in / gs;
  by_widened_rows(W0, rows, in, [&](const float* w, int64_t i0, int64_t n) {
    merged_quantize_rows(w, A, r > 0 ? B + i0 * r : B, scale, r, s + i0 * groups,
                         b + i0 * groups, n, in, gs, bits, dst + i0 * in,
                         clipped ? clipped + i0 : nullptr);
  });
}

template <typename W>
void backward_rows_16(const W* W0, const float* A, const float* At, int64_t rp, const float* B,
                      float scale, int64_t r, const float* s, const float* b, int64_t rows,
                      int64_t in, int64_t gs, int bits, float* dst, float* G, bool mask_G,
                      float* ds, float* db, float* dB_clip, float* dAt_clip,
                      const uint8_t* direct) {
#if L4Q_HAVE_X86_VARIANTS
  if (avx512_reads_16bit(gs))
    return kernels::merged_quantize_backward_rows_avx512(W0, A, At, rp, B, scale, r, s, b, rows,
                                                         in, gs, bits, dst, G, mask_G, ds, db,
                                                         dB_clip, dAt_clip, direct);
#endif
  // Row by row, so chunks of rows give the sums of the whole (dAt_clip in row order).
  const int64_t groups = in / gs;
  by_widened_rows(W0, rows, in, [&](const float* w, int64_t i0, int64_t n) {
    merged_quantize_backward_rows(w, A, At, rp, r > 0 ? B + i0 * r : B, scale, r,
                                  s + i0 * groups, b + i0 * groups, n, in, gs, bits,
                                  dst + i0 * in, G + i0 * in, mask_G, ds + i0 * groups,
                                  db + i0 * groups, dB_clip ? dB_clip + i0 * r : nullptr,
                                  dAt_clip, direct ? direct + i0 : nullptr);
  });
}

}  // namespace

#define L4Q_ROWS_16BIT(W)                                                                        \
  void merged_rows(const W* W0, const float* A, const float* B, float scale, int64_t r,          \
                   int64_t rows, int64_t in, float* dst) {                                      \
    merged_rows_16(W0, A, B, scale, r, rows, in, dst);                                           \
  }                                                                                              \
  void merged_quantize_rows(const W* W0, const float* A, const float* B, float scale, int64_t r, \
                            const float* s, const float* b, int64_t rows, int64_t in,           \
                            int64_t gs, int bits, float* dst, int32_t* clipped) {               \
    quantize_rows_16(W0, A, B, scale, r, s, b, rows, in, gs, bits, dst, clipped);                \
  }                                                                                              \
  void merged_quantize_backward_rows(const W* W0, const float* A, const float* At, int64_t rp,   \
                                     const float* B, float scale, int64_t r, const float* s,    \
                                     const float* b, int64_t rows, int64_t in, int64_t gs,      \
                                     int bits, float* dst, float* G, bool mask_G, float* ds,    \
                                     float* db, float* dB_clip, float* dAt_clip,                \
                                     const uint8_t* direct) {                                   \
    backward_rows_16(W0, A, At, rp, B, scale, r, s, b, rows, in, gs, bits, dst, G, mask_G, ds,   \
                     db, dB_clip, dAt_clip, direct);                                             \
  }
L4Q_ROWS_16BIT(Bf16)
L4Q_ROWS_16BIT(F16)
#undef L4Q_ROWS_16BIT

}  // namespace l4q::cpu
