// CPU loops that build the L4Q merged weight W_comb = W0 + scale * B A row by row and fake-
// quantize it in the same pass (private to src/).
//
// Why not addmm + a separate pass: the rank-r update is a GEMM with K = r (16), which BLAS runs
// memory-bound, and the forward and backward each need it once per step; with the quantizer
// (and in backward the gradients of s, b and the LoRA clip corrections) fused into the same
// loop, W0 is read once per pass and W_comb never goes through memory.
//
// Layout: W0, dst, G row-major [rows, in]; A [r, in]; B [rows, r] (the rows of this block);
// s, b, ds, db [rows, in/gs]; dB_clip [rows, r]; At, dAt_clip [in, rp]. Each function handles rows
// [0, rows) and is called from at::parallel_for over row ranges.
//
// Bits: W_comb[i, j] = W0[i, j] + scale * acc, acc = fma(B[i, r-1], A[r-1, j], ... fma(B[i, 0],
// A[0, j], 0)): the rank sum in a fixed order with fused multiply-adds, then a multiply and an
// add. Every caller (forward, backward, merge()) goes through these loops, so they all see the
// same bits whatever the row blocks, the thread count or the instruction set (the loops are
// compiled for the baseline, AVX2 + FMA and AVX-512, chosen at run time; merged_rows_kernels.h
// says how the variants keep the same order of operations).
#pragma once
#include <cstdint>
#include <optional>

