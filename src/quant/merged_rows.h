// CPU loops that build the L4Q merged weight W_comb = W0 + scale * B A row by row and fake-
// quantize it in the same pass (private to src/).
//
// Why not addmm + a separate pass: the rank-r update is a GEMM with K = r (16), which BLAS runs
// memory-bound, and the forward and backward each need it once per step; with the quantizer
// and (in backward) dB fused into the same loop, W0 is read once per pass and W_comb never
// goes through memory. On the 4096 -> 11008 -> 4096 benchmark (docs/benchmarks.md) this took
// L4Q's step from 1.8x to about 1.6x float LoRA's.
//
// Layout: W0, dst, G row-major [rows, in]; A [r, in]; B [rows, r] (the rows of this block);
// s, b, ds, db [rows, in/gs]; dB [rows, r]. Each function handles rows [0, rows) and is called
// from at::parallel_for over row ranges.
//
// Bits: W_comb[i, j] = W0[i, j] + scale * acc, acc = fma(B[i, r-1], A[r-1, j], ... fma(B[i, 0],
// A[0, j], 0)): the rank sum in a fixed order with fused multiply-adds, then a multiply and an
// add. Every caller (forward, backward, merge()) goes through merged_row_tile(), so they all
// see the same bits whatever the row blocks, the thread count or the instruction set (the
// entry points are compiled for AVX2+FMA and for the baseline, chosen at run time; std::fma is
// exact in both).
#pragma once
#include <cstdint>

namespace l4q::cpu {

// dst = W_comb rows (no quantization). r = 0: dst = W0.
void merged_rows(const float* W0, const float* A, const float* B, float scale, int64_t r,
                 int64_t rows, int64_t in, float* dst);
void merged_rows(const double* W0, const double* A, const double* B, double scale, int64_t r,
                 int64_t rows, int64_t in, double* dst);

// dst = Q(W_comb rows): the forward pass's W_q.
void merged_quantize_rows(const float* W0, const float* A, const float* B, float scale, int64_t r,
                          const float* s, const float* b, int64_t rows, int64_t in, int64_t gs,
                          int bits, float* dst);
void merged_quantize_rows(const double* W0, const double* A, const double* B, double scale,
                          int64_t r, const double* s, const double* b, int64_t rows, int64_t in,
                          int64_t gs, int bits, double* dst);

// Backward of one block, one pass over W0 and G:
//   dst = Q(W_comb rows)                        (for dX = dY W_q)
//   G  <- M * G in place                         (dL/dW_comb: feeds dA, or dW)
//   ds[i, g] = sum_group G * (M ? w_int - w : w_c),  db[i, g] = sum_group G * (1 - M)  (unscaled)
//   dB[i, k] = scale * sum_j (M * G)[i, j] A[k, j]   (when dB != nullptr and r > 0)
void merged_quantize_backward_rows(const float* W0, const float* A, const float* B, float scale,
                                   int64_t r, const float* s, const float* b, int64_t rows,
                                   int64_t in, int64_t gs, int bits, float* dst, float* G,
                                   float* ds, float* db, float* dB);
void merged_quantize_backward_rows(const double* W0, const double* A, const double* B,
                                   double scale, int64_t r, const double* s, const double* b,
                                   int64_t rows, int64_t in, int64_t gs, int bits, double* dst,
                                   double* G, double* ds, double* db, double* dB);

}  // namespace l4q::cpu
