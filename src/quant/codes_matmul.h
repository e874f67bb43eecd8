// The L4Q products with W_q on Intel AMX, from its integer codes (private to src/): the forward
// Y = X W_q^T here, the input gradient dX = dY W_q below.
//
// Math. W_q[n, k] = s[n, g] q[n, k] + b[n, g] with integer codes q in [Qn, Qp] (|q| <= 128 for
// up to 8 bits) and g = k / gs, so per output element
//   Y[m, n] = sum_g ( s[n, g] P[m, n, g] + b[n, g] S[m, g] ),
//   P[m, n, g] = sum_{k in g} X[m, k] q[n, k],   S[m, g] = sum_{k in g} X[m, k].
// P is where the work is (M N K multiply-adds), and AMX's bfloat16 tile product runs it: every
// code is exact in bfloat16, and X is split into three bfloat16 parts X = X1 + X2 + X3 (exact:
// 3 x 8 significand bits hold fp32's 24; round-to-nearest splits leave each remainder exactly
// representable). Each product X_i q is exact in fp32 (8 x 8 bits), and the tile unit adds them
// in fp32, so P has the rounding of an fp32 dot product. The group's epilogue then adds
// s P + b S in fp32 in ascending group order.
//
// Why: float LoRA spends two out x in x tokens GEMMs per step, L4Q three (G = dY^T X is extra).
// On CPUs with AMX, three bfloat16 tile products measure about half the time of one fp32
// AVX-512 GEMM (the tile unit's peak is 2.9 TFLOP/s per core here, fp32 FMAs' 0.14), and the
// codes are what quantization made exact in bfloat16: a float weight would need three parts
// too, nine products in all (which is also why G stays on BLAS). docs/benchmarks.md gives the
// measured step times.
//
// Bits: W_q's value is s q + b exactly, where the BLAS path multiplies X by fl(fl(s q) + b),
// the value merge() dequantizes to; the two differ by at most half an ulp of each weight.
// Each output element is computed by the same sequence of operations whatever the thread count,
// the panel and the row block it falls in, so Y does not depend on them.
//
// Layouts (uint16_t holds bfloat16 bits):
//   parts  [M32/16][K/32][3][16][32]: per 16-token tile and 32-column step, X1, X2, X3 as the
//          tile unit's A operand (16 rows of 32 values); M32 = M rounded up to 32, zero rows.
//   xsum   [M32, K/gs]: S.
//   codes  [nbp/16][K/32][16][16][2]: per 16-row tile of W_q and 32-column step, the B operand
//          ("VNNI": row kp holds (q[n, 2kp], q[n, 2kp+1]) for n = 0..15).
//   sT, bT [K/gs, nbp]: the panel's s and b transposed (zero in padded columns).
#pragma once
#include <cstdint>
#include <optional>

