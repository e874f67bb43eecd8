#include "l4q/nn/l4q_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "l4q/error.h"
#include "nn/l4q_linear_tuning.h"
#include "quant/codes_matmul.h"
#include "quant/merged_rows.h"
#if L4Q_WITH_CUDA_KERNELS
#include "nn/cuda/l4q_linear_cuda.h"
#endif
#include "quant/tensor_checks.h"

namespace l4q {

int64_t& detail::lora_direct_max_elements() {
  static int64_t n = int64_t(1) << 16;
  return n;
}

int64_t& detail::amx_min_macs() {
  static int64_t n = int64_t(1) << 24;
  return n;
}

namespace {

// Everything the row-block loops need, resolved once per call.
struct Plan {
  int bits;
  int64_t out, in, gs, groups, chunk;
  double lora_scale, grad_scale;
  bool has_lora;
};

// Rows of W per transient block when the caller leaves row_chunk at 0: the fewest equal blocks
// of at most 12M elements (48 MiB in fp32), but never fewer than kAutoChunkMinRows rows,
// rounded up to a multiple of 64. A layer's only transient of that size is one such block (the
// forward's W_q; in backward G, then W_q written over it). Why this large: every block re-reads
// X (the G and forward GEMMs pack it again) and read-modify-writes dX, and OpenBLAS's SGEMM
// loses 10-25% when the block's rows, one GEMM dimension, drop below ~512 (the 11008 -> 4096
// projection: 381-row blocks cost 197 ms per forward GEMM and 186 ms for G, 1024-row blocks 165
// and 162; docs/benchmarks.md). Equal blocks: a LLaMA-7B MLP's two projections then need the
// same 45 MiB (4 x 2752 rows of 4096, 4 x 1024 rows of 11008), so the wider blocks of the
// first cost no peak memory. The floor makes very wide layers' blocks larger than 48 MiB.
constexpr int64_t kAutoChunkElements = int64_t(12) << 20;
constexpr int64_t kAutoChunkMinRows = 1024;

int64_t resolve_chunk(int64_t chunk, int64_t out, int64_t in) {
  if (chunk <= 0) {
    const int64_t most =
        std::max<int64_t>(kAutoChunkMinRows, kAutoChunkElements / std::max<int64_t>(in, 1));
    const int64_t blocks = (out + most - 1) / most;
    chunk = ((out + blocks - 1) / blocks + 63) / 64 * 64;
  }
  return std::min(chunk, out);
}

int64_t rank_of(const at::Tensor& A) { return A.numel() > 0 ? A.size(0) : 0; }

// Calls f(w0) with W0's data from element `offset` on, as the pointer type the row loops take
// for it with compute type T (src/quant/merged_rows.h): T itself, or for fp32 compute the
// 16-bit storage types (a frozen W0 kept in bfloat16 or half). check_linear_args has ruled out
// other pairs; f is only instantiated for these.
template <typename T, typename F>
void with_weight_data(const at::Tensor& W0, int64_t offset, F&& f) {
  const auto wt = W0.scalar_type();
  if constexpr (std::is_same_v<T, float>) {
    if (wt == at::kBFloat16)
      return f(reinterpret_cast<const cpu::Bf16*>(W0.data_ptr<at::BFloat16>()) + offset);
    if (wt == at::kHalf) return f(reinterpret_cast<const cpu::F16*>(W0.data_ptr<at::Half>()) + offset);
  }
  if (wt != c10::CppTypeToScalarType<T>::value)
    fail("[l4q_linear] tensor 'W0': dtype ", c10::toString(wt), " with compute dtype ",
         c10::toString(c10::CppTypeToScalarType<T>::value));
  f(W0.data_ptr<T>() + offset);
}

// Rows [r0, r0+n) of the merged weight W0 + scale * B A, written into `dst` ([n, in]).
// The forward pass, the backward pass and merge() all build W_comb with cpu::merged_row loops
// (src/quant/merged_rows.h), whose bits do not depend on the row blocks or threads.
void merged_rows(const at::Tensor& W0, const at::Tensor& A, const at::Tensor& B,
                 const Plan& p, int64_t r0, int64_t n, at::Tensor& dst) {
  const int64_t r = p.has_lora ? rank_of(A) : 0;
  AT_DISPATCH_FLOATING_TYPES(dst.scalar_type(), "l4q_merged_rows", [&] {
    const scalar_t* a = r > 0 ? A.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bl = r > 0 ? B.data_ptr<scalar_t>() + r0 * r : nullptr;
    scalar_t* d = dst.data_ptr<scalar_t>();
    with_weight_data<scalar_t>(W0, r0 * p.in, [&](const auto* w0) {
      at::parallel_for(0, n, detail::row_grain(p.in), [&](int64_t i0, int64_t i1) {
        cpu::merged_rows(w0 + i0 * p.in, a, r > 0 ? bl + i0 * r : nullptr,
                         static_cast<scalar_t>(p.lora_scale), r, i1 - i0, p.in, d + i0 * p.in);
      });
    });
  });
}

// The row-block buffer ([rows, in]), kept per thread from call to call. Why: a fresh 16-45 MiB
// buffer per call is a fresh mmap, and filling it costs a page fault and a page clear per
// 4 KiB (about 6% of a 7B MLP step in `perf`, docs/benchmarks.md). It holds one block of the
// widest layer seen (what a call would allocate anyway) and only one caller at a time uses it:
// forward and backward of a layer never run at once on one thread.
at::Tensor& block_cache() {
  thread_local at::Tensor cache;
  return cache;
}

at::Tensor block_buffer(int64_t rows, int64_t in, const at::TensorOptions& opt) {
  at::Tensor& cache = block_cache();
  const int64_t need = rows * in;
  if (!cache.defined() || cache.scalar_type() != opt.dtype().toScalarType() ||
      cache.numel() < need) {
    cache = at::Tensor();  // free the old buffer first: never both at once
    cache = at::empty({need}, opt);
  }
  return cache.narrow(0, 0, need).view({rows, in});
}

template <typename F>
void for_row_blocks(const Plan& p, F&& f) {
  for (int64_t r0 = 0; r0 < p.out; r0 += p.chunk) f(r0, std::min(p.chunk, p.out - r0));
}

// dst = Q(W_comb) for rows [r0, r0+n).
// clipped (optional, int32 [out]): per row, the number of clipped elements.
void merged_quantize_block(const at::Tensor& W0, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& s, const at::Tensor& b, const Plan& p, int64_t r0,
                           int64_t n, at::Tensor& dst, at::Tensor* clipped = nullptr) {
  const int64_t r = p.has_lora ? rank_of(A) : 0;
  AT_DISPATCH_FLOATING_TYPES(dst.scalar_type(), "l4q_quantize_block", [&] {
    const scalar_t* a = r > 0 ? A.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bl = r > 0 ? B.data_ptr<scalar_t>() + r0 * r : nullptr;
    const scalar_t* sp = s.data_ptr<scalar_t>() + r0 * p.groups;
    const scalar_t* bp = b.data_ptr<scalar_t>() + r0 * p.groups;
    scalar_t* d = dst.data_ptr<scalar_t>();
    int32_t* cl = clipped ? clipped->data_ptr<int32_t>() + r0 : nullptr;
    with_weight_data<scalar_t>(W0, r0 * p.in, [&](const auto* w0) {
      at::parallel_for(0, n, detail::row_grain(p.in), [&](int64_t i0, int64_t i1) {
        cpu::merged_quantize_rows(w0 + i0 * p.in, a, r > 0 ? bl + i0 * r : nullptr,
                                  static_cast<scalar_t>(p.lora_scale), r, sp + i0 * p.groups,
                                  bp + i0 * p.groups, i1 - i0, p.in, p.gs, p.bits, d + i0 * p.in,
                                  cl ? cl + i0 : nullptr);
      });
    });
  });
}

// n floats rounded up to 64 bytes: the per-thread pieces of the AMX paths' workspaces.
int64_t cache_lines(int64_t n) { return (n + 15) / 16 * 16; }

// Whether the products with W_q (forward, input gradient) run on AMX tiles from its codes
// (src/quant/codes_matmul.h): fp32 on the CPU, groups of whole 32-column steps, and enough
// work to repay splitting X or dY.
bool use_amx(const at::Tensor& x2, const Plan& p) {
  return x2.scalar_type() == at::kFloat && !x2.is_cuda() && p.gs % cpu::kAmxStep == 0 &&
         x2.size(0) * p.out * p.in >= detail::amx_min_macs() && cpu::amx_enabled();
}

// Y = X W_q^T on AMX (codes_matmul.h). W_q's rows are built and quantized 16 at a time by the
// same loops as the BLAS path (the same codes, the same clip counts); a panel whose values do
// not round-trip through their codes (degenerate steps, NaN) is multiplied by W_q with BLAS.
void forward_amx(const at::Tensor& x2, const at::Tensor& W0, const at::Tensor& A,
                 const at::Tensor& B, const at::Tensor& st, const at::Tensor& bt, const Plan& p,
                 at::Tensor& Y, at::Tensor* clipped) {
  const int64_t M = x2.size(0), K = p.in, G = p.groups, steps = K / cpu::kAmxStep;
  const int64_t m32 = (M + 31) / 32 * 32;
  const int64_t P = cpu::kAmxPanelRows;
  // Per thread: the panel's codes, 16 rows of W_q, s and b transposed, the matmul's scratch.
  const int64_t codes_f = cache_lines(P / cpu::kAmxTile * steps * 512 / 2),
                rows_f = cache_lines(cpu::kAmxTile * K), st_f = cache_lines(G * P),
                scratch_f = cache_lines(cpu::amx_scratch_elements(P));
  const int64_t per_thread = codes_f + rows_f + 2 * st_f + scratch_f;
  const int64_t parts_f = cache_lines(cpu::amx_parts_elements(M, K) / 2);
  // All of it, and X's parts, in the row-block buffer (unused by this path otherwise): on the
  // 7B shapes it fits in the block the backward needs anyway, so there is no new peak.
  const int64_t threads = at::get_num_threads();
  auto store = block_buffer((parts_f + threads * per_thread + K - 1) / K, K, x2.options());
  float* base = store.data_ptr<float>();
  auto* parts = reinterpret_cast<uint16_t*>(base);
  auto xsum = at::empty({m32, G}, x2.options());
  at::parallel_for(0, m32 / cpu::kAmxTile, 1, [&](int64_t t0, int64_t t1) {
    cpu::amx_split_x(x2.data_ptr<float>(), M, K, p.gs, t0, t1, parts, xsum.data_ptr<float>());
  });
  const int64_t r = p.has_lora ? rank_of(A) : 0;
  const int64_t panels = (p.out + P - 1) / P;
  const int64_t block_groups = std::max<int64_t>(1, cpu::kAmxCodeBlockBytes / (P * p.gs * 2));
  std::vector<uint8_t> failed(panels, 0);
  const float* a = r > 0 ? A.data_ptr<float>() : nullptr;
  const float* sp = st.data_ptr<float>();
  const float* bp = bt.data_ptr<float>();
  int32_t* cl = clipped ? clipped->data_ptr<int32_t>() : nullptr;
  float* y = Y.data_ptr<float>();
  with_weight_data<float>(W0, 0, [&](const auto* w0) {
    at::parallel_for(0, panels, 1, [&](int64_t q0, int64_t q1) {
      float* mine = base + parts_f + at::get_thread_num() * per_thread;
      auto* codes = reinterpret_cast<uint16_t*>(mine);
      float* rows = mine + codes_f;
      float* sT = rows + rows_f;
      float* bT = sT + st_f;
      float* scratch = bT + st_f;
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t n0 = q * P, nv = std::min(P, p.out - n0);
        const int64_t nbp = (nv + 31) / 32 * 32;
        bool ok = true;
        for (int64_t t = 0; t * cpu::kAmxTile < nbp; ++t) {
          const int64_t i0 = n0 + t * cpu::kAmxTile;
          const int64_t n = std::clamp<int64_t>(nv - t * cpu::kAmxTile, 0, cpu::kAmxTile);
          if (n > 0)
            cpu::merged_quantize_rows(w0 + i0 * K, a, r > 0 ? B.data_ptr<float>() + i0 * r : nullptr,
                                      static_cast<float>(p.lora_scale), r, sp + i0 * G,
                                      bp + i0 * G, n, K, p.gs, p.bits, rows,
                                      cl ? cl + i0 : nullptr);
          ok = ok && cpu::amx_pack_codes(rows, n, K, p.gs, sp + i0 * G, bp + i0 * G,
                                         codes + t * steps * 512);
        }
        if (!ok) {
          failed[q] = 1;
          continue;
        }
        for (int64_t g = 0; g < G; ++g)
          for (int64_t i = 0; i < nbp; ++i) {
            sT[g * nbp + i] = i < nv ? sp[(n0 + i) * G + g] : 0.0f;
            bT[g * nbp + i] = i < nv ? bp[(n0 + i) * G + g] : 0.0f;
          }
        for (int64_t g0 = 0; g0 < G; g0 += block_groups)
          cpu::amx_codes_matmul(parts, xsum.data_ptr<float>(), M, K, p.gs, codes, sT, bT, nbp,
                                nv, g0, std::min(G, g0 + block_groups), scratch, y + n0, p.out);
      }
    });
  });
  for (int64_t q = 0; q < panels; ++q) {
    if (!failed[q]) continue;
    const int64_t n0 = q * P, nv = std::min(P, p.out - n0);
    auto Wc = at::empty({nv, K}, x2.options());
    merged_quantize_block(W0, A, B, st, bt, p, n0, nv, Wc);
    auto Yc = Y.narrow(1, n0, nv);
    at::mm_out(Yc, x2, Wc.t());
  }
}

// dX += dY[:, rows] W_q[rows] for the row block [r0, r0 + n) on AMX (codes_matmul.h), with
// W_q in Wc as the backward pass wrote it. A slab whose values do not round-trip through their
// codes (degenerate steps, NaN) is multiplied by Wc with BLAS instead.
void input_grad_amx(const at::Tensor& dY, const at::Tensor& st, const at::Tensor& bt,
                    const Plan& p, int64_t r0, int64_t n, const at::Tensor& Wc, at::Tensor& dX) {
  const int64_t M = dY.size(0), K = p.in, G = p.groups;
  const int64_t cw = cpu::amx_dx_slab_columns(p.gs), slabs = K / cw;
  // T = dY[:, rows] b[rows]: the offsets' share, per token and group.
  const auto T = at::mm(dY.narrow(1, r0, n), bt.narrow(0, r0, n));
  const float* sp = st.data_ptr<float>() + r0 * G;
  const float* bp = bt.data_ptr<float>() + r0 * G;
  const float* dy = dY.data_ptr<float>() + r0;
  const float* w = Wc.data_ptr<float>();
  const float* tp = T.data_ptr<float>();
  float* dx = dX.data_ptr<float>();
  // Per thread: the slab's codes, two halves of D's parts, s and b of the slab's group, the
  // tiles' scratch.
  const int64_t codes_f = cache_lines(cpu::amx_dx_codes_elements(n, cw) / 2),
                parts_f = cache_lines(cpu::amx_dx_parts_elements(n)),  // two halves of uint16
                sg_f = cache_lines(n);
  const int64_t per_thread = codes_f + parts_f + 2 * sg_f + 1024;
  auto work = at::empty({at::get_num_threads() * per_thread}, dY.options());
  std::vector<uint8_t> failed(slabs, 0);
  at::parallel_for(0, slabs, 1, [&](int64_t c0, int64_t c1) {
    float* mine = work.data_ptr<float>() + at::get_thread_num() * per_thread;
    auto* codes = reinterpret_cast<uint16_t*>(mine);
    auto* parts = reinterpret_cast<uint16_t*>(mine + codes_f);
    float* sg = mine + codes_f + parts_f;
    float* bg = sg + sg_f;
    float* scratch = bg + sg_f;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t k0 = c * cw, g = k0 / p.gs;
      for (int64_t i = 0; i < n; ++i) {
        sg[i] = sp[i * G + g];
        bg[i] = bp[i * G + g];
      }
      if (!cpu::amx_dx_pack_codes(w + k0, K, n, cw, sg, bg, codes)) {
        failed[c] = 1;
        continue;
      }
      cpu::amx_dx_slab(dy, p.out, M, n, sg, codes, cw, tp + g, G, parts, scratch, dx + k0, K);
    }
  });
  for (int64_t c = 0; c < slabs; ++c) {
    if (!failed[c]) continue;
    auto dXc = dX.narrow(1, c * cw, cw);
    dXc.addmm_(dY.narrow(1, r0, n), Wc.narrow(1, c * cw, cw));
  }
}

