// Emulator stand-in for <mma.h> (WMMA): the fragment shapes, loads, stores and the warp-wide
// multiply-accumulate the kernels use. The element-to-lane layout is the emulator's own (see
// simt.h); products are formed from the stored element values (bf16, or floats that the kernels
// have already rounded to TF32) and accumulated in fp32.
#pragma once
#include <cstring>
#include <type_traits>

#include "cuda_bf16.h"

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace emu {
template <typename T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};
template <typename Use, int M, int N, int K>
struct dims;
template <int M, int N, int K>
struct dims<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct dims<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct dims<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};
inline float to_f(float v) { return v; }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
}  // namespace emu

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = emu::dims<Use, M, N, K>::rows;
  static constexpr int cols = emu::dims<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  using element_type = typename emu::storage<T>::type;
  element_type x[num_elements];

  // Element e of lane l holds the entry with row-major index 32 e + l.
  static void coords(int lane, int e, int& r, int& c) {
    const int idx = 32 * e + lane;
    r = idx / cols;
    c = idx % cols;
  }
};

// The CUDA programming guide: mptr 256-bit aligned, ldm a multiple of 16 bytes.
template <typename P>
void check_operand(const P* p, unsigned ldm) {
  l4q_emu::require_aligned(p, 32, "WMMA: matrix pointer not 32-byte aligned");
  if ((ldm * sizeof(P)) % 16 != 0) l4q_emu::fail("WMMA: ldm is not a multiple of 16 bytes");
}

template <typename Use, int M, int N, int K, typename T, typename L, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, L>;
  check_operand(p, ldm);
  const int lane = l4q_emu::lane();
  for (int e = 0; e < F::num_elements; ++e) {
    int r, c;
    F::coords(lane, e, r, c);
    f.x[e] = std::is_same<L, row_major>::value ? p[r * ldm + c] : p[c * ldm + r];
  }
}

template <int M, int N, int K, typename P>
void store_matrix_sync(P* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  using F = fragment<accumulator, M, N, K, float>;
  check_operand(p, ldm);
  const int lane = l4q_emu::lane();
  for (int e = 0; e < F::num_elements; ++e) {
    int r, c;
    F::coords(lane, e, r, c);
    p[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.x[e];
  }
}

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (auto& x : f.x) x = v;
}

template <int M, int N, int K, typename TA, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TA, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  using FA = fragment<matrix_a, M, N, K, TA, LA>;
  using FB = fragment<matrix_b, M, N, K, TA, LB>;
  using FC = fragment<accumulator, M, N, K, float>;
  const int lane = l4q_emu::lane();
  l4q_emu::warp_publish(0, &a);
  l4q_emu::warp_publish(1, &b);
  l4q_emu::warp_sync();
  float out[FC::num_elements];
  for (int e = 0; e < FC::num_elements; ++e) {
    int r, col;
    FC::coords(lane, e, r, col);
    float acc = c.x[e];
    for (int k = 0; k < K; ++k) {
      const int ia = r * K + k, ib = k * N + col;
      const auto* fa = static_cast<const FA*>(l4q_emu::warp_peer(0, ia % 32));
      const auto* fb = static_cast<const FB*>(l4q_emu::warp_peer(1, ib % 32));
      acc = std::fma(emu::to_f(fa->x[ia / 32]), emu::to_f(fb->x[ib / 32]), acc);
    }
    out[e] = acc;
  }
  l4q_emu::warp_sync();  // every lane has read every lane's a and b
  std::memcpy(d.x, out, sizeof out);
}

// cvt.rna.tf32.f32: keep 10 mantissa bits, rounding to nearest, ties away from zero.
inline float __float_to_tf32(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

}  // namespace wmma
}  // namespace nvcuda
