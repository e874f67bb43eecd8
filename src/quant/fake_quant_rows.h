// CPU loops of fake quantization over blocks of weight rows (private to src/).
//
// Layout: W and G are row-major [rows, in]; s, b are row-major [rows, in/gs]. Each function
// handles rows [0, rows) of the block it is given and is called from at::parallel_for over
// row ranges, so it must not allocate. The element math is kernels/common/quant_math.h, the
// same header the CUDA kernels use.
#pragma once
#include <cstdint>

#include "common/quant_math.h"

namespace l4q::cpu {

// W (merged weight) -> W_q in place.
template <typename T>
void quantize_rows(T* W, const T* s, const T* b, int64_t rows, int64_t in, int64_t gs,
                   int bits) {
  const T qn = T(qmath::grid_min(bits)), qp = T(qmath::grid_max(bits));
  const int64_t groups = in / gs;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      T* w = W + i * in + g * gs;
      for (int64_t j = 0; j < gs; ++j) {
        const auto e = qmath::quantize(w[j], sg, bg, qn, qp);
        w[j] = qmath::dequantize(e.w_int, sg, bg);
      }
    }
  }
}

// W -> signed integer codes (no dequantization).
template <typename T>
void quantize_codes_rows(const T* W, const T* s, const T* b, int8_t* codes, int64_t rows,
                         int64_t in, int64_t gs, int bits) {
  const T qn = T(qmath::grid_min(bits)), qp = T(qmath::grid_max(bits));
  const int64_t groups = in / gs;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const T* w = W + i * in + g * gs;
      int8_t* c = codes + i * in + g * gs;
      for (int64_t j = 0; j < gs; ++j)
        c[j] = static_cast<int8_t>(qmath::quantize(w[j], sg, bg, qn, qp).w_int);
    }
  }
}

// Signed codes -> W_q, the same dequantize() as the forward pass.
template <typename T>
void dequantize_rows(const int8_t* codes, const T* s, const T* b, T* W, int64_t rows,
                     int64_t in, int64_t gs) {
  const int64_t groups = in / gs;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      const int8_t* c = codes + i * in + g * gs;
      T* w = W + i * in + g * gs;
      for (int64_t j = 0; j < gs; ++j) w[j] = qmath::dequantize(T(c[j]), sg, bg);
    }
  }
}

// Backward of fake quantization for a block of rows, in one pass:
//   W (merged weight) -> W_q in place  (needed for dX = dY W_q)
//   G (dL/dW_q)       -> M * G in place (dL/dW_comb: feeds dA, dB or dW)
//   ds[i, g] = sum_group G * (M ? w_int - w : clamp(w)),  db[i, g] = sum_group G * (1 - M)
// ds and db are written (=), unscaled: the caller applies the LSQ gradient scale.
// The group sums use kLanes partial sums so the loop vectorises without -ffast-math.
template <typename T>
void quantize_backward_rows(T* W, T* G, const T* s, const T* b, T* ds, T* db, int64_t rows,
                            int64_t in, int64_t gs, int bits) {
  constexpr int kLanes = 8;
  const T qn = T(qmath::grid_min(bits)), qp = T(qmath::grid_max(bits));
  const int64_t groups = in / gs;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t g = 0; g < groups; ++g) {
      const T sg = qmath::clamp_step(s[i * groups + g]), bg = b[i * groups + g];
      T* w = W + i * in + g * gs;
      T* gr = G + i * in + g * gs;
      T acc_s[kLanes] = {}, acc_b[kLanes] = {};
      int64_t j = 0;
      for (; j + kLanes <= gs; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const auto e = qmath::quantize(w[j + l], sg, bg, qn, qp);
          const T gj = gr[j + l];
          acc_s[l] += gj * qmath::step_grad(e);
          acc_b[l] += gj * qmath::offset_grad(e);
          gr[j + l] = e.in ? gj : T(0);
          w[j + l] = qmath::dequantize(e.w_int, sg, bg);
        }
      }
      for (; j < gs; ++j) {
        const auto e = qmath::quantize(w[j], sg, bg, qn, qp);
        const T gj = gr[j];
        acc_s[0] += gj * qmath::step_grad(e);
        acc_b[0] += gj * qmath::offset_grad(e);
        gr[j] = e.in ? gj : T(0);
        w[j] = qmath::dequantize(e.w_int, sg, bg);
      }
      T ts = 0, tb = 0;
      for (int l = 0; l < kLanes; ++l) {
        ts += acc_s[l];
        tb += acc_b[l];
      }
      ds[i * groups + g] = ts;
      db[i * groups + g] = tb;
    }
  }
}

}  // namespace l4q::cpu
