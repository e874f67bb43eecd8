// Packed low-bit decode on the CPU against float32, measured in the same run:
//   1. matvec y = W x for a LLaMA-7B MLP weight (4096 x 11008 and 11008 x 4096): the packed
//      kernel (u2, u3, u4, u8; AVX2 and scalar) vs at::mv on the float32 weight;
//   2. decode tokens/s (KV-cached, one token per step) of a model whose projections are
//      PackedLinear vs the same model in float32: stories260K (when its asset is present) and
//      a synthetic LLaMA-7B-shaped stack of --layers blocks.
// Every kernel is checked against a float64 reference before it is timed.
//
//   bench_packed_matmul [--reps 30] [--threads 0] [--group 128] [--layers 2] [--tokens 16]
//                       [--decode 1] [--source DIR]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "l4q/infer/packed_linear.h"
#include "l4q/infer/packed_matmul.h"
#include "l4q/infer/packed_weight.h"
#include "l4q/io/checkpoint.h"
#include "l4q/model/kv_cache.h"
#include "l4q/model/llama.h"
#include "l4q/nn/methods.h"
#include "l4q/runtime.h"

namespace {

struct Args {
  int reps = 30, threads = 0, layers = 2, tokens = 16, decode = 1;
  int64_t group = 128;
  std::string source = L4Q_BENCH_SOURCE_DIR;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--reps") a.reps = std::atoi(v.c_str());
    else if (k == "--threads") a.threads = std::atoi(v.c_str());
    else if (k == "--group") a.group = std::atoll(v.c_str());
    else if (k == "--layers") a.layers = std::atoi(v.c_str());
    else if (k == "--tokens") a.tokens = std::atoi(v.c_str());
    else if (k == "--decode") a.decode = std::atoi(v.c_str());
    else if (k == "--source") a.source = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

// Median wall time and median process CPU time of f() in ms, after one warm-up call. On a
// shared machine the CPU time of a --threads 1 run is the steadier measure of the work.
struct Timing {
  double wall = 0, cpu = 0;
};
Timing median_ms(int reps, const std::function<void()>& f) {
  f();
  std::vector<double> w, c;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    f();
    c.push_back(1e3 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
    w.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(w.begin(), w.end());
  std::sort(c.begin(), c.end());
  return {w[w.size() / 2], c[c.size() / 2]};
}

l4q::PackedWeight random_packed(int bits, int64_t out, int64_t in, int64_t group, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  l4q::QuantGrid grid{bits, group};
  const int64_t G = in / group;
  l4q::MergedWeight m{
      at::randint(grid.qn(), grid.qp() + 1, {out, in}, gen, at::TensorOptions().dtype(at::kLong)).to(at::kChar),
      at::rand({out, G}, gen) * 0.002 + 1e-4, at::randn({out, G}, gen) * 1e-3, grid};
  return l4q::pack_weight(m, "bench");
}

void bench_matvec(const Args& a) {
  std::printf("\n== matvec y = W x (fp32 x), group %lld, median of %d ==\n", static_cast<long long>(a.group), a.reps);
  std::printf("%-14s %-5s %-7s %9s %9s %8s %9s %9s %8s %8s\n", "W [out, in]", "type", "kernel", "ms", "fp32 ms",
              "speedup", "cpu ms", "fp32 cpu", "cpu x", "GB/s");
  for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{{4096, 11008}, {11008, 4096}}) {
    const auto x = at::randn({1, in});
    for (int bits : {2, 3, 4, 8}) {
      const auto p = random_packed(bits, out, in, a.group, 42 + bits);
      const auto Wf = p.dequantize();  // the float32 baseline multiplies by the same W_q
      const auto ref = at::mv(Wf.to(at::kDouble), x[0].to(at::kDouble));
      const auto fp32 = median_ms(a.reps, [&] { (void)at::mv(Wf, x[0]); });
      std::vector<std::pair<const char*, l4q::PackedKernel>> ks = {{"scalar", l4q::PackedKernel::Scalar}};
      if (l4q::packed_avx2_available()) ks.insert(ks.begin(), {"avx2", l4q::PackedKernel::Avx2});
      for (const auto& [kname, k] : ks) {
        const auto y = l4q::packed_matmul(p, x, k);
        const double err = (y[0].to(at::kDouble) - ref).abs().max().item<double>() / ref.abs().max().item<double>();
        if (err > 1e-4) {
          std::fprintf(stderr, "%s u%d: relative error %g vs the float64 reference\n", kname, bits, err);
          std::exit(1);
        }
        const auto t = median_ms(k == l4q::PackedKernel::Scalar ? std::max(3, a.reps / 10) : a.reps,
                                 [&] { (void)l4q::packed_matmul(p, x, k); });
        const double bytes = static_cast<double>(p.qweight.numel()) + 8.0 * p.scales.numel();
        std::printf("%5lld x %-6lld u%-4d %-7s %9.3f %9.3f %7.2fx %9.3f %9.3f %7.2fx %8.1f\n",
                    static_cast<long long>(out), static_cast<long long>(in), bits, kname, t.wall, fp32.wall,
                    fp32.wall / t.wall, t.cpu, fp32.cpu, fp32.cpu / t.cpu, bytes / t.wall / 1e6);
      }
    }
  }
}

// tokens/s of greedy-free decoding: one token per forward, KV cache, fixed token ids.
double decode_tokens_per_s(const l4q::LlamaModel& m, int tokens) {
  at::NoGradGuard ng;
  l4q::KvCache cache;
  const auto tok = at::ones({1, 1}, at::kLong);
  (void)m.forward(tok, &cache);  // warm-up
  cache.clear();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < tokens; ++i) (void)m.forward(tok, &cache);
  return tokens / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A model whose projections are PackedLinear layers made from `src`'s quantized weights.
std::unique_ptr<l4q::LlamaModel> packed_copy(const l4q::LlamaModel& src) {
  std::map<std::string, at::Tensor> w;
  for (const auto& [n, t] : src.named_float_parameters()) w[n] = t;
  std::map<std::string, l4q::PackedWeight> packed;
  for (const auto& [n, lin] : src.named_linears()) {
    packed.emplace(n, l4q::pack_weight(*lin->quantized_weight(), n));
    w[n + ".weight"] = at::zeros({1}).expand({lin->out_features(), lin->in_features()});
  }
  return std::make_unique<l4q::LlamaModel>(
      src.config(), w, [&](const std::string& n, const at::Tensor&, const at::Tensor& b) {
        return std::make_unique<l4q::PackedLinear>(packed.at(n), b);
      });
}

void bench_decode(const Args& a) {
  std::printf("\n== decode tokens/s (KV cache, batch 1) ==\n");
  std::printf("%-34s %12s %12s %9s\n", "model", "float32", "packed", "speedup");
  const auto gguf = a.source + "/assets/stories260K/stories260K.gguf";
  if (std::filesystem::exists(gguf)) {
    auto ck = l4q::load_checkpoint(gguf);
    l4q::MethodSpec spec;
    spec.method = l4q::LinearMethod::Rtn;
    spec.grid = {4, 32};
    spec.per_channel_if_indivisible = true;
    const l4q::LlamaModel flt(ck.config, ck.tensors);
    const l4q::LlamaModel q(ck.config, ck.tensors, l4q::make_linear_factory(spec));
    const auto pk = packed_copy(q);
    const double f = decode_tokens_per_s(flt, 256), p = decode_tokens_per_s(*pk, 256);
    std::printf("%-34s %12.1f %12.1f %8.2fx\n", "stories260K (u4 g32)", f, p, p / f);
  }
  // Synthetic LLaMA-7B-shaped blocks with random weights.
  l4q::LlamaConfig c;  // 7B defaults: hidden 4096, intermediate 11008, 32 heads, vocab 32000
  c.num_hidden_layers = a.layers;
  c.max_position_embeddings = 4096;
  double fref = 0;  // float32 tokens/s, measured once (with the u4 model's W_q)
  for (int bits : {4, 3, 2}) {
    l4q::NamedTensors w;
    std::map<std::string, l4q::PackedWeight> packed;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    for (const auto& [n, shape] : l4q::llama_tensor_shapes(c)) {
      if (shape.size() == 2 && n.find("layers.") != std::string::npos) {
        const auto mod = n.substr(0, n.size() - 7);  // strip ".weight"
        packed.emplace(mod, random_packed(bits, shape[0], shape[1], a.group, packed.size()));
        w.emplace_back(n, at::zeros({1}).expand({shape[0], shape[1]}));
      } else {
        w.emplace_back(n, shape.size() == 1 ? at::ones(shape) : at::normal(0.0, 0.02, shape, gen));
      }
    }
    const l4q::LlamaModel pk(c, w, [&](const std::string& n, const at::Tensor&, const at::Tensor& b) {
      return std::make_unique<l4q::PackedLinear>(packed.at(n), b);
    });
    if (bits == 4) {  // the float32 model: W_q of the u4 weights (same shapes, same work)
      l4q::NamedTensors wf;
      for (const auto& [n, t] : w) {
        const auto mod = n.size() > 7 ? n.substr(0, n.size() - 7) : n;
        const auto it = packed.find(mod);
        wf.emplace_back(n, it != packed.end() ? it->second.dequantize() : t);
      }
      const l4q::LlamaModel flt(c, wf);
      fref = decode_tokens_per_s(flt, a.tokens);
    }
    const double p = decode_tokens_per_s(pk, a.tokens);
    char name[64];
    std::snprintf(name, sizeof name, "7B-shaped, %d layers (u%d g%lld)", a.layers, bits, static_cast<long long>(a.group));
    std::printf("%-34s %12.2f %12.2f %8.2fx\n", name, fref, p, p / fref);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  l4q::init_runtime(a.threads);
  std::printf("threads %d, AVX2 kernel %s\n", at::get_num_threads(), l4q::packed_avx2_available() ? "yes" : "no");
  bench_matvec(a);
  if (a.decode) bench_decode(a);
  return 0;
}
