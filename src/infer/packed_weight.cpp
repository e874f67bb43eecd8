#include "l4q/infer/packed_weight.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "common/packed_format.h"
#include "common/quant_math.h"
#include "l4q/error.h"
#include "quant/tensor_checks.h"

namespace l4q {

namespace {

using detail::shape_str;

constexpr int kBlock = packed::kBlockSize;

// The packed format of `bits`-bit codes (2, 3, 4; 8 is stored a byte per code).
packed::PackedType packed_type(int bits) {
  packed::PackedType t{};
  if (!packed::type_for_bits(bits, t))
    fail("[packed weight] bits: expected 2, 3, 4 or 8, got ", bits);
  return t;
}

// Codes of one packed row -> one byte per code (nblk * 32 bytes).
void unpack_row(int bits, const uint8_t* row, int64_t nblk, uint8_t* codes) {
  if (bits == 8) {
    std::memcpy(codes, row, static_cast<size_t>(nblk * kBlock));
    return;
  }
  packed::unpack_rows_ref(packed_type(bits), row, 1, nblk * kBlock, codes);
}

void pack_row(int bits, const uint8_t* codes, int64_t nblk, uint8_t* row) {
  if (bits == 8) {
    std::memcpy(row, codes, static_cast<size_t>(nblk * kBlock));
    return;
  }
  packed::pack_rows_ref(packed_type(bits), codes, 1, nblk * kBlock, row);
}

}  // namespace

bool packed_bits_supported(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

int64_t packed_blocks_per_row(int64_t in) { return (in + kBlock - 1) / kBlock; }

int64_t packed_row_bytes(int bits, int64_t in) {
  return packed_blocks_per_row(in) * (kBlock * bits / 8);
}

std::string packed_type_name(int bits) { return "u" + std::to_string(bits); }

void PackedWeight::dequantize_rows(int64_t r0, int64_t n, float* dst, int64_t ld) const {
  const int64_t nblk = packed_blocks_per_row(in), rb = packed_row_bytes(bits, in), G = groups();
  const float qn = static_cast<float>(qmath::grid_min(bits));
  const uint8_t* q = qweight.data_ptr<uint8_t>();
  const float* s = scales.data_ptr<float>();
  const float* b = offsets.data_ptr<float>();
  std::vector<uint8_t> codes(static_cast<size_t>(nblk * kBlock));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t o = r0 + i;
    unpack_row(bits, q + o * rb, nblk, codes.data());
    float* w = dst + i * ld;
    for (int64_t g = 0; g < G; ++g) {
      const float sg = qmath::clamp_step(s[o * G + g]), bg = b[o * G + g];
      for (int64_t j = g * group_size; j < (g + 1) * group_size; ++j)
        w[j] = qmath::dequantize(static_cast<float>(codes[j]) + qn, sg, bg);
    }
  }
}

at::Tensor PackedWeight::dequantize() const {
  auto W = at::empty({out, in}, at::TensorOptions().dtype(at::kFloat));
  float* w = W.data_ptr<float>();
  at::parallel_for(0, out, std::max<int64_t>(1, 65536 / std::max<int64_t>(in, 1)),
                   [&](int64_t r0, int64_t r1) { dequantize_rows(r0, r1 - r0, w + r0 * in, in); });
  return W;
}

MergedWeight PackedWeight::to_merged() const {
  const int64_t nblk = packed_blocks_per_row(in), rb = packed_row_bytes(bits, in);
  const int qn = qmath::grid_min(bits);
  auto w_int = at::empty({out, in}, at::TensorOptions().dtype(at::kChar));
  const uint8_t* q = qweight.data_ptr<uint8_t>();
  int8_t* wi = w_int.data_ptr<int8_t>();
  std::vector<uint8_t> codes(static_cast<size_t>(nblk * kBlock));
  for (int64_t o = 0; o < out; ++o) {
    unpack_row(bits, q + o * rb, nblk, codes.data());
    for (int64_t j = 0; j < in; ++j) wi[o * in + j] = static_cast<int8_t>(int(codes[j]) + qn);
  }
  QuantGrid grid;
  grid.bits = bits;
  grid.group_size = group_size;
  return {w_int, scales.clone(), offsets.clone(), grid};
}

PackedWeight pack_weight(const MergedWeight& m, const std::string& where) {
  const int bits = m.grid.bits;
  if (!packed_bits_supported(bits))
    fail(where, ": bits: the l4q packed format stores 2, 3, 4 or 8 bits, got ", bits);
  if (!m.w_int.defined() || m.w_int.dim() != 2 || m.w_int.scalar_type() != at::kChar)
    fail(where, ": w_int: expected int8 [out, in], got ",
         m.w_int.defined() ? shape_str(m.w_int.sizes()) : std::string("undefined"));
  const int64_t out = m.w_int.size(0), in = m.w_int.size(1);
  const int64_t gs = m.grid.group_size_for(in);
  if (out < 1 || in < 1 || gs < 1 || in % gs != 0)
    fail(where, ": group_size ", gs, " does not divide in_features ", in);
  const int64_t G = in / gs;
  auto to_f32 = [&](const at::Tensor& t, const char* name) {
    if (!t.defined() || !t.sizes().equals({out, G}))
      fail(where, ": ", name, ": expected shape ", shape_str(std::vector<int64_t>{out, G}), ", got ",
           t.defined() ? shape_str(t.sizes()) : std::string("undefined"));
    auto f = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
    if (t.scalar_type() != at::kFloat && !at::equal(f.to(t.scalar_type()), t.detach().to(at::kCPU)))
      fail(where, ": ", name, ": ", t.scalar_type(), " values are not exactly representable in fp32");
    return f;
  };
  PackedWeight p;
  p.bits = bits;
  p.out = out;
  p.in = in;
  p.group_size = gs;
  p.scales = to_f32(m.s, "s").clamp_min(qmath::kMinStep);
  p.offsets = to_f32(m.b, "b");
  const auto codes_s = m.w_int.to(at::kCPU).contiguous();
  const int qn = qmath::grid_min(bits), qp = qmath::grid_max(bits);
  const int64_t nblk = packed_blocks_per_row(in), rb = packed_row_bytes(bits, in);
  p.qweight = at::zeros({out, rb}, at::TensorOptions().dtype(at::kByte));
  const int8_t* wi = codes_s.data_ptr<int8_t>();
  uint8_t* dst = p.qweight.data_ptr<uint8_t>();
  std::vector<uint8_t> row(static_cast<size_t>(nblk * kBlock));
  for (int64_t o = 0; o < out; ++o) {
    std::fill(row.begin(), row.end(), uint8_t{0});
    for (int64_t j = 0; j < in; ++j) {
      const int v = wi[o * in + j];
      if (v < qn || v > qp)
        fail(where, ": w_int[", o, ", ", j, "] = ", v, " outside the ", bits, "-bit grid [", qn, ", ", qp, "]");
      row[j] = static_cast<uint8_t>(v - qn);
    }
    pack_row(bits, row.data(), nblk, dst + o * rb);
  }
  p.mins = p.offsets + p.scales * static_cast<double>(qn);
  return p;
}

PackedWeight make_packed_weight(int bits, int64_t out, int64_t in, int64_t group_size,
                                at::Tensor qweight, at::Tensor scales, at::Tensor offsets,
                                const std::string& where) {
  if (!packed_bits_supported(bits))
    fail(where, ": bits: the l4q packed format stores 2, 3, 4 or 8 bits, got ", bits);
  if (out < 1 || in < 1 || group_size < 1 || in % group_size != 0)
    fail(where, ": group_size ", group_size, " does not divide in_features ", in);
  const int64_t G = in / group_size;
  auto check = [&](const at::Tensor& t, const char* name, at::ScalarType dt, std::vector<int64_t> shape) {
    if (!t.defined()) fail(where, ": tensor '", name, "' is missing");
    if (t.scalar_type() != dt)
      fail(where, ": tensor '", name, "': expected dtype ", dt, ", got ", t.scalar_type());
    if (!t.sizes().equals(shape))
      fail(where, ": tensor '", name, "' has wrong shape; expected ", shape_str(shape), ", got ",
           shape_str(t.sizes()));
  };
  check(qweight, "qweight", at::kByte, {out, packed_row_bytes(bits, in)});
  check(scales, "scales", at::kFloat, {out, G});
  check(offsets, "offsets", at::kFloat, {out, G});
  PackedWeight p;
  p.bits = bits;
  p.out = out;
  p.in = in;
  p.group_size = group_size;
  p.qweight = qweight.contiguous();
  p.scales = scales.contiguous();
  p.offsets = offsets.contiguous();
  const float* s = p.scales.data_ptr<float>();
  const float* b = p.offsets.data_ptr<float>();
  for (int64_t k = 0; k < out * G; ++k) {
    if (!(std::isfinite(s[k]) && s[k] >= qmath::kMinStep))
      fail(where, ": tensor 'scales': element ", k, " is ", s[k], "; expected a finite step >= ",
           qmath::kMinStep);
    if (!std::isfinite(b[k])) fail(where, ": tensor 'offsets': element ", k, " is ", b[k], "; expected finite");
  }
  p.mins = p.offsets + p.scales * static_cast<double>(qmath::grid_min(bits));
  return p;
}

}  // namespace l4q
