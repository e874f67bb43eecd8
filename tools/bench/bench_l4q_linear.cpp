// Forward+backward step time and peak memory of one LLaMA-7B-shaped MLP projection pair
// (4096 -> 11008 -> 4096) for float LoRA, QAT-LoRA and L4Q, measured in one run and reported
// as ratios against float LoRA.
//
//   bench_l4q_linear [--tokens 512] [--rank 16] [--group 128] [--bits 4] [--reps 5]
//                    [--chunk 0] [--hidden 4096] [--inter 11008] [--threads 0]
//                    [--only lora|qat-lora|l4q|l4q-bf16w|l4q-blas] [--s-scale 1.0]
//
// --only runs one method alone (for `perf record`); its ratios are then to itself. --s-scale
// shrinks the initial step sizes so that the quantizer clips weights (the cost of L4Q's clip
// corrections grows with the clipped fraction, printed first).
//
// Time ratios pair each step with lora's step of the same round; the table gives their median
// and the middle half of them (quartiles), which shows how far one run can be trusted.
//
// Peak memory is the allocator-level high-water mark (l4q::MemoryMeter) of everything the
// step allocates, including the frozen weights, which every method holds.
//
// Like the tools, the bench keeps freed memory in the C allocator's heap (l4q::keep_freed_memory);
// L4Q_MALLOC=glibc measures under glibc's defaults instead, where the baselines' large
// temporaries page-fault in again every step and L4Q's cached row-block buffer does not.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "l4q/memory.h"
#include "l4q/nn/l4q_linear.h"
#include "l4q/quant/lsq.h"
#include "l4q/runtime.h"

