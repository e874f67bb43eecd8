// Packed low-bit weights: the l4q export layout, shared by the exporters, the CPU inference
// code and the CUDA kernels so that the layout cannot drift between them.
//
// A packed matrix W [out, in] holds unsigned codes with one step and one minimum per group of
// `group_size` consecutive input elements of an output row:
//
//     W[o, i] = step[o, g] * q[o, i] + min[o, g],     g = i / group_size
//
// which is the L4Q weight written in its unsigned form: q = w_int - Qn in [0, 2^bits - 1],
// step = s, min = b + s * Qn (Qn = -2^(bits-1)), see MergedWeight in l4q/nn/l4q_linear.h.
// The product q * step and the sum are two roundings (qmath::dequantize), never an FMA.
//
// Storage (all little-endian, no padding anywhere):
//   blocks  [out][in / kBlockSize]  one block per kBlockSize = 32 consecutive codes of a row
//   step    [out][in / group_size]  fp32
//   min     [out][in / group_size]  fp32
// Constraints: in % 32 == 0, group_size % 32 == 0, in % group_size == 0 (check_packed_shape).
// Bits per weight: bits + 64 / group_size (4.5 for u4 with group 128).
//
// The block formats (one struct each, sizes static_assert'ed; ids are stable and part of the
// file format: a retired format keeps its slot):
//   u2  BlockU2 { qs[8] }          byte j holds codes j, j+8, j+16, j+24 in bits 0-1, 2-3, 4-5,
//                                  6-7 (ggml's Q2_K stride-8 order within 32 codes)
//   u3  BlockU3 { ql[8]; qh[4] }   low two bits of every code exactly as u2 in ql; bit 2 of code j
//                                  is bit (j % 8) of qh[j / 8]; 12 bytes = 3.0 bits per code
//                                  (two planes instead of 10 codes per word: no code straddles a
//                                  word, and decoding is two shifts and an or)
//   u4  BlockU4 { qs[16] }         byte j holds code j in the low nibble and code j + 16 in the
//                                  high nibble (GGUF Q4_1's order, so a u4 row with group 32 maps
//                                  onto Q4_1 blocks byte for byte)
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/quant_math.h"  // L4Q_HD, dequantize