struct L4QLinearFunction : public torch::autograd::Function<L4QLinearFunction> {
  // x2: [N, in] contiguous. Returns [N, out].
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x2,
                            const at::Tensor& W0, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& s, const at::Tensor& b, const at::Tensor& bias,
                            int64_t bits, int64_t gs, double lora_scale, double grad_scale,
                            int64_t chunk) {
    // Absent A/B/bias arrive as empty placeholders: autograd Functions of torch 1.13 cannot
    // take undefined tensors.
    const Plan p{static_cast<int>(bits), W0.size(0), W0.size(1), gs, W0.size(1) / gs,
                 resolve_chunk(chunk, W0.size(0), W0.size(1)), lora_scale, grad_scale,
                 A.numel() > 0};
    // Per row, how many weights are clipped (int32 [out]): the backward sums the LoRA gradients
    // of mostly clipped rows directly (cpu::merged_quantize_backward_rows). Left empty where the
    // backward sums every row directly anyway (small layers), and without LoRA or on CUDA.
    const bool count_clipped = p.has_lora && !x2.is_cuda() &&
                               p.out * p.in > detail::lora_direct_max_elements();
    at::Tensor clipped = at::empty({count_clipped ? p.out : 0}, x2.options().dtype(at::kInt));
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["gs"] = gs;
    ctx->saved_data["lora_scale"] = lora_scale;
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["chunk"] = chunk;
    // The backward multiplies by W_q on the tiles too if the forward did: one layer, one path.
    const bool amx = use_amx(x2, p);
    ctx->saved_data["amx"] = amx;
#if L4Q_WITH_CUDA_KERNELS
    if (x2.is_cuda()) {
      auto Yc = cuda::l4q_linear_forward(x2, W0, A, B, s, b, p.bits, gs, lora_scale);
      if (bias.numel() > 0) Yc.add_(bias);
      ctx->save_for_backward({x2, W0, A, B, s, b, bias, clipped});
      return Yc;
    }
#endif
    const auto dt = x2.scalar_type();
    const auto st = s.to(dt).contiguous(), bt = b.to(dt).contiguous();
    auto Y = at::empty({x2.size(0), p.out}, x2.options());
    if (amx) {
      forward_amx(x2, W0, A, B, st, bt, p, Y, count_clipped ? &clipped : nullptr);
    } else {
      auto buf = block_buffer(p.chunk, p.in, x2.options());
      for_row_blocks(p, [&](int64_t r0, int64_t n) {
        auto Wc = buf.narrow(0, 0, n);
        merged_quantize_block(W0, A, B, st, bt, p, r0, n, Wc, count_clipped ? &clipped : nullptr);
        auto Yc = Y.narrow(1, r0, n);
        at::mm_out(Yc, x2, Wc.t());
      });
    }
    if (bias.numel() > 0) Y.add_(bias);
    ctx->save_for_backward({x2, W0, A, B, s, b, bias, clipped});
    return Y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sv = ctx->get_saved_variables();
    const auto &x2 = sv[0], &W0 = sv[1], &A = sv[2], &B = sv[3], &s = sv[4], &b = sv[5],
               &bias = sv[6], &clipped = sv[7];
    const int64_t gs = ctx->saved_data["gs"].toInt();
    const Plan p{static_cast<int>(ctx->saved_data["bits"].toInt()),
                 W0.size(0),
                 W0.size(1),
                 gs,
                 W0.size(1) / gs,
                 resolve_chunk(ctx->saved_data["chunk"].toInt(), W0.size(0), W0.size(1)),
                 ctx->saved_data["lora_scale"].toDouble(),
                 ctx->saved_data["grad_scale"].toDouble(),
                 A.numel() > 0};
    const auto dt = x2.scalar_type();
    const auto dY = grads[0].to(dt).contiguous();
    // Input order of forward: x2, W0, A, B, s, b, bias.
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool need_a = p.has_lora && ctx->needs_input_grad(2);
    const bool need_b = p.has_lora && ctx->needs_input_grad(3);
    const bool need_lora = need_a || need_b;
#if L4Q_WITH_CUDA_KERNELS
    if (x2.is_cuda()) {
      auto g = cuda::l4q_linear_backward(dY, x2, W0, A, B, s, b, p.bits, p.gs, p.lora_scale,
                                         p.grad_scale, need_x, need_w, need_lora);
      at::Tensor dbias_c;
      if (bias.numel() > 0 && ctx->needs_input_grad(6)) dbias_c = dY.sum(0);
      return {need_x ? g.dX : at::Tensor(), need_w ? g.dW : at::Tensor(),
              need_a ? g.dA : at::Tensor(), need_b ? g.dB : at::Tensor(),
              ctx->needs_input_grad(4) ? g.ds : at::Tensor(),
              ctx->needs_input_grad(5) ? g.db : at::Tensor(), dbias_c,
              at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
#endif
    const auto st = s.to(dt).contiguous(), bt = b.to(dt).contiguous();

    at::Tensor dX = need_x ? at::empty_like(x2) : at::Tensor();
    at::Tensor dW = need_w ? at::empty_like(W0) : at::Tensor();
    auto ds = at::empty({p.out, p.groups}, x2.options());
    auto db = at::empty({p.out, p.groups}, x2.options());
    // One block buffer: G, then W_q written over it by the fused pass (each element of G is
    // read before its W_q is stored). Training W0 keeps M * G as dW, so W_q needs its own.
    auto gbuf = need_w ? at::Tensor() : block_buffer(p.chunk, p.in, x2.options());
    auto wbuf = need_w ? block_buffer(p.chunk, p.in, x2.options()) : gbuf;

    // LoRA gradients as unmasked rank-r products minus corrections from the clipped elements
    // (cpu::merged_quantize_backward_rows): dB = scale (dY^T (X A^T) - dB_clip),
    // dA = scale ((dY B)^T X - dA_clip^T). Each block's rows are split into the same `tasks`
    // contiguous ranges and task t adds its rows' share into dA_clip[t]; the parts are summed in
    // task order, so dA's bits depend on the thread count but not on scheduling.
    const int64_t r = p.has_lora ? rank_of(A) : 0;
    const int64_t grain = detail::row_grain(p.in);
    const int64_t tasks =
        std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (p.chunk + grain - 1) / grain));
    // Rows with more than a quarter of their weights clipped get their LoRA gradients summed
    // directly; elsewhere the subtraction at most scales rounding by 4/3.
    // A small layer has every row direct: the unmasked products are four skinny GEMMs whose
    // fixed cost (tens of microseconds each with two threads) exceeds the direct sums below
    // 64K weights (stories260K's quick start trains 6% slower otherwise). The forward decided:
    // it counted clipped weights only for the other layers.
    const bool all_direct = need_lora && clipped.numel() == 0;
    const at::Tensor direct = !need_lora  ? at::Tensor()
                              : all_direct ? at::ones({p.out}, x2.options().dtype(at::kByte))
                                           : (clipped * 4 > p.in).to(at::kByte);
    const bool any_direct = need_lora && (all_direct || direct.any().item<bool>());
    at::Tensor dB_clip = need_b ? at::empty_like(B) : at::Tensor();
    // A transposed, its rows padded to a multiple of 8 (the corrections' layout), and per task
    // the dA corrections in the same [in, rp] layout.
    const int64_t rp = (r + 7) / 8 * 8;
    at::Tensor At;
    if (need_lora) {
      At = at::zeros({p.in, rp}, x2.options());
      At.narrow(1, 0, r).copy_(A.t());
    }
    at::Tensor dA_clip = need_a ? at::zeros({tasks, p.in, rp}, x2.options()) : at::Tensor();
    // The unmasked products, block by block while dY's columns are in cache:
    // dB[rows] = dY[:, rows]^T (X A^T) and dY B = sum over blocks of dY[:, rows] B[rows].
    const bool unmasked_b = need_b && !all_direct, unmasked_a = need_a && !all_direct;
    at::Tensor dB = unmasked_b ? at::empty_like(B) : at::Tensor();
    const at::Tensor XA = unmasked_b ? at::mm(x2, A.t()) : at::Tensor();
    at::Tensor dYB = unmasked_a ? at::empty({x2.size(0), r}, x2.options()) : at::Tensor();
    const bool amx_dx = need_x && ctx->saved_data["amx"].toBool();
    for_row_blocks(p, [&](int64_t r0, int64_t n) {
      // G = dY[:, rows]^T X: the gradient w.r.t. this block of W_q, over every token.
      auto G = need_w ? dW.narrow(0, r0, n) : gbuf.narrow(0, 0, n);
      auto Wc = wbuf.narrow(0, 0, n);  // G itself unless W0 is trained
      const auto dYc = dY.narrow(1, r0, n);
      at::mm_out(G, dYc.t(), x2);
      // One pass: Wc <- W_q, ds, db, the clip corrections, and G <- M * G when it is dW.
      AT_DISPATCH_FLOATING_TYPES(dt, "l4q_linear_backward_block", [&] {
        const scalar_t* a = r > 0 ? A.data_ptr<scalar_t>() : nullptr;
        const scalar_t* at_ = need_lora ? At.data_ptr<scalar_t>() : nullptr;
        const scalar_t* bl = r > 0 ? B.data_ptr<scalar_t>() + r0 * r : nullptr;
        scalar_t* dbc = need_b ? dB_clip.data_ptr<scalar_t>() + r0 * r : nullptr;
        scalar_t* dac = need_a ? dA_clip.data_ptr<scalar_t>() : nullptr;
        const uint8_t* dir = any_direct ? direct.data_ptr<uint8_t>() + r0 : nullptr;
        scalar_t* w = Wc.data_ptr<scalar_t>();
        scalar_t* gp = G.data_ptr<scalar_t>();
        const int64_t off = r0 * p.groups;
        with_weight_data<scalar_t>(W0, r0 * p.in, [&](const auto* w0) {
          at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t i0 = n * t / tasks, i1 = n * (t + 1) / tasks;
              if (i0 == i1) continue;
              const int64_t o = off + i0 * p.groups;
              cpu::merged_quantize_backward_rows(
                  w0 + i0 * p.in, a, at_, rp, r > 0 ? bl + i0 * r : nullptr,
                  static_cast<scalar_t>(p.lora_scale), r, st.data_ptr<scalar_t>() + o,
                  bt.data_ptr<scalar_t>() + o, i1 - i0, p.in, p.gs, p.bits, w + i0 * p.in,
                  gp + i0 * p.in, /*mask_G=*/need_w, ds.data_ptr<scalar_t>() + o,
                  db.data_ptr<scalar_t>() + o, dbc ? dbc + i0 * r : nullptr,
                  dac ? dac + t * p.in * rp : nullptr, dir ? dir + i0 : nullptr);
            }
          });
        });
      });
      // Direct rows: no unmasked product (their sums are whole in dB_clip and dA_clip).
      const at::Tensor dir_rows = any_direct && !all_direct
                                      ? direct.narrow(0, r0, n).to(at::kBool).unsqueeze(1)
                                      : at::Tensor();
      if (unmasked_b) {
        auto dBc = dB.narrow(0, r0, n);
        at::mm_out(dBc, dYc.t(), XA);
        if (any_direct) dBc.masked_fill_(dir_rows, 0);
      }
      if (unmasked_a) {
        const auto Bo = any_direct ? B.narrow(0, r0, n).masked_fill(dir_rows, 0) : B.narrow(0, r0, n);
        if (r0 == 0) at::mm_out(dYB, dYc, Bo);
        else dYB.addmm_(dYc, Bo);
      }
      if (need_x) {
        if (amx_dx) {
          if (r0 == 0) dX.zero_();
          input_grad_amx(dY, st, bt, p, r0, n, Wc, dX);
        } else if (r0 == 0) {
          at::mm_out(dX, dYc, Wc);
        } else {
          dX.addmm_(dYc, Wc);
        }
      }
    });
    if (need_b) dB = (all_direct ? dB_clip.neg_() : dB.sub_(dB_clip)).mul_(p.lora_scale);
    at::Tensor dA;
    if (need_a) {  // (dY B)^T X: [r, N] x [N, in]
      dA = all_direct ? at::zeros({r, p.in}, x2.options()) : at::mm(dYB.t(), x2);
      for (int64_t t = 0; t < tasks; ++t) dA.sub_(dA_clip[t].narrow(1, 0, r).t());
      dA.mul_(p.lora_scale);
    }
    ds.mul_(p.grad_scale);
    db.mul_(p.grad_scale);
    at::Tensor dbias;
    if (bias.numel() > 0 && ctx->needs_input_grad(6)) dbias = dY.sum(0);
    return {dX,
            dW,
            dA,
            dB,
            ctx->needs_input_grad(4) ? ds.to(s.scalar_type()) : at::Tensor(),
            ctx->needs_input_grad(5) ? db.to(b.scalar_type()) : at::Tensor(),
            dbias,
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_linear_args(const at::Tensor& x, const at::Tensor& W0, const at::Tensor& A,
                       const at::Tensor& B, const at::Tensor& s, const at::Tensor& b,
                       const at::Tensor& bias, const L4QOptions& opt) {
  constexpr const char* op = "l4q_linear";
  detail::check_frozen_weight(op, "W0", W0);
  const int64_t out = W0.size(0), in = W0.size(1);
  const auto ct = detail::compute_dtype_of(W0);
  opt.grid.validate(op, in);
  if (!x.defined() || x.dim() < 1 || x.size(-1) != in)
    fail("[", op, "] tensor 'x': expected [..., ", in, "], got ", detail::shape_str(x));
  if (x.scalar_type() != ct)
    fail("[", op, "] tensor 'x': expected dtype ", c10::toString(ct), " (W0's compute dtype), got ",
         c10::toString(x.scalar_type()));
  if (A.defined() != B.defined())
    fail("[", op, "] tensors 'A', 'B': expected both defined (LoRA) or both undefined");
  if (A.defined()) {
    if (A.dim() != 2 || A.size(1) != in || A.size(0) < 1)
      fail("[", op, "] tensor 'A': expected [r, ", in, "] with r >= 1, got ", detail::shape_str(A));
    if (B.dim() != 2 || B.size(0) != out || B.size(1) != A.size(0))
      fail("[", op, "] tensor 'B': expected [", out, ", ", A.size(0), "], got ",
           detail::shape_str(B));
    if (A.scalar_type() != ct || B.scalar_type() != ct)
      fail("[", op, "] tensors 'A', 'B': expected dtype ", c10::toString(ct));
  }
  const int64_t groups = opt.grid.groups_per_row(in);
  detail::check_step_offset(op, s, b, out, groups, ct);
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != out))
    fail("[", op, "] tensor 'bias': expected [", out, "], got ", detail::shape_str(bias));
  if (opt.row_chunk < 0)
    fail("[", op, "] row_chunk: expected >= 0 (0: automatic), got ", opt.row_chunk);
  if (!std::isfinite(opt.lora_scale))
    fail("[", op, "] lora_scale: expected a finite value, got ", opt.lora_scale);
}

}  // namespace

