// The AMX tile paths of the L4Q products with W_q (codes_matmul.h): detection, the splits of X
// and of dY s, the packing of codes and the tile loops.
//
// Every function that runs AVX-512 or tile instructions carries its own target attribute (no
// per-file -m flags: templates and inline functions instantiated here must stay baseline code
// for the linker to share), and runs only after amx_enabled() said yes.
#include "quant/codes_matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "l4q/error.h"

// L4Q_NO_AMX (a compile definition) builds without the tile path, as on other architectures.
#if !defined(L4Q_NO_AMX) && (defined(__x86_64__) || defined(_M_X64)) && \
    (defined(__GNUC__) || defined(__clang__))
#define L4Q_HAVE_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define L4Q_AMX_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#else
#define L4Q_HAVE_AMX 0
#endif

namespace l4q::cpu {
namespace {

#if L4Q_HAVE_AMX
bool detect_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = (d >> 24) & 1, amx_bf16 = (d >> 22) & 1;
  const bool avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);
  if (!tile || !amx_bf16 || !avx512) return false;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return false;  // AVX512-BF16
  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;          // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  // The OS saves opmask/ZMM state (bits 5-7) and may grant XTILECFG/XTILEDATA (17, 18).
  if ((lo & 0xE6u) != 0xE6u) return false;
  // Linux hands the tile data state out per process on request (ARCH_REQ_XCOMP_PERM).
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
}
#endif

bool env_allows_amx() {
  const char* v = std::getenv("L4Q_AMX");
  const std::string s = v ? v : "";
  if (!s.empty() && s != "0" && s != "1")
    fail("environment variable L4Q_AMX: expected 0 (off) or 1 (on where the CPU has it), got '",
         s, "'");
  return s != "0";
}

std::atomic<int> g_amx{-1};  // -1: automatic; 0/1: set by set_amx_enabled

}  // namespace

bool amx_available() {
#if L4Q_HAVE_AMX
  static const bool has = detect_amx();
  return has;
#else
  return false;
#endif
}

bool amx_enabled() {
  const int set = g_amx.load(std::memory_order_relaxed);
  if (set >= 0) return set == 1;
  static const bool automatic = amx_available() && env_allows_amx();
  return automatic;
}

void set_amx_enabled(std::optional<bool> on) {
  if (on && *on && !amx_available())
    fail("[set_amx_enabled] this CPU, OS or build has no AMX-BF16 tile unit");
  g_amx.store(on ? int(*on) : -1, std::memory_order_relaxed);
}

int64_t amx_dx_slab_columns(int64_t gs) {
  if (gs <= 128) return gs;
  return gs % 128 == 0 ? 128 : gs % 64 == 0 ? 64 : 32;
}
int64_t amx_dx_parts_elements(int64_t nb) { return 32 * ((nb + 31) / 32 * 32) * 3; }
int64_t amx_dx_codes_elements(int64_t nb, int64_t cw) { return cw * ((nb + 31) / 32 * 32); }

int64_t amx_parts_elements(int64_t M, int64_t K) {
  const int64_t m32 = (M + 31) / 32 * 32;
  return m32 * K * 3;
}

#if L4Q_HAVE_AMX
// GCC 12's AVX-512 intrinsics pass an undefined register as an unused merge source, which
// -Wmaybe-uninitialized reports wherever they are inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace {

// 16 bfloat16 (as uint16) to fp32: exact.
L4Q_AMX_TARGET inline __m512 widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

L4Q_AMX_TARGET inline __m256i to_bf16(__m512 x) {
  return (__m256i)_mm512_cvtneps_pbh(x);
}