namespace l4q::cpu {

// The instruction set of these loops: the widest the CPU has (AVX-512 F/VL/DQ, else AVX2 + FMA,
// else the generic code), capped by the environment variable L4Q_CPU_ISA=avx2 or =base, unless
// pinned. All give the same bits; tests pin each in turn to check that.
// set_rows_isa(std::nullopt) returns to automatic; pinning an instruction set the CPU lacks
// throws.
enum class RowsIsa { Base = 0, Avx2 = 1, Avx512 = 2 };
RowsIsa rows_isa();
bool rows_isa_available(RowsIsa isa);
void set_rows_isa(std::optional<RowsIsa> isa);
// The automatic choice: widest, capped by the value of L4Q_CPU_ISA (null or empty: no cap;
// "avx512", "avx2" or "base"); any other value throws l4q::Error naming the variable rather
// than silently running something else.
RowsIsa capped_isa(RowsIsa widest, const char* cap_env);

// dst = W_comb rows (no quantization). r = 0: dst = W0.
void merged_rows(const float* W0, const float* A, const float* B, float scale, int64_t r,
                 int64_t rows, int64_t in, float* dst);
void merged_rows(const double* W0, const double* A, const double* B, double scale, int64_t r,
                 int64_t rows, int64_t in, double* dst);

// dst = Q(W_comb rows): the forward pass's W_q. clipped (optional): per row, how many of its
// elements the quantizer clipped (the backward's choice of direct rows).
void merged_quantize_rows(const float* W0, const float* A, const float* B, float scale, int64_t r,
                          const float* s, const float* b, int64_t rows, int64_t in, int64_t gs,
                          int bits, float* dst, int32_t* clipped = nullptr);
void merged_quantize_rows(const double* W0, const double* A, const double* B, double scale,
                          int64_t r, const double* s, const double* b, int64_t rows, int64_t in,
                          int64_t gs, int bits, double* dst, int32_t* clipped = nullptr);

// Backward of one block, one pass over W0 and G (M: the mask of unclipped elements):
//   dst = Q(W_comb rows)                        (for dX = dY W_q; dst may be G itself when
//                                                 !mask_G: each element of G is read first)
//   G  <- M * G in place, if mask_G              (dW when W0 is trained)
//   ds[i, g] = sum_group G * (M ? w_int - w : w_c),  db[i, g] = sum_group G * (1 - M)  (unscaled)
// and, for the LoRA gradients dB = scale (M * G) A^T and dA = scale B^T (M * G), terms that the
// caller combines with unmasked rank-r products (src/nn/l4q_linear.cpp):
//   row i not direct:  dB_clip[i, k]   =  sum_j (1 - M)[i, j] G[i, j] A[k, j]
//                      dAt_clip[j, k] +=  B[i, k] (1 - M)[i, j] G[i, j]
//   row i direct:      dB_clip[i, k]   = -sum_j M[i, j] G[i, j] A[k, j]
//                      dAt_clip[j, k] += -B[i, k] M[i, j] G[i, j]
// (when dB_clip / dAt_clip are given and r > 0; direct: per row, nullptr = none). So
// dB = scale (U - dB_clip), with U = dY^T (X A^T) for ordinary rows and 0 for direct ones, and
// dA = scale ((dY B_o)^T X - dAt_clip^T), with B_o = B with the direct rows zeroed.
// Why: (M * G) A^T and B^T (M * G) cost 2r fmas per weight element every step, as much as
// rebuilding W_comb twice over, while the unmasked products are rank-r GEMMs that never touch G
// and the corrections cost work only per selected element: about 2r/8 vector fmas on one or two
// cache lines each (A read as At = A^T, [in, rp], rp >= r a multiple of 8, zero padded;
// dAt_clip is [in, rp] too). A row the forward pass found mostly clipped is summed directly
// (direct), so the subtraction never cancels more than a small part: with every weight
// clipped, dA and dB are exactly 0.
// Each sum runs over its elements in ascending order (dB_clip: j; dAt_clip: rows), one fma
// each: a caller that gives every thread its own dAt_clip and adds them in a fixed order gets
// the same bits on every run.
void merged_quantize_backward_rows(const float* W0, const float* A, const float* At, int64_t rp,
                                   const float* B, float scale, int64_t r, const float* s,
                                   const float* b, int64_t rows, int64_t in, int64_t gs, int bits,
                                   float* dst, float* G, bool mask_G, float* ds, float* db,
                                   float* dB_clip, float* dAt_clip, const uint8_t* direct);
void merged_quantize_backward_rows(const double* W0, const double* A, const double* At,
                                   int64_t rp, const double* B, double scale, int64_t r,
                                   const double* s, const double* b, int64_t rows, int64_t in,
                                   int64_t gs, int bits, double* dst, double* G, bool mask_G,
                                   double* ds, double* db, double* dB_clip, double* dAt_clip,
                                   const uint8_t* direct);

// W0 kept in 16 bits (a frozen weight in its checkpoint's format: bfloat16 or IEEE half),
// compute (A, B, s, b, dst, G, ...) in fp32. The AVX-512 loops widen each register of W0 as
// they load it when the groups are whole 32-column tiles; otherwise these overloads widen a few
// rows at a time into a per-thread buffer that stays in L2 and run the fp32 loops on it. Every
// bfloat16 and half value is a float, so the loops see the values of an fp32 W0 holding them:
// the same bits.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};
static_assert(sizeof(Bf16) == 2 && sizeof(F16) == 2, "16-bit storage types");

#define L4Q_ROWS_16BIT_DECLS(W)                                                                  \
  void merged_rows(const W* W0, const float* A, const float* B, float scale, int64_t r,          \
                   int64_t rows, int64_t in, float* dst);                                       \
  void merged_quantize_rows(const W* W0, const float* A, const float* B, float scale, int64_t r, \
                            const float* s, const float* b, int64_t rows, int64_t in,           \
                            int64_t gs, int bits, float* dst, int32_t* clipped = nullptr);      \
  void merged_quantize_backward_rows(const W* W0, const float* A, const float* At, int64_t rp,   \
                                     const float* B, float scale, int64_t r, const float* s,    \
                                     const float* b, int64_t rows, int64_t in, int64_t gs,      \
                                     int bits, float* dst, float* G, bool mask_G, float* ds,    \
                                     float* db, float* dB_clip, float* dAt_clip,                \
                                     const uint8_t* direct);
L4Q_ROWS_16BIT_DECLS(Bf16)
L4Q_ROWS_16BIT_DECLS(F16)
#undef L4Q_ROWS_16BIT_DECLS

}  // namespace l4q::cpu