void release_l4q_workspace() { block_cache() = at::Tensor(); }

at::Tensor l4q_linear(const at::Tensor& x, const at::Tensor& W0, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& s, const at::Tensor& b,
                      const at::Tensor& bias, const L4QOptions& opt) {
  check_linear_args(x, W0, A, B, s, b, bias, opt);
  const int64_t in = W0.size(1);
  const int64_t gs = opt.grid.group_size_for(in);
  const double g = opt.grad_scale > 0 ? opt.grad_scale : lsq_grad_scale(opt.grid, in);
  auto lead = x.sizes().vec();
  lead.pop_back();
  const auto x2 = x.reshape({-1, in}).contiguous();
  const auto none = at::empty({0}, x.options());
  auto y = L4QLinearFunction::apply(x2, W0.contiguous(), A.defined() ? A.contiguous() : none,
                                    B.defined() ? B.contiguous() : none, s, b,
                                    bias.defined() ? bias : none, opt.grid.bits, gs,
                                    opt.lora_scale, g, opt.row_chunk);
  lead.push_back(W0.size(0));
  return y.view(lead);
}

// ---------------------------------------------------------------------------------------
// L4QLinear module
// ---------------------------------------------------------------------------------------

at::Tensor integer_offset(const at::Tensor& s, const at::Tensor& b, const QuantGrid& grid) {
  if (!s.defined() || !b.defined() || !s.sizes().equals(b.sizes()))
    fail("[integer_offset] tensors 's', 'b': expected the same shape, got ",
         detail::shape_str(s), " and ", detail::shape_str(b));
  // x = b/s; k = round(x). For |x - k| <= 1/2, k - x is exact (Sterbenz) and x + (k - x)
  // is exactly k, so k_ste has the value k and the gradients of x: s * k_ste is fl(s * k)
  // with d/db = 1 and d/ds = k - b/s.
  const auto x = b / s;
  const auto k = at::round(x.detach());
  const auto kc = k.clamp(-grid.qp(), -grid.qn());
  const auto k_ste = at::where(k == kc, x + (k - x.detach()), kc);
  return s * k_ste;
}