// The tile configuration: palette 1, tiles 0-7 all 16 rows of 64 bytes.
// 0-3: C (fp32 16x16), 4-5: A (two token tiles), 6-7: B (two code tiles).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// C tiles 0-3 += (A0, A1) x (B0, B1) over the steps [k0, k1) (k0 < k1): tile 0 = A0 B0,
// 1 = A0 B1, 2 = A1 B0, 3 = A1 B1. A step's three parts of A are at a + (k * 3 + part) * 512,
// its B tile at b + k * 512 (bf16 elements). Tiles 4-5 hold A, 6-7 B. between(k) runs after
// step k's tile instructions are issued: vector work placed there runs while they execute.
// Software-pipelined: each tile is reloaded as soon as its last product of the step has been
// issued, so its load overlaps the products still to come (tiles are not renamed: a load waits
// for every earlier product that reads the tile).
struct NoWork {
  void operator()(int64_t) const {}
};
template <typename F = NoWork>
L4Q_AMX_TARGET inline void tile_products(const uint16_t* a0, const uint16_t* a1,
                                         const uint16_t* b0, const uint16_t* b1, int64_t k0,
                                         int64_t k1, F&& between = F{}) {
  constexpr int64_t T = 512;
  _tile_loadd(6, b0 + k0 * T, 64);
  _tile_loadd(7, b1 + k0 * T, 64);
  _tile_loadd(4, a0 + k0 * 3 * T, 64);
  _tile_loadd(5, a1 + k0 * 3 * T, 64);
  for (int64_t k = k0; k < k1; ++k) {
    for (int sp = 0; sp < 2; ++sp) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_loadd(4, a0 + (k * 3 + sp + 1) * T, 64);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
      _tile_loadd(5, a1 + (k * 3 + sp + 1) * T, 64);
    }
    const bool more = k + 1 < k1;
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    if (more) _tile_loadd(6, b0 + (k + 1) * T, 64);
    _tile_dpbf16ps(1, 4, 7);
    if (more) _tile_loadd(4, a0 + (k + 1) * 3 * T, 64);
    _tile_dpbf16ps(3, 5, 7);
    if (more) {
      _tile_loadd(7, b1 + (k + 1) * T, 64);
      _tile_loadd(5, a1 + (k + 1) * 3 * T, 64);
    }
    between(k);  // vector work that overlaps this step's products
  }
}

L4Q_AMX_TARGET void load_tile_config() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.rows[i] = 16;
    cfg.colsb[i] = 64;
  }
  _tile_loadconfig(&cfg);
}

// Stores x's three bfloat16 parts (x1 + x2 + x3 == x exactly): 16 values each, at p, p + 512
// and p + 1024. Round to nearest at each step: every remainder is exact in fp32 and the last
// fits in 8 bits (codes_matmul.h).
L4Q_AMX_TARGET inline void store_parts(__m512 x, uint16_t* p) {
  const __m256i p1 = to_bf16(x);
  const __m512 r1 = _mm512_sub_ps(x, widen_bf16(p1));
  const __m256i p2 = to_bf16(r1);
  const __m256i p3 = to_bf16(_mm512_sub_ps(r1, widen_bf16(p2)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), p1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 512), p2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 1024), p3);
}

// The codes of 16 values w of W_q with step s and offset b: round((w - b) / s). Sets the
// lanes of `bad` whose code is wrong: it must dequantize (a multiply, then an add:
// qmath::dequantize) to the very value w (NaN compares unequal) and be exact in bfloat16.
L4Q_AMX_TARGET inline __m512 codes16(__m512 w, __m512 s, __m512 b, __mmask16& bad) {
  const __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_sub_ps(w, b), s),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  bad |= static_cast<__mmask16>(
      ~_mm512_cmp_ps_mask(_mm512_add_ps(_mm512_mul_ps(q, s), b), w, _CMP_EQ_OQ));
  bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(q), _mm512_set1_ps(256.0f), _CMP_GT_OQ);
  return q;
}

}  // namespace

L4Q_AMX_TARGET void amx_split_x(const float* X, int64_t M, int64_t K, int64_t gs, int64_t t0,
                                int64_t t1, uint16_t* parts, float* xsum) {
  const int64_t steps = K / kAmxStep, groups = K / gs, per_group = gs / kAmxStep;
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t rr = 0; rr < kAmxTile; ++rr) {
      const int64_t m = t * kAmxTile + rr;
      for (int64_t g = 0; g < groups; ++g) {
        __m512 sum = _mm512_setzero_ps();
        for (int64_t ks = g * per_group; ks < (g + 1) * per_group; ++ks) {
          uint16_t* dst = parts + ((t * steps + ks) * 3) * 512 + rr * kAmxStep;
          for (int h = 0; h < 2; ++h) {
            const __m512 x = m < M ? _mm512_loadu_ps(X + m * K + ks * kAmxStep + 16 * h)
                                   : _mm512_setzero_ps();
            sum = _mm512_add_ps(sum, x);
            store_parts(x, dst + 16 * h);
          }
        }
        xsum[m * groups + g] = _mm512_reduce_add_ps(sum);
      }
    }
  }
}

