// The fused packed matmul kernels (private to src/infer): one scalar reference, one AVX2
// version in its own translation unit (packed_matmul_avx2.cpp, compiled with -mavx2 -mfma).
#pragma once
#include <cstdint>

namespace l4q::packed_kernels {

// Everything one call needs, resolved by packed_matmul_fused().
struct FusedArgs {
  int bits;
  int64_t out;
  int64_t nblk;              // blocks of 32 codes per row (in rounded up)
  int64_t row_bytes;         // bytes per packed row
  int64_t groups;            // groups per row
  int64_t blocks_per_group;  // nblk when groups == 1, else group_size / 32
  const uint8_t* q;          // [out, row_bytes]
  const float* s;            // [out, groups] clamped steps
  const float* m;            // [out, groups] b + s*Qn
  const float* x;            // [rows, nblk * 32], zero beyond in_features
  const float* xsum;         // [rows, groups]: sum of x over each group
  int64_t rows;              // 1..4 per call
  float* y;                  // [rows, out]
};

// Output rows [o0, o1) of y.
void fused_scalar(const FusedArgs& a, int64_t o0, int64_t o1);
// Defined only when L4Q_HAVE_AVX2_KERNEL (x86-64 with a compiler that takes -mavx2 -mfma).
void fused_avx2(const FusedArgs& a, int64_t o0, int64_t o1);

}  // namespace l4q::packed_kernels