at::Tensor L4QLinear::effective_offset() const {
  return spec_.integer_offset ? integer_offset(s_, offset_, spec_.grid) : offset_;
}

L4QLinear::L4QLinear(at::Tensor weight, at::Tensor bias, const L4QLinearSpec& spec,
                     c10::optional<at::Generator> gen)
    : spec_(spec) {
  constexpr const char* where = "L4QLinear";
  detail::check_frozen_weight(where, "weight", weight);
  spec_.lora.validate(where);
  spec_.grid.validate(where, weight.size(1));
  if (spec_.lora.dropout != 0)
    fail("[", where, "] lora.dropout: expected 0 for l4q, got ", spec_.lora.dropout,
         " (the adapter is merged into the weight before quantization, so there is no "
         "separate LoRA branch to drop inputs from; use method lora or qat-lora for dropout)");
  if (spec_.row_chunk < 0)
    fail("[", where, "] row_chunk: expected >= 0 (0: automatic), got ", spec_.row_chunk);
  detail::check_finite(where, "weight", weight);
  if (bias.defined()) {
    if (bias.dim() != 1 || bias.size(0) != weight.size(0))
      fail("[", where, "] tensor 'bias': expected [", weight.size(0), "], got ",
           detail::shape_str(bias));
    detail::check_finite(where, "bias", bias);
  }
  at::NoGradGuard no_grad;
  weight_ = weight.detach().contiguous();
  bias_ = bias.defined() ? bias.detach().contiguous() : bias;
  // A weight kept in 16 bits stays so (half the memory; the L4Q loops widen it as they read);
  // the adapter, the quantizer and the computation are fp32.
  const auto dt = detail::compute_dtype_of(weight_);
  a_ = init_lora_a(spec_.lora.rank, in_features(), dt, gen).set_requires_grad(true);
  b_lora_ = init_lora_b(out_features(), spec_.lora.rank, dt).set_requires_grad(true);
  auto so = init_step_offset(weight_.to(dt), spec_.grid, spec_.init);
  s_ = so.s.set_requires_grad(true);
  offset_ = so.b.set_requires_grad(true);
}