// Transposes 16 rows of 16 dwords in place: r[j] becomes column j (rows 0..15 in its lanes).
L4Q_AMX_TARGET inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane L: t[2i] = r[2i][4L], r[2i+1][4L], ...
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + c], lane L: rows 4i..4i+3 of column 4L + c
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // column 4L + c: lane L of u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512i a = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88);
    const __m512i b = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
    const __m512i e = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
    const __m512i f = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
    r[c] = _mm512_shuffle_i32x4(a, e, 0x88);
    r[8 + c] = _mm512_shuffle_i32x4(a, e, 0xdd);
    r[4 + c] = _mm512_shuffle_i32x4(b, f, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(b, f, 0xdd);
  }
}

L4Q_AMX_TARGET bool amx_pack_codes(const float* wq, int64_t rows, int64_t K, int64_t gs,
                                   const float* s, const float* b, uint16_t* codes) {
  const int64_t steps = K / kAmxStep, groups = K / gs;
  __mmask16 bad = 0;
  for (int64_t ks = 0; ks < steps; ++ks) {
    const int64_t g = ks * kAmxStep / gs;
    // Row n's 32 codes of this step as 16 bf16 pairs; the tile wants pair kp of every row
    // together (row kp of the B operand), so the 16 x 16 pairs are transposed.
    __m512i r[16];
    for (int64_t n = 0; n < kAmxTile; ++n) {
      if (n >= rows) {
        r[n] = _mm512_setzero_si512();
        continue;
      }
      const __m512 sv = _mm512_set1_ps(s[n * groups + g]), bv = _mm512_set1_ps(b[n * groups + g]);
      const float* w = wq + n * K + ks * kAmxStep;
      r[n] = (__m512i)_mm512_cvtne2ps_pbh(codes16(_mm512_loadu_ps(w + 16), sv, bv, bad),
                                          codes16(_mm512_loadu_ps(w), sv, bv, bad));
    }
    transpose16(r);
    for (int kp = 0; kp < 16; ++kp)
      _mm512_storeu_si512(codes + ks * 512 + kp * 32, r[kp]);
  }
  return bad == 0;
}

L4Q_AMX_TARGET void amx_codes_matmul(const uint16_t* parts, const float* xsum, int64_t M,
                                     int64_t K, int64_t gs, const uint16_t* codes,
                                     const float* sT, const float* bT, int64_t nbp,
                                     int64_t nvalid, int64_t g0, int64_t g1, float* scratch,
                                     float* Y, int64_t ldy) {
  load_tile_config();
  const int64_t steps = K / kAmxStep, groups = K / gs, per_group = gs / kAmxStep;
  const int64_t m32 = (M + 31) / 32 * 32;
  float* acc = scratch;                // [32, nbp]
  float* P = scratch + 32 * nbp;       // two rounds of 4 tiles of 16 x 16
  constexpr int64_t kTileElems = 512;  // bf16 elements of one A or B tile
  for (int64_t m0 = 0; m0 < m32; m0 += 32) {
    const int64_t mt = m0 / kAmxTile;
    const int64_t mrows = std::min<int64_t>(32, M - m0);
    for (int64_t i = 0; i < 32; ++i) {
      float* a = acc + i * nbp;
      if (g0 == 0 || i >= mrows) {
        std::memset(a, 0, sizeof(float) * nbp);
      } else {
        std::memcpy(a, Y + (m0 + i) * ldy, sizeof(float) * nvalid);
        std::memset(a + nvalid, 0, sizeof(float) * (nbp - nvalid));
      }
    }
    // acc = fma(s, P, acc), then acc += b S (a multiply, then an add): per element, in
    // ascending group order. With one nonzero term, as for X = I: fl(fl(s q) + b).
    auto epilogue = [&](int64_t g, int64_t j, const float* Pe) L4Q_AMX_TARGET {
      for (int half = 0; half < 2; ++half) {
        const __m512 sv = _mm512_loadu_ps(sT + g * nbp + j + 16 * half);
        const __m512 bv = _mm512_loadu_ps(bT + g * nbp + j + 16 * half);
        for (int64_t i = 0; i < 32; ++i) {
          const float* p = Pe + ((i / 16) * 2 + half) * 256 + (i % 16) * 16;
          float* a = acc + i * nbp + j + 16 * half;
          __m512 v = _mm512_fmadd_ps(sv, _mm512_loadu_ps(p), _mm512_loadu_ps(a));
          v = _mm512_add_ps(v, _mm512_mul_ps(bv, _mm512_set1_ps(xsum[(m0 + i) * groups + g])));
          _mm512_storeu_ps(a, v);
        }
      }
    };
    bool pending = false;
    int64_t prev_g = 0, prev_j = 0, round = 0;
    for (int64_t g = g0; g < g1; ++g) {
      for (int64_t j = 0; j < nbp; j += 32) {
        const int64_t nt = j / kAmxTile;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const int64_t ks0 = g * per_group;
        tile_products(parts + mt * steps * 3 * kTileElems, parts + (mt + 1) * steps * 3 * kTileElems,
                      codes + nt * steps * kTileElems, codes + (nt + 1) * steps * kTileElems, ks0,
                      ks0 + per_group);
        // The previous round's epilogue runs here, after this round's tile products were
        // issued: the vector units work through it while the tile unit multiplies.
        if (pending) epilogue(prev_g, prev_j, P + 1024 * ((round & 1) ^ 1));
        float* Pr = P + 1024 * (round & 1);
        _tile_stored(0, Pr, 64);
        _tile_stored(1, Pr + 256, 64);
        _tile_stored(2, Pr + 512, 64);
        _tile_stored(3, Pr + 768, 64);
        pending = true;
        prev_g = g;
        prev_j = j;
        ++round;
      }
    }
    if (pending) epilogue(prev_g, prev_j, P + 1024 * ((round & 1) ^ 1));
    for (int64_t i = 0; i < mrows; ++i)
      std::memcpy(Y + (m0 + i) * ldy, acc + i * nbp, sizeof(float) * nvalid);
  }
  _tile_release();
}