namespace {

struct Args {
  int64_t tokens = 512, rank = 16, group = 128, hidden = 4096, inter = 11008, chunk = 0;  // 0: automatic, the library default
  int bits = 4, reps = 5, threads = 0;
  double s_scale = 1.0;  // multiplies the initial step sizes: < 1 clips weights (L4Q init clips none)
  std::string only;  // empty: every method
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (k == "--only") a.only = argv[i + 1];
    else if (k == "--s-scale") a.s_scale = std::atof(argv[i + 1]);
    else if (k == "--tokens") a.tokens = v;
    else if (k == "--rank") a.rank = v;
    else if (k == "--group") a.group = v;
    else if (k == "--bits") a.bits = static_cast<int>(v);
    else if (k == "--reps") a.reps = static_cast<int>(v);
    else if (k == "--chunk") a.chunk = v;
    else if (k == "--hidden") a.hidden = v;
    else if (k == "--inter") a.inter = v;
    else if (k == "--threads") a.threads = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

// One projection: frozen W0 plus whatever the method trains.
struct Proj {
  at::Tensor W0, A, B, s, b;
};

// W0's values are bfloat16 values (a checkpoint's), held in fp32 except for the method that
// keeps them in bfloat16 (Method::bf16_w0): every method computes with the same numbers.
Proj make_proj(int64_t out, int64_t in, const Args& a, bool bf16_w0) {
  Proj p;
  p.W0 = (at::randn({out, in}) * 0.02).to(at::kBFloat16);
  if (!bf16_w0) p.W0 = p.W0.to(at::kFloat);
  p.A = l4q::init_lora_a(a.rank, in, at::kFloat).set_requires_grad(true);
  p.B = (at::randn({out, a.rank}) * 0.01).set_requires_grad(true);  // non-zero: real work
  auto so = l4q::init_step_offset(p.W0.to(at::kFloat), {a.bits, a.group}, l4q::LsqInit::L4Q);
  p.s = (so.s * a.s_scale).set_requires_grad(true);
  p.b = so.b.set_requires_grad(true);
  return p;
}

using Forward = std::function<at::Tensor(const Proj&, const at::Tensor&)>;

struct Method {
  std::string name;
  Forward f;
  bool bf16_w0 = false;  // W0 kept in bfloat16 (make_proj)
};

struct Result {
  std::string name;
  double ms = 0, cpu_ms = 0;
  double ratio = 0, cpu_ratio = 0;  // medians over reps of (this method / the first), paired
  double ratio_q1 = 0, ratio_q3 = 0;  // quartiles of the paired wall-time ratios
  int64_t peak = 0;
};

// Process CPU time: with --threads 1 it is the step's own compute, unaffected by other
// processes competing for the cores (wall time is reported too).
double cpu_now_ms() { return 1000.0 * static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

// One method's state: its two projections and input, built from the same seed for every method.
struct Case {
  std::string name;
  Forward f;
  Proj up, down;
  at::Tensor x;
  std::vector<double> wall, cpu;
  int64_t peak = 0;
};

void step(Case& c) {
  auto y = c.f(c.down, c.f(c.up, c.x));
  y.pow(2).mean().backward();
  for (Proj* p : {&c.up, &c.down})
    for (auto* t : {&p->A, &p->B, &p->s, &p->b})
      if (t->grad().defined()) t->mutable_grad().zero_();
  c.x.mutable_grad().zero_();
}

// The q-quantile of v (nearest rank; q = 0.5: the median).
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}
double median(const std::vector<double>& v) { return quantile(v, 0.5); }

// Peak memory: one step per method, each from a fresh meter holding only its own tensors.
// Time: the methods take turns, rep by rep, so a change in machine load hits them alike.
std::vector<Result> run_all(const std::vector<Method>& methods, const Args& a) {
  std::vector<Result> rs;
  std::vector<Case> cases;
  for (const auto& m : methods) {
    Case c;
    {
      // L4Q keeps its row-block buffer from call to call: free it, or every L4Q method after
      // the first would find it allocated and report a peak without it.
      l4q::release_l4q_workspace();
      l4q::MemoryMeter meter;
      at::manual_seed(0);
      c.name = m.name;
      c.f = m.f;
      c.up = make_proj(a.inter, a.hidden, a, m.bf16_w0);
      c.down = make_proj(a.hidden, a.inter, a, m.bf16_w0);
      c.x = at::randn({a.tokens, a.hidden}).set_requires_grad(true);
      // Only the step counts: building the weights has out x in temporaries of its own,
      // whose peak would hide the step's. What is live now (weights, x) stays counted.
      meter.reset_peak();
      step(c);  // warm-up, and the memory high-water mark
      c.peak = meter.peak_bytes();
    }
    cases.push_back(std::move(c));
  }
  for (int r = 0; r < a.reps; ++r)
    for (auto& c : cases) {
      const double c0 = cpu_now_ms();
      const auto t0 = std::chrono::steady_clock::now();
      step(c);
      const auto t1 = std::chrono::steady_clock::now();
      c.cpu.push_back(cpu_now_ms() - c0);
      c.wall.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  // Ratios pair each rep with the first method's rep of the same round: the machine's speed
  // drifts by several percent over a run, and a paired ratio cancels what the two share.
  auto paired = [&](const std::vector<double>& a, const std::vector<double>& base) {
    std::vector<double> q;
    for (size_t i = 0; i < a.size(); ++i) q.push_back(a[i] / base[i]);
    return q;
  };
  for (auto& c : cases) {
    const auto wall = paired(c.wall, cases[0].wall);
    rs.push_back({c.name, median(c.wall), median(c.cpu), median(wall),
                  median(paired(c.cpu, cases[0].cpu)), quantile(wall, 0.25), quantile(wall, 0.75),
                  c.peak});
  }
  return rs;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const int threads = l4q::set_num_threads(a.threads);
  // As the tools do. With glibc's defaults (L4Q_MALLOC=glibc) every method's blocks above 32
  // MiB page-fault in again each step; L4Q keeps its row-block buffer itself, so that setting
  // flatters it against the baselines.
  const bool kept = l4q::keep_freed_memory();
  const double scale = 16.0 / static_cast<double>(a.rank);
  const l4q::QuantGrid grid{a.bits, a.group};

  const Forward lora = [&](const Proj& p, const at::Tensor& x) {
    return at::matmul(x, p.W0.t()) + at::matmul(at::matmul(x, p.A.t()), p.B.t()) * scale;
  };
  // QAT-LoRA as torchao/torchtune do it: fake-quantize the frozen base (fixed s, b), float
  // LoRA beside it.
  const Forward qat_lora = [&](const Proj& p, const at::Tensor& x) {
    const auto Wq = l4q::fake_quantize(p.W0, p.s.detach(), p.b.detach(), grid);
    return at::matmul(x, Wq.t()) + at::matmul(at::matmul(x, p.A.t()), p.B.t()) * scale;
  };
  const Forward l4q_m = [&](const Proj& p, const at::Tensor& x) {
    return l4q::l4q_linear(x, p.W0, p.A, p.B, p.s, p.b, at::Tensor(),
                           {grid, scale, 0.0, a.chunk});
  };
  // l4q-blas: the products with W_q (forward, and dX in the backward, which follows its
  // forward) by BLAS on W_q even where the AMX tile path would run.
  const bool amx = l4q::set_amx_tiles(true);
  const Forward l4q_blas = [&](const Proj& p, const at::Tensor& x) {
    l4q::set_amx_tiles(false);
    auto y = l4q_m(p, x);
    l4q::set_amx_tiles(amx);
    return y;
  };

  std::printf("MLP pair %lld -> %lld -> %lld, %lld tokens, rank %lld, %d-bit group %lld, "
              "row_chunk %lld, %d threads, freed memory %s, median of %d steps (ratios: median of "
              "paired per-step ratios), L4Q's products with W_q on %s\n",
              (long long)a.hidden, (long long)a.inter, (long long)a.hidden, (long long)a.tokens,
              (long long)a.rank, a.bits, (long long)a.group, (long long)a.chunk, threads,
              kept ? "kept" : "returned to the OS", a.reps,
              amx ? "AMX tiles from its codes (l4q-blas: BLAS on W_q)" : "BLAS on W_q (no AMX here)");
  {
    at::manual_seed(0);
    const auto up = make_proj(a.inter, a.hidden, a, false),
               down = make_proj(a.hidden, a.inter, a, false);
    auto frac = [&](const Proj& p) {
      return l4q::clipped_fraction(at::addmm(p.W0, p.B.detach(), p.A.detach(), 1.0, scale), p.s,
                                   p.b, grid);
    };
    std::printf("clipped fraction of W_comb: up %.4f, down %.4f\n", frac(up), frac(down));
  }
  // l4q-bf16w: the same L4Q layer with its frozen W0 kept in bfloat16 (the values every method
  // uses): half the memory of W0, which only L4Q's own loops read.
  std::vector<Method> methods;
  for (const auto& m : std::vector<Method>{{"lora", lora},
                                           {"qat-lora", qat_lora},
                                           {"l4q", l4q_m},
                                           {"l4q-bf16w", l4q_m, true},
                                           {"l4q-blas", l4q_blas}})
    if (a.only.empty() || a.only == m.name) methods.push_back(m);
  if (methods.empty()) {
    std::fprintf(stderr, "--only: expected lora, qat-lora, l4q, l4q-bf16w or l4q-blas, got %s\n",
                 a.only.c_str());
    return 2;
  }
  const auto rs = run_all(methods, a);
  std::printf("| method | step ms (wall) | time vs lora | middle half of the steps | step ms (cpu) | cpu vs lora | peak MiB | memory vs lora |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rs)
    std::printf("| %s | %.1f | %.2fx | %.2f-%.2fx | %.1f | %.2fx | %.1f | %.3fx |\n",
                r.name.c_str(), r.ms, r.ratio, r.ratio_q1, r.ratio_q3, r.cpu_ms, r.cpu_ratio,
                r.peak / 1048576.0, double(r.peak) / double(rs[0].peak));
  return 0;
}