L4QOptions L4QLinear::options() const {
  return {spec_.grid, spec_.lora.scale(), spec_.grad_scale, spec_.row_chunk};
}

at::Tensor L4QLinear::forward(const at::Tensor& x) const {
  if (!quantize_) {
    auto y = at::matmul(x, weight_.to(a_.scalar_type()).t()) +
             at::matmul(at::matmul(x, a_.t()), b_lora_.t()) * spec_.lora.scale();
    return bias_.defined() ? y + bias_ : y;
  }
  return l4q_linear(x, weight_, a_, b_lora_, s_, effective_offset(), bias_, options());
}

void L4QLinear::enable_quantization(LsqInit init) {
  init_quantizer(init);
  quantize_ = true;
}

std::optional<double> L4QLinear::clipped_fraction() const {
  if (!quantize_) return std::nullopt;
  at::NoGradGuard no_grad;
  return l4q::clipped_fraction(merged_float_weight(), s_, effective_offset(), spec_.grid);
}

at::Tensor L4QLinear::effective_weight() const {
  return quantize_ ? merge().dequantize() : merged_float_weight();
}

at::Tensor L4QLinear::merged_float_weight() const {
  at::NoGradGuard no_grad;
  return at::addmm(weight_.to(a_.scalar_type()), b_lora_, a_, 1.0, spec_.lora.scale());
}