L4Q_AMX_TARGET bool amx_dx_pack_codes(const float* wq, int64_t ldw, int64_t nb, int64_t cw,
                                      const float* sg, const float* bg, uint16_t* dcodes) {
  const int64_t steps = (nb + 31) / 32;
  // vpermw: (even row's k, odd row's k) pairs from [even 0..15 | odd 0..15].
  const __m512i interleave = _mm512_setr_epi32(
      16 << 16 | 0, 17 << 16 | 1, 18 << 16 | 2, 19 << 16 | 3, 20 << 16 | 4, 21 << 16 | 5,
      22 << 16 | 6, 23 << 16 | 7, 24 << 16 | 8, 25 << 16 | 9, 26 << 16 | 10, 27 << 16 | 11,
      28 << 16 | 12, 29 << 16 | 13, 30 << 16 | 14, 31 << 16 | 15);
  __mmask16 bad = 0;
  auto codes_of = [&](int64_t n, int64_t kt) L4Q_AMX_TARGET {
    if (n >= nb) return _mm512_setzero_ps();
    return codes16(_mm512_loadu_ps(wq + n * ldw + kt * 16), _mm512_set1_ps(sg[n]),
                   _mm512_set1_ps(bg[n]), bad);
  };
  for (int64_t ns = 0; ns < steps; ++ns)
    for (int64_t np = 0; np < 16; ++np) {
      const int64_t n = ns * 32 + 2 * np;
      for (int64_t kt = 0; kt < cw / 16; ++kt) {
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(codes_of(n + 1, kt), codes_of(n, kt));
        _mm512_storeu_si512(dcodes + (kt * steps + ns) * 512 + np * 32,
                            _mm512_permutexvar_epi16(interleave, both));
      }
    }
  return bad == 0;
}

namespace {

// Tokens [i0, i1) of 32 (rows >= mrows zero), step ns: D = fl(dY s) split into dparts.
L4Q_AMX_TARGET inline void split_scaled(const float* dY, int64_t ldy, int64_t mrows, int64_t nb,
                                        const float* sg, int64_t i0, int64_t i1, int64_t ns,
                                        int64_t steps, uint16_t* dparts) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t mt = i / kAmxTile, rr = i % kAmxTile;
    uint16_t* dst = dparts + ((mt * steps + ns) * 3) * 512 + rr * kAmxStep;
    // dY's rows are far apart (a row of the layer's outputs each): fetch this token's next
    // steps early, or their cache misses stall the tile instructions queued behind.
    if (i < mrows && (ns + 4) * 32 < nb) {
      _mm_prefetch(reinterpret_cast<const char*>(dY + i * ldy + (ns + 4) * 32), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(dY + i * ldy + (ns + 4) * 32 + 16), _MM_HINT_T0);
    }
    for (int h = 0; h < 2; ++h) {
      const int64_t n = ns * 32 + 16 * h;
      const __mmask16 valid =
          i < mrows && n < nb
              ? static_cast<__mmask16>(nb - n >= 16 ? 0xFFFF : (1u << (nb - n)) - 1)
              : 0;
      const __m512 d = _mm512_mul_ps(_mm512_maskz_loadu_ps(valid, dY + i * ldy + n),
                                     _mm512_maskz_loadu_ps(valid, sg + n));
      store_parts(d, dst + 16 * h);
    }
  }
}

}  // namespace