namespace l4q::cpu {

// Whether the tile path runs here: the build has it (x86-64 GCC or Clang), the CPU has
// AMX-TILE, AMX-BF16 and AVX512-BF16, the OS granted this process the tile state, and neither
// the environment variable L4Q_AMX=0 nor set_amx_enabled(false) turned it off.
bool amx_available();  // the hardware and OS part only
bool amx_enabled();
// Tests: std::nullopt returns to automatic; true where !amx_available() throws.
void set_amx_enabled(std::optional<bool> on);

constexpr int64_t kAmxTile = 16;  // rows of a tile (tokens, or rows of W)
constexpr int64_t kAmxStep = 32;  // columns of X / W per tile product (bf16 pairs x 16)

// Rows of W per panel: each thread quantizes a panel's rows 16 at a time and packs their codes,
// then runs every token against them, so X's parts are read once per panel (more rows, less
// traffic on X; 256 measured faster than 128 and 512 on the 7B MLP shapes).
constexpr int64_t kAmxPanelRows = 256;
// Bytes of codes per block of groups: a panel's B operand stays in L2 while every token tile
// passes over it.
constexpr int64_t kAmxCodeBlockBytes = int64_t(1) << 20;

// uint16 elements of `parts` for M tokens of K columns.
int64_t amx_parts_elements(int64_t M, int64_t K);

// Splits the 16-token tiles [t0, t1) of X ([M, K] fp32 row-major; K % 32 == 0, gs % 32 == 0)
// into `parts` and their group sums into `xsum`; rows >= M are zero.
void amx_split_x(const float* X, int64_t M, int64_t K, int64_t gs, int64_t t0, int64_t t1,
                 uint16_t* parts, float* xsum);

// Codes of `rows` (<= 16) rows of W_q (wq: [rows, K] fp32, s and b: [rows, K/gs]) into one
// 16-row tile of `codes` (rows >= `rows` zero). Returns false if some value is not
// fl(fl(q s) + b) for an integer q with |q| <= 256 (only for degenerate steps, |b/s| near 2^22,
// or non-finite values): the caller then multiplies by W_q itself.
bool amx_pack_codes(const float* wq, int64_t rows, int64_t K, int64_t gs, const float* s,
                    const float* b, uint16_t* codes);

// Y[:, 0:nvalid] (row stride ldy) for the groups [g0, g1) of one panel of nbp (% 32 == 0)
// columns: Y = (g0 == 0 ? 0 : Y) + sum over g in [g0, g1) of (sT P + bT S). scratch:
// amx_scratch_elements(nbp) floats.
inline int64_t amx_scratch_elements(int64_t nbp) { return 32 * nbp + 2 * 1024; }
void amx_codes_matmul(const uint16_t* parts, const float* xsum, int64_t M, int64_t K,
                      int64_t gs, const uint16_t* codes, const float* sT, const float* bT,
                      int64_t nbp, int64_t nvalid, int64_t g0, int64_t g1, float* scratch,
                      float* Y, int64_t ldy);

// ---------------------------------------------------------------------------------------------
// The input gradient dX = dY W_q of one block of W's rows, on the same tiles.
//
// Math. For the columns k of group g, summing over the block's rows n:
//   dX[m, k] += sum_n (dY[m, n] s[n, g]) q[n, k] + T[m, g],   T = dY[:, rows] b[rows, :],
// so A is dY scaled per group, D_g = fl(dY s_g), split into three exact bfloat16 parts, and B
// the codes again, paired along n. The tiles add D_g q into dX in fp32; T (a small GEMM, the
// caller's) is added after. The block's columns go in slabs of whole 32-column steps within
// one group (amx_dx_slab_columns), one thread per slab: each element of dX has one writer
// and one order of operations whatever the thread count.
//
// Layouts, for a block of nb rows (nb32: nb rounded up to 32, steps = nb32 / 32):
//   dparts  [2][steps][3][16][32]: D_g for 32 tokens as A tiles (the split of amx_split_x).
//   dcodes  [cw/16][steps][16][16][2]: per 16-column tile of the slab and 32-row step, row np
//           holds (q[2np, k], q[2np + 1, k]) for the slab's columns k.

// Columns per slab of the input gradient: whole 32-column steps of one group, at most 128
// where the group allows (a slab's codes stay in L2 for every token tile).
int64_t amx_dx_slab_columns(int64_t gs);
int64_t amx_dx_parts_elements(int64_t nb);              // uint16 elements of dparts
int64_t amx_dx_codes_elements(int64_t nb, int64_t cw);  // uint16 elements of dcodes

// Codes of the slab: W_q's columns [0, cw) of rows [0, nb) (wq: row stride ldw), with s and b
// of each row for the slab's group (sg, bg: [nb]); rows >= nb are zero. Returns false as
// amx_pack_codes does.
bool amx_dx_pack_codes(const float* wq, int64_t ldw, int64_t nb, int64_t cw, const float* sg,
                       const float* bg, uint16_t* dcodes);

// dX[m, 0:cw] = dX[m, 0:cw] + (sum_n D q)[m, :] then + t[m * ldt] for every token m < M (dX:
// row stride ldx), D = fl(dY[m, n] sg[n]) for the rows [0, nb) (dY: row stride ldy). The
// parts of D are split 32 tokens at a time into one half of dparts (2 x
// amx_dx_parts_elements(nb)) while the tiles multiply the other. scratch: 1024 floats.
void amx_dx_slab(const float* dY, int64_t ldy, int64_t M, int64_t nb, const float* sg,
                 const uint16_t* dcodes, int64_t cw, const float* t, int64_t ldt,
                 uint16_t* dparts, float* scratch, float* dX, int64_t ldx);

}  // namespace l4q::cpu