void L4QLinear::init_quantizer(LsqInit init) {
  at::NoGradGuard no_grad;
  auto so = init_step_offset(merged_float_weight(), spec_.grid, init);
  s_.copy_(so.s);
  offset_.copy_(so.b);
}

void L4QLinear::project_parameters_() { project_step_(s_); }

MergedWeight L4QLinear::merge() const {
  at::NoGradGuard no_grad;
  const auto opt = options();
  const int64_t in = in_features(), gs = spec_.grid.group_size_for(in);
  const Plan p{spec_.grid.bits, out_features(), in, gs, in / gs,
               resolve_chunk(spec_.row_chunk, out_features(), in), opt.lora_scale, 0.0, true};
  // Build W_comb in the forward pass's row blocks so the codes come from the same bits.
  auto Wc = at::empty(weight_.sizes(), a_.options().requires_grad(false));
  for_row_blocks(p, [&](int64_t r0, int64_t n) {
    auto dst = Wc.narrow(0, r0, n);
    merged_rows(weight_, a_.detach(), b_lora_.detach(), p, r0, n, dst);
  });
  return quantize_weight(Wc, s_, effective_offset(), spec_.grid);
}

std::vector<NamedParam> L4QLinear::parameters() const {
  return {{"lora_a", a_, ParamRole::Adapter},
          {"lora_b", b_lora_, ParamRole::Adapter},
          {"step", s_, ParamRole::Quantizer},
          {"offset", offset_, ParamRole::Quantizer}};
}

}  // namespace l4q