namespace l4q::packed {

inline constexpr int kBlockSize = 32;  // codes per block, along the input dimension

enum class PackedType : uint8_t {
  U2 = 0,
  U3 = 1,
  U4 = 2,
};
inline constexpr int kPackedTypeCount = 3;

struct BlockU2 {
  uint8_t qs[kBlockSize / 4];
};
static_assert(sizeof(BlockU2) == kBlockSize * 2 / 8, "u2: 2 bits per code, no padding");

struct BlockU3 {
  uint8_t ql[kBlockSize / 4];  // low two bits, u2 order
  uint8_t qh[kBlockSize / 8];  // bit 2
};
static_assert(sizeof(BlockU3) == kBlockSize * 3 / 8, "u3: 3 bits per code, no padding");

struct BlockU4 {
  uint8_t qs[kBlockSize / 2];
};
static_assert(sizeof(BlockU4) == kBlockSize * 4 / 8, "u4: 4 bits per code, no padding");

// Per-format access to code j (0 <= j < kBlockSize). set() expects q < 2^kBits and leaves the
// other codes of the block untouched (it clears the code's bits first).
struct FormatU2 {
  using Block = BlockU2;
  static constexpr PackedType kType = PackedType::U2;
  static constexpr int kBits = 2;
  static constexpr const char* kName = "u2";
  L4Q_HD static uint32_t get(const Block& b, int j) { return (b.qs[j % 8] >> (2 * (j / 8))) & 3u; }
  L4Q_HD static void set(Block& b, int j, uint32_t q) {
    const int sh = 2 * (j / 8);
    b.qs[j % 8] = static_cast<uint8_t>((b.qs[j % 8] & ~(3u << sh)) | ((q & 3u) << sh));
  }
};

struct FormatU3 {
  using Block = BlockU3;
  static constexpr PackedType kType = PackedType::U3;
  static constexpr int kBits = 3;
  static constexpr const char* kName = "u3";
  L4Q_HD static uint32_t get(const Block& b, int j) {
    return ((b.ql[j % 8] >> (2 * (j / 8))) & 3u) | (((b.qh[j / 8] >> (j % 8)) & 1u) << 2);
  }
  L4Q_HD static void set(Block& b, int j, uint32_t q) {
    const int sh = 2 * (j / 8);
    b.ql[j % 8] = static_cast<uint8_t>((b.ql[j % 8] & ~(3u << sh)) | ((q & 3u) << sh));
    b.qh[j / 8] = static_cast<uint8_t>((b.qh[j / 8] & ~(1u << (j % 8))) | (((q >> 2) & 1u) << (j % 8)));
  }
};

struct FormatU4 {
  using Block = BlockU4;
  static constexpr PackedType kType = PackedType::U4;
  static constexpr int kBits = 4;
  static constexpr const char* kName = "u4";
  L4Q_HD static uint32_t get(const Block& b, int j) {
    return j < 16 ? (b.qs[j] & 0xFu) : (b.qs[j - 16] >> 4);
  }
  L4Q_HD static void set(Block& b, int j, uint32_t q) {
    if (j < 16)
      b.qs[j] = static_cast<uint8_t>((b.qs[j] & 0xF0u) | (q & 0xFu));
    else
      b.qs[j - 16] = static_cast<uint8_t>((b.qs[j - 16] & 0x0Fu) | ((q & 0xFu) << 4));
  }
};

// Reference pack/unpack of one block (codes[kBlockSize], one byte each).
template <class F>
void pack_block_ref(const uint8_t* codes, void* block) {
  typename F::Block blk;
  std::memset(&blk, 0, sizeof blk);
  for (int j = 0; j < kBlockSize; ++j) F::set(blk, j, codes[j]);
  std::memcpy(block, &blk, sizeof blk);
}
template <class F>
void unpack_block_ref(const void* block, uint8_t* codes) {
  typename F::Block blk;
  std::memcpy(&blk, block, sizeof blk);
  for (int j = 0; j < kBlockSize; ++j) codes[j] = static_cast<uint8_t>(F::get(blk, j));
}

// The traits table, indexed by PackedType. Every exporter and kernel dispatch consults it.
struct PackedTraits {
  PackedType type;
  const char* name;
  int bits;
  int block_size;   // codes per block
  int block_bytes;  // bytes per block
  void (*pack_ref)(const uint8_t* codes, void* block);    // codes < 2^bits
  void (*unpack_ref)(const void* block, uint8_t* codes);
};

inline constexpr PackedTraits kPackedTraits[kPackedTypeCount] = {
    {PackedType::U2, FormatU2::kName, FormatU2::kBits, kBlockSize, sizeof(BlockU2),
     &pack_block_ref<FormatU2>, &unpack_block_ref<FormatU2>},
    {PackedType::U3, FormatU3::kName, FormatU3::kBits, kBlockSize, sizeof(BlockU3),
     &pack_block_ref<FormatU3>, &unpack_block_ref<FormatU3>},
    {PackedType::U4, FormatU4::kName, FormatU4::kBits, kBlockSize, sizeof(BlockU4),
     &pack_block_ref<FormatU4>, &unpack_block_ref<FormatU4>},
};
static_assert(kPackedTraits[0].type == PackedType::U2 && kPackedTraits[1].type == PackedType::U3 &&
                  kPackedTraits[2].type == PackedType::U4,
              "kPackedTraits must be indexed by PackedType");

inline bool is_valid(PackedType t) { return static_cast<int>(t) < kPackedTypeCount; }
inline const PackedTraits& traits(PackedType t) { return kPackedTraits[static_cast<int>(t)]; }

// The format holding `bits`-bit codes; false when there is none (5..8 bits).
inline bool type_for_bits(int bits, PackedType& t) {
  for (const auto& tr : kPackedTraits)
    if (tr.bits == bits) {
      t = tr.type;
      return true;
    }
  return false;
}

// nullptr when a packed matrix with this shape exists, else what is wrong.
inline const char* check_packed_shape(int64_t in, int64_t group_size) {
  if (in < kBlockSize || in % kBlockSize != 0) return "in_features must be a positive multiple of 32";
  if (group_size < kBlockSize || group_size % kBlockSize != 0)
    return "group_size must be a positive multiple of 32";
  if (in % group_size != 0) return "group_size must divide in_features";
  return nullptr;
}

inline int64_t blocks_per_row(int64_t in) { return in / kBlockSize; }
inline int64_t row_bytes(PackedType t, int64_t in) {
  return blocks_per_row(in) * traits(t).block_bytes;
}

// codes [rows, in] (one byte per code, < 2^bits) -> blocks [rows, in / 32]. in % 32 == 0.
inline void pack_rows_ref(PackedType t, const uint8_t* codes, int64_t rows, int64_t in, void* dst) {
  const auto& tr = traits(t);
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = rows * blocks_per_row(in);
  for (int64_t k = 0; k < nb; ++k) tr.pack_ref(codes + k * kBlockSize, out + k * tr.block_bytes);
}

// blocks [rows, in / 32] -> codes [rows, in].
inline void unpack_rows_ref(PackedType t, const void* src, int64_t rows, int64_t in,
                            uint8_t* codes) {
  const auto& tr = traits(t);
  const auto* p = static_cast<const uint8_t*>(src);
  const int64_t nb = rows * blocks_per_row(in);
  for (int64_t k = 0; k < nb; ++k) tr.unpack_ref(p + k * tr.block_bytes, codes + k * kBlockSize);
}

// The unsigned form of one group: min = b + s * Qn with s clamped like every other path
// (a multiply, then an add: MergedWeight::min_offset() computes the same bits).
L4Q_HD float min_offset(float s, float b, int bits) {
  return b + qmath::mul_rn(qmath::clamp_step(s), static_cast<float>(qmath::grid_min(bits)));
}

}  // namespace l4q::packed
