// l4q-eval: perplexity and MMLU-style multiple choice for any form of a model: float (HF
// directory, GGUF, llama2.c .bin), fake-quant (an l4q-train run or checkpoint directory) or
// packed (an l4q export directory). Protocols: docs/eval.md. The result is one JSON object on
// stdout (or --out FILE, written atomically); a progress bar goes to stderr on a TTY.
//
//   l4q-eval --model assets/stories260K/stories260K.gguf perplexity --text wiki.test.raw --ctx 512 --llama-cpp
//   l4q-eval --model runs/l4q perplexity --text wiki.test.raw --ctx 256 --stride 128
//   l4q-eval --model runs/l4q mmlu --data mmlu.zip --shots 5 --subjects abstract_algebra,anatomy --limit 50
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/eval/multiple_choice.h"
#include "l4q/eval/perplexity.h"
#include "l4q/infer/model_source.h"
#include "l4q/io/atomic_file.h"
#include "l4q/model/llama.h"
#include "l4q/runtime.h"
#include "l4q/train/progress.h"

namespace {

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) l4q::fail(path, ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Evaluate a model (float, fake-quant run, or packed export): perplexity, MMLU"};
  app.require_subcommand(1);
  std::string model_path, tokenizer_path, out_path;
  int threads = 0;
  app.add_option("--model", model_path,
                 "HF directory, GGUF file, llama2.c .bin, l4q-train run/checkpoint, or l4q export directory")
      ->required()->check(CLI::ExistingPath);
  app.add_option("--tokenizer", tokenizer_path, "SentencePiece .model or HF tokenizer.json (default: the model's own)")
      ->check(CLI::ExistingFile);
  app.add_option("--out", out_path, "write the JSON result here instead of stdout");
  app.add_option("--threads", threads, "CPU threads (0: every core)")->capture_default_str();

  auto* ppl = app.add_subcommand("perplexity", "perplexity of a text file");
  std::string text_path;
  l4q::PerplexityProtocol proto;
  bool llama_cpp = false, no_bos = false;
  int64_t max_tokens = 0;
  ppl->add_option("--text", text_path, "UTF-8 text file (tokenized as one string)")->required()->check(CLI::ExistingFile);
  ppl->add_option("--ctx", proto.context, "tokens per window")->capture_default_str();
  auto* stride_opt = ppl->add_option("--stride", proto.stride, "sliding window step (default: --ctx)");
  ppl->add_flag("--llama-cpp", llama_cpp, "llama.cpp's protocol: disjoint chunks, BOS first, second half scored")
      ->excludes(stride_opt);
  ppl->add_option("--batch", proto.batch, "windows per forward pass")->capture_default_str();
  ppl->add_flag("--no-bos", no_bos, "do not put BOS before the text (or the llama.cpp chunks)");
  ppl->add_option("--max-tokens", max_tokens, "use only the first N tokens of the text (0: all)")
      ->capture_default_str();

  auto* mmlu = app.add_subcommand("mmlu", "MMLU-style multiple choice (Hendrycks et al. prompts)");
  std::string data_path, subjects_arg, split = "test";
  l4q::McOptions mc;
  int64_t mc_ctx = 0;
  mmlu->add_option("--data", data_path, "MMLU data directory (extracted mmlu.zip) or the .zip itself")
      ->required()->check(CLI::ExistingPath);
  mmlu->add_option("--shots", mc.shots, "k dev examples before each question")->capture_default_str();
  mmlu->add_option("--subjects", subjects_arg, "comma-separated subjects (default: all)");
  mmlu->add_option("--limit", mc.limit, "questions per subject (0: all)")->capture_default_str();
  mmlu->add_option("--split", split, "questions scored: test or val")->capture_default_str();
  mmlu->add_option("--ctx", mc_ctx, "max tokens per prompt + answer (0: the model's max_position_embeddings)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    l4q::init_runtime(threads);
    l4q::keep_freed_memory();  // L4Q_MALLOC=glibc to keep glibc's defaults
    const auto t0 = std::chrono::steady_clock::now();
    const auto loaded = l4q::load_any_model(model_path, tokenizer_path);
    const l4q::LlamaModel& model = *loaded.model;
    const l4q::Tokenizer& tok = *loaded.tokenizer;
    const bool tty = l4q::ProgressBar::stderr_is_tty();
    std::ostringstream js;
    js << "{\n  \"model\": " << json_string(model_path) << ",\n  \"model_kind\": " << json_string(loaded.kind)
       << ",\n  \"model_description\": " << json_string(loaded.description) << ",\n";

    if (*ppl) {
      if (llama_cpp) proto.kind = l4q::PerplexityProtocol::Kind::LlamaCpp;
      proto.add_bos = !no_bos;
      proto.validate();
      const auto text = read_text(text_path);
      auto ids = tok.encode(text, /*add_bos=*/false);
      if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens);
      l4q::ProgressBar bar(static_cast<int64_t>(l4q::perplexity_windows(ids.size() + proto.add_bos, proto).size()),
                           "perplexity", tty);
      const auto r = l4q::evaluate_perplexity(
          model, ids, proto,
          [&](int64_t done, int64_t, const l4q::PerplexityResult& so_far) {
            char extra[64];
            std::snprintf(extra, sizeof extra, "ppl %.4f", so_far.perplexity());
            bar.update(done, extra);
          },
          tok.bos_id());
      bar.finish();
      js << "  \"task\": \"perplexity\",\n  \"text\": " << json_string(text_path)
         << ",\n  \"protocol\": " << json_string(proto.describe()) << ",\n  \"context\": " << proto.context
         << ",\n  \"stride\": " << (llama_cpp ? proto.context : (proto.stride > 0 ? proto.stride : proto.context))
         << ",\n  \"result\": " << r.to_json();
    } else {
      l4q::McOptions opt = mc;
      opt.max_context = mc_ctx > 0 ? mc_ctx : model.config().max_position_embeddings;
      const auto subjects = l4q::load_mmlu(data_path, split_list(subjects_arg), split);
      int64_t total = 0;
      for (const auto& s : subjects) total += opt.limit > 0 ? std::min<int64_t>(opt.limit, s.eval.size()) : s.eval.size();
      l4q::ProgressBar bar(total, "mmlu", tty);
      const auto r = l4q::evaluate_multiple_choice(subjects, tok, l4q::model_continuation_scorer(model), opt,
                                                   [&](const l4q::McProgress& p) {
                                                     bar.update(p.done, p.current->subject);
                                                   });
      bar.finish();
      js << "  \"task\": \"mmlu\",\n  \"data\": " << json_string(data_path) << ",\n  \"split\": " << json_string(split)
         << ",\n  \"shots\": " << opt.shots << ",\n  \"max_context\": " << opt.max_context
         << ",\n  \"result\": " << r.to_json();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    js << ",\n  \"seconds\": " << secs << ",\n  \"threads\": " << l4q::set_num_threads(threads) << "\n}\n";
    if (out_path.empty()) {
      std::fputs(js.str().c_str(), stdout);
    } else {
      l4q::AtomicFile f(out_path);
      f.write(js.str());
      f.commit();
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q-eval: %s\n", e.what());
    return 1;
  }
}
