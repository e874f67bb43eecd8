// l4q-export: writes a trained run (or one of its checkpoints) in a deployable format.
//
//   l4q-export --from runs/x --format gguf --out x.gguf        llama.cpp (Q4_1 codes)
//   l4q-export --from runs/x --format gptq --out x-gptq        GPTQ v2 HF directory
//   l4q-export --from runs/x --format hf   --out x-hf          dequantized float HF directory
//   l4q-export --from runs/x --format l4q  --out x-l4q         l4q packed (l4q-generate, l4q-eval)
//
// Prints what was written and everything that could not be carried exactly (the same report
// is saved as export_report.json inside a directory export, or as FILE.export_report.json
// beside a file export). An existing output is refused unless --force.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "l4q/error.h"
#include "l4q/export/gguf_export.h"
#include "l4q/export/gptq_export.h"
#include "l4q/export/hf_export.h"
#include "l4q/export/report.h"
#include "l4q/io/atomic_file.h"
#include "l4q/runtime.h"
#include "l4q/train/run.h"
#if __has_include("l4q/export/l4q_export.h")
#include "l4q/export/l4q_export.h"
#define L4Q_HAVE_L4Q_EXPORT 1
#endif

namespace {

std::string human_bytes(uint64_t n) {
  char buf[64];
  if (n >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", n / double(1ull << 30));
  else if (n >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", n / double(1ull << 20));
  else if (n >= (1ull << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", n / double(1ull << 10));
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  return buf;
}

std::string report_path(const l4q::ExportReport& r) {
  namespace fs = std::filesystem;
  if (fs::is_directory(r.path)) return (fs::path(r.path) / "export_report.json").string();
  return r.path + ".export_report.json";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Export a trained l4q run to l4q packed, GGUF, GPTQ or HF format"};
  std::string from, format, out;
  bool force = false, json = false;
  app.add_option("--from", from, "run directory (its latest checkpoint) or checkpoint directory")->required();
  app.add_option("--format", format, "l4q | gguf | gptq | hf")
      ->required()
      ->check(CLI::IsMember({"l4q", "gguf", "gptq", "hf"}));
  app.add_option("--out", out, "output file (gguf) or directory (l4q, gptq, hf)")->required();
  app.add_flag("--force", force, "replace an existing output");
  app.add_flag("--json", json, "print the export report as JSON instead of the summary");
  CLI11_PARSE(app, argc, argv);

  try {
    l4q::init_runtime();
    const l4q::ExportOptions opt{force};
    if (std::filesystem::exists(out) && !force)
      l4q::fail("output '", out, "' exists (pass --force to replace it)");
    if (!std::filesystem::is_directory(from))
      l4q::fail("--from '", from, "': expected a run or checkpoint directory written by l4q-train");
    if (!l4q::is_trained_run(from))
      l4q::fail("--from '", from, "': not a run or checkpoint directory (no state.json, no checkpoints/)");
    const auto t0 = std::chrono::steady_clock::now();
    const auto run = l4q::load_trained_run(from);
    l4q::ExportReport rep;
    if (format == "gguf") rep = l4q::export_gguf(run, out, opt);
    else if (format == "gptq") rep = l4q::export_gptq(run, out, opt);
    else if (format == "hf") rep = l4q::export_hf(run, out, opt);
    else {
#ifdef L4Q_HAVE_L4Q_EXPORT
      rep = l4q::export_l4q(run, out, opt);
#else
      l4q::fail("--format l4q: this build has no l4q packed exporter (l4q/export/l4q_export.h)");
#endif
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto rpath = report_path(rep);
    l4q::write_file_atomic(rpath, rep.to_json() + "\n");
    if (json) {
      std::printf("%s\n", rep.to_json().c_str());
      return 0;
    }
    std::printf("exported %s (step %lld) as %s to %s: %s in %.1f s\n", run.checkpoint_dir.c_str(),
                static_cast<long long>(run.step), rep.format.c_str(), rep.path.c_str(),
                human_bytes(rep.bytes).c_str(), secs);
    std::printf("linear layers: %lld quantized, %lld float\n", static_cast<long long>(rep.quantized_layers),
                static_cast<long long>(rep.float_layers));
    std::printf("max |exported - trained|: weight %.3g, step %.3g, offset %.3g\n", rep.max_weight_error,
                rep.max_scale_error, rep.max_offset_error);
    for (const auto& n : rep.notes) std::printf("note: %s\n", n.c_str());
    std::printf("report: %s\n", rpath.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q-export: %s\n", e.what());
    return 1;
  }
}
