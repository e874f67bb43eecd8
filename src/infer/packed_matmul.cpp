#include "l4q/infer/packed_matmul.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "common/packed_format.h"
#include "infer/packed_matmul_kernels.h"
#include "l4q/error.h"
#include "quant/tensor_checks.h"

namespace l4q {

namespace packed_kernels {

bool avx2_kernel_built();  // packed_matmul_avx2.cpp

namespace {

constexpr int kBlock = packed::kBlockSize;

// Code j of block k of a packed row.
template <int Bits>
inline uint32_t code_at(const uint8_t* row, int64_t k, int j) {
  if constexpr (Bits == 8) {
    return row[k * kBlock + j];
  } else if constexpr (Bits == 4) {
    return packed::FormatU4::get(reinterpret_cast<const packed::BlockU4*>(row)[k], j);
  } else if constexpr (Bits == 3) {
    return packed::FormatU3::get(reinterpret_cast<const packed::BlockU3*>(row)[k], j);
  } else {
    return packed::FormatU2::get(reinterpret_cast<const packed::BlockU2*>(row)[k], j);
  }
}

template <int Bits>
void fused_scalar_t(const FusedArgs& a, int64_t o0, int64_t o1) {
  const int64_t xstride = a.nblk * kBlock;
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* row = a.q + o * a.row_bytes;
    for (int64_t r = 0; r < a.rows; ++r) {
      const float* x = a.x + r * xstride;
      float acc = 0.f;
      for (int64_t g = 0; g < a.groups; ++g) {
        float dot = 0.f;
        const int64_t k0 = g * a.blocks_per_group;
        for (int64_t k = k0; k < k0 + a.blocks_per_group; ++k)
          for (int j = 0; j < kBlock; ++j)
            dot += static_cast<float>(code_at<Bits>(row, k, j)) * x[k * kBlock + j];
        acc += a.s[o * a.groups + g] * dot + a.m[o * a.groups + g] * a.xsum[r * a.groups + g];
      }
      a.y[r * a.out + o] = acc;
    }
  }
}

}  // namespace

void fused_scalar(const FusedArgs& a, int64_t o0, int64_t o1) {
  switch (a.bits) {
    case 2: return fused_scalar_t<2>(a, o0, o1);
    case 3: return fused_scalar_t<3>(a, o0, o1);
    case 4: return fused_scalar_t<4>(a, o0, o1);
    case 8: return fused_scalar_t<8>(a, o0, o1);
  }
  fail("[packed_matmul] bits: expected 2, 3, 4 or 8, got ", a.bits);
}

}  // namespace packed_kernels

namespace {

using detail::shape_str;

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

bool packed_avx2_available() {
  static const bool ok = packed_kernels::avx2_kernel_built() && cpu_has_avx2();
  return ok;
}

bool packed_fused_supported(const PackedWeight& w) {
  return w.groups() == 1 || w.group_size % packed::kBlockSize == 0;
}

void packed_matmul_fused(const PackedWeight& w, const float* x, int64_t rows, float* y,
                         PackedKernel kernel) {
  if (!packed_fused_supported(w))
    fail("[packed_matmul] group_size ", w.group_size, " with ", w.groups(),
         " groups per row: the fused kernel needs whole blocks of 32 per group");
  bool simd = false;
  if (kernel == PackedKernel::Avx2) {
    if (!packed_avx2_available()) fail("[packed_matmul] AVX2 kernel requested, but this CPU or build lacks AVX2/FMA");
    simd = true;
  } else if (kernel == PackedKernel::Auto) {
    simd = packed_avx2_available();
  }
  packed_kernels::FusedArgs a;
  a.bits = w.bits;
  a.out = w.out;
  a.nblk = packed_blocks_per_row(w.in);
  a.row_bytes = packed_row_bytes(w.bits, w.in);
  a.groups = w.groups();
  a.blocks_per_group = a.groups == 1 ? a.nblk : w.group_size / packed::kBlockSize;
  a.q = w.qweight.data_ptr<uint8_t>();
  a.s = w.scales.data_ptr<float>();
  a.m = w.mins.data_ptr<float>();

  const int64_t xstride = a.nblk * packed::kBlockSize;
  const int64_t chunk = std::min<int64_t>(rows, kPackedFusedMaxRows);
  std::vector<float> xpad(static_cast<size_t>(chunk * xstride), 0.f);
  std::vector<float> xsum(static_cast<size_t>(chunk * a.groups));
  std::vector<float> ybuf(static_cast<size_t>(chunk * w.out));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      const float* xr = x + (r0 + r) * w.in;
      std::copy(xr, xr + w.in, xpad.begin() + r * xstride);
      for (int64_t g = 0; g < a.groups; ++g) {
        float sum = 0.f;
        for (int64_t i = g * w.group_size; i < (g + 1) * w.group_size; ++i) sum += xr[i];
        xsum[r * a.groups + g] = sum;
      }
    }
    a.x = xpad.data();
    a.xsum = xsum.data();
    a.rows = n;
    a.y = ybuf.data();
    // ~64k codes per task: small enough to spread a 4096-row matvec over every thread.
    const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(w.in, 1));
    at::parallel_for(0, w.out, grain, [&](int64_t o0, int64_t o1) {
      if (simd) packed_kernels::fused_avx2(a, o0, o1);
      else packed_kernels::fused_scalar(a, o0, o1);
    });
    for (int64_t r = 0; r < n; ++r)
      std::copy(ybuf.begin() + r * w.out, ybuf.begin() + (r + 1) * w.out, y + (r0 + r) * w.out);
  }
}

at::Tensor packed_matmul(const PackedWeight& w, const at::Tensor& x, PackedKernel kernel) {
  if (!x.defined() || x.dim() < 1 || x.size(-1) != w.in)
    fail("[packed_matmul] x: expected [..., ", w.in, "], got ", shape_str(x));
  if (x.scalar_type() != at::kFloat)
    fail("[packed_matmul] x: expected fp32, got ", x.scalar_type());
  if (!x.device().is_cpu()) fail("[packed_matmul] x: expected a CPU tensor, got ", x.device());
  auto out_shape = x.sizes().vec();
  out_shape.back() = w.out;
  const auto x2 = x.reshape({-1, w.in}).contiguous();
  const int64_t rows = x2.size(0);
  auto y = at::empty({rows, w.out}, x.options());
  if (rows == 0) return y.view(out_shape);
  if (rows <= kPackedFusedMaxRows && packed_fused_supported(w)) {
    packed_matmul_fused(w, x2.data_ptr<float>(), rows, y.data_ptr<float>(), kernel);
    return y.view(out_shape);
  }
  const int64_t tile = std::min(kPackedTileRows, w.out);
  auto buf = at::empty({tile, w.in}, x.options());
  float* bp = buf.data_ptr<float>();
  for (int64_t r0 = 0; r0 < w.out; r0 += tile) {
    const int64_t n = std::min(tile, w.out - r0);
    at::parallel_for(0, n, 1, [&](int64_t i0, int64_t i1) {
      w.dequantize_rows(r0 + i0, i1 - i0, bp + i0 * w.in, w.in);
    });
    auto yc = y.narrow(1, r0, n);
    at::mm_out(yc, x2, buf.narrow(0, 0, n).t());
  }
  return y.view(out_shape);
}

}  // namespace l4q