L4Q_AMX_TARGET void amx_dx_slab(const float* dY, int64_t ldy, int64_t M, int64_t nb,
                                const float* sg, const uint16_t* dcodes, int64_t cw,
                                const float* t, int64_t ldt, uint16_t* dparts, float* scratch,
                                float* dX, int64_t ldx) {
  load_tile_config();
  const int64_t steps = (nb + 31) / 32, per = amx_dx_parts_elements(nb), pairs = cw / 32;
  for (int64_t ns = 0; ns < steps; ++ns)
    split_scaled(dY, ldy, std::min<int64_t>(M, 32), nb, sg, 0, 32, ns, steps, dparts);
  float* C = scratch;  // [32][32]: the four tiles of a 32 x 32 block of dX
  for (int64_t m0 = 0; m0 < M; m0 += 32) {
    const uint16_t* cur = dparts + ((m0 / 32) & 1) * per;
    uint16_t* next = dparts + (((m0 / 32) & 1) ^ 1) * per;
    const int64_t mrows = std::min<int64_t>(32, M - m0), next_rows = M - m0 - 32;
    for (int64_t q = 0; q < pairs; ++q) {
      const int64_t c = q * 32;
      for (int64_t i = 0; i < 32; ++i) {
        if (i < mrows) std::memcpy(C + i * 32, dX + (m0 + i) * ldx + c, sizeof(float) * 32);
        else std::memset(C + i * 32, 0, sizeof(float) * 32);
      }
      _tile_loadd(0, C, 128);
      _tile_loadd(1, C + 16, 128);
      _tile_loadd(2, C + 16 * 32, 128);
      _tile_loadd(3, C + 16 * 32 + 16, 128);
      const int64_t kt = c / 16;
      // The next 32 tokens' parts are split while these tiles multiply: pass q of step ns
      // splits tokens [32 q / pairs, 32 (q + 1) / pairs) of that step.
      tile_products(cur, cur + steps * 3 * 512, dcodes + kt * steps * 512,
                    dcodes + (kt + 1) * steps * 512, 0, steps, [&](int64_t ns) L4Q_AMX_TARGET {
                      if (next_rows > 0)
                        split_scaled(dY + (m0 + 32) * ldy, ldy, std::min<int64_t>(32, next_rows),
                                     nb, sg, 32 * q / pairs, 32 * (q + 1) / pairs, ns, steps,
                                     next);
                    });
      _tile_stored(0, C, 128);
      _tile_stored(1, C + 16, 128);
      _tile_stored(2, C + 16 * 32, 128);
      _tile_stored(3, C + 16 * 32 + 16, 128);
      for (int64_t i = 0; i < mrows; ++i) {
        const __m512 tv = _mm512_set1_ps(t[(m0 + i) * ldt]);
        for (int h = 0; h < 2; ++h)
          _mm512_storeu_ps(dX + (m0 + i) * ldx + c + 16 * h,
                           _mm512_add_ps(_mm512_loadu_ps(C + i * 32 + 16 * h), tv));
      }
    }
  }
  _tile_release();
}
#pragma GCC diagnostic pop

#else  // !L4Q_HAVE_AMX: never called (amx_enabled() is false)

void amx_split_x(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, uint16_t*, float*) {
  fail("[amx_split_x] built without the AMX path");
}
bool amx_pack_codes(const float*, int64_t, int64_t, int64_t, const float*, const float*,
                    uint16_t*) {
  fail("[amx_pack_codes] built without the AMX path");
}
void amx_codes_matmul(const uint16_t*, const float*, int64_t, int64_t, int64_t, const uint16_t*,
                      const float*, const float*, int64_t, int64_t, int64_t, int64_t, float*,
                      float*, int64_t) {
  fail("[amx_codes_matmul] built without the AMX path");
}

bool amx_dx_pack_codes(const float*, int64_t, int64_t, int64_t, const float*, const float*,
                       uint16_t*) {
  fail("[amx_dx_pack_codes] built without the AMX path");
}
void amx_dx_slab(const float*, int64_t, int64_t, int64_t, const float*, const uint16_t*, int64_t,
                 const float*, int64_t, uint16_t*, float*, float*, int64_t) {
  fail("[amx_dx_slab] built without the AMX path");
}

#endif

}  // namespace l4q::cpu
