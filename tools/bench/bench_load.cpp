// Peak resident memory while loading a synthetic ~2 GB LLaMA checkpoint (HF directory,
// safetensors) with l4q::load_checkpoint, from an fp32 and from a bf16 file, against a naive
// loader measured in the same run (read the whole file into memory, then build fp32 tensors
// from it). Each load runs in a fresh child process, so ru_maxrss is that load's peak.
//
//   bench_load [--dir /tmp/l4q-bench-load] [--layers 8] [--keep]
//
// The model: hidden 2048, intermediate 5632, 16 heads / 4 KV heads, vocab 32000, untied,
// `--layers` blocks (8: 1.97 GB of fp32 weights). Ratios are peak RSS / fp32 weight bytes;
// every weight is read once after loading, so all of them are resident at the peak.
#include <ATen/ATen.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "l4q/io/checkpoint.h"
#include "l4q/io/hf_config.h"
#include "l4q/io/safetensors.h"
#include "l4q/memory.h"
#include "l4q/runtime.h"

namespace fs = std::filesystem;

namespace {

int64_t current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

l4q::LlamaConfig bench_config(int64_t layers) {
  l4q::LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 2048;
  c.intermediate_size = 5632;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 4;
  c.head_dim = 128;
  c.max_position_embeddings = 2048;
  c.tie_word_embeddings = false;
  return c;
}

void generate(const std::string& dir, int64_t layers, at::ScalarType dtype) {
  if (fs::exists(dir + "/config.json")) return;
  fs::create_directories(dir);
  const auto c = bench_config(layers);
  at::manual_seed(0);
  l4q::NamedTensors ts;
  for (const auto& [name, shape] : l4q::llama_tensor_shapes(c)) ts.emplace_back(name, (at::randn(shape) * 0.02).to(dtype));
  l4q::write_safetensors(dir + "/model.safetensors", ts);
  std::ofstream(dir + "/config.json") << l4q::to_hf_config_json(c);
}

// Child: load, read every weight, report. `naive` reads the file into a buffer and builds fp32
// tensors from it, as a loader without memory mapping would.
int measure(const std::string& dir, bool naive) {
  l4q::init_runtime(1);
  const int64_t rss0 = current_rss_bytes();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t weight_bytes = 0;
  double checksum = 0;
  if (!naive) {
    const auto ck = l4q::load_checkpoint(dir);
    for (const auto& [n, t] : ck.tensors) {
      weight_bytes += t.numel() * 4;
      checksum += t.sum().item<double>();
    }
  } else {
    std::ifstream in(dir + "/model.safetensors", std::ios::binary);
    std::vector<char> buf(fs::file_size(dir + "/model.safetensors"));
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto st = l4q::SafetensorsFile::open(dir + "/model.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, buf.data(), 8);
    std::vector<at::Tensor> out;
    for (const auto& info : st.tensors()) {
      const auto dt = info.dtype == l4q::SafetensorsDtype::F32 ? at::kFloat : at::kBFloat16;
      const auto src = at::from_blob(buf.data() + 8 + n + info.begin, info.shape, dt);
      out.push_back(src.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true));
      weight_bytes += out.back().numel() * 4;
    }
    for (const auto& t : out) checksum += t.sum().item<double>();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%lld %lld %lld %.3f %g\n", static_cast<long long>(rss0), static_cast<long long>(l4q::peak_rss_bytes()),
              static_cast<long long>(weight_bytes), secs, checksum);
  return 0;
}

struct Result {
  long long rss0 = 0, peak = 0, weights = 0;
  double secs = 0;
};

Result run_child(const std::string& self, const std::string& dir, bool naive) {
  const std::string cmd = self + " --measure " + dir + (naive ? " --naive" : "");
  FILE* p = popen(cmd.c_str(), "r");
  Result r;
  double checksum = 0;
  if (p == nullptr || std::fscanf(p, "%lld %lld %lld %lf %lf", &r.rss0, &r.peak, &r.weights, &r.secs, &checksum) != 5) {
    std::fprintf(stderr, "bench_load: child '%s' failed\n", cmd.c_str());
    std::exit(1);
  }
  pclose(p);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/l4q-bench-load";
  int64_t layers = 8;
  bool keep = false, naive = false;
  std::string measure_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (k == "--layers" && i + 1 < argc) layers = std::atoll(argv[++i]);
    else if (k == "--keep") keep = true;
    else if (k == "--naive") naive = true;
    else if (k == "--measure" && i + 1 < argc) measure_dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_load [--dir DIR] [--layers N] [--keep]\n");
      return 2;
    }
  }
  if (!measure_dir.empty()) return measure(measure_dir, naive);

  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::printf("synthetic LLaMA: hidden 2048, intermediate 5632, %lld layers, vocab 32000, untied\n",
              static_cast<long long>(layers));
  std::printf("%-6s %-8s %10s %10s %10s %10s %12s %8s\n", "source", "loader", "file MB", "fp32 MB", "start MB",
              "peak MB", "peak/fp32", "load s");
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    const std::string name = dtype == at::kFloat ? "f32" : "bf16";
    const std::string d = dir + "/" + name;
    generate(d, layers, dtype);
    const double file_mb = static_cast<double>(fs::file_size(d + "/model.safetensors")) / 1e6;
    for (const bool nv : {false, true}) {
      const auto r = run_child(self, d, nv);
      std::printf("%-6s %-8s %10.0f %10.0f %10.0f %10.0f %11.3fx %8.2f\n", name.c_str(), nv ? "naive" : "l4q", file_mb,
                  r.weights / 1e6, r.rss0 / 1e6, r.peak / 1e6, static_cast<double>(r.peak) / r.weights, r.secs);
    }
  }
  if (!keep) fs::remove_all(dir);
  return 0;
}
