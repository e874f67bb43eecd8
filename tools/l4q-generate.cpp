// l4q-generate: text from a LLaMA model (HF directory, GGUF or llama2.c .bin; an l4q-train run,
// fake-quantized; or an l4q export directory, packed), greedy at
// temperature 0 or seeded temperature/top-p sampling, one KV-cached step per token.
//
//   l4q-generate --model assets/stories260K/stories260K.gguf --prompt "Once upon a time"
//   l4q-generate --model models/stories260K --max-new-tokens 256 --print-ids
//
// The tokenizer: --tokenizer FILE, else the HF directory's tokenizer.model, else the GGUF's own
// vocabulary, else tok512.model or tokenizer.model next to the checkpoint file. Text streams
// to stdout as tokens are chosen; --print-ids prints the generated ids instead. A line of
// statistics (tokens, seconds, tokens/s) goes to stderr.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/infer/generate.h"
#include "l4q/infer/model_source.h"
#include "l4q/model/llama.h"
#include "l4q/runtime.h"
#include "l4q/text/tokenizer.h"


namespace {

std::vector<int32_t> parse_ids(const std::string& text) {
  std::string s = text;
  for (auto& c : s)
    if (c == ',') c = ' ';
  std::istringstream in(s);
  std::vector<int32_t> ids;
  long long v;
  while (in >> v) ids.push_back(static_cast<int32_t>(v));
  if (!in.eof()) l4q::fail("--prompt-ids: expected integers separated by spaces or commas, got '", text, "'");
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Generate text with a LLaMA checkpoint (KV-cached; greedy or seeded sampling)"};
  std::string model_path, tokenizer_path, prompt, prompt_ids;
  l4q::GenerateOptions opt;
  opt.max_new_tokens = 256;
  bool print_ids = false, ignore_eos = false, no_cache = false;
  int threads = 0;
  app.add_option("--model", model_path, "HF directory, GGUF file, llama2.c .bin, l4q-train run, or l4q export directory")
      ->required()->check(CLI::ExistingPath);
  app.add_option("--tokenizer", tokenizer_path, "SentencePiece .model or HF tokenizer.json (default: the model's own, or one next to it)")
      ->check(CLI::ExistingFile);
  app.add_option("--prompt", prompt, "prompt text (BOS is prepended; empty: start from BOS)");
  app.add_option("--prompt-ids", prompt_ids, "prompt as token ids instead of text, e.g. \"1 403 407\"")
      ->excludes("--prompt");
  app.add_option("--max-new-tokens,-n", opt.max_new_tokens, "tokens to generate")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--temperature,-t", opt.temperature, "0: greedy; > 0: sampling")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", opt.top_p, "nucleus sampling mass in (0, 1]")->capture_default_str();
  app.add_option("--seed", opt.seed, "sampling seed")->capture_default_str();
  app.add_flag("--print-ids", print_ids, "print the generated token ids instead of text");
  app.add_flag("--ignore-eos", ignore_eos, "keep going after the end-of-sequence token");
  app.add_flag("--no-cache", no_cache, "recompute the whole sequence every step (reference/benchmark)");
  app.add_option("--threads", threads, "CPU threads (0: every core)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    l4q::init_runtime(threads);
    l4q::keep_freed_memory();  // L4Q_MALLOC=glibc to keep glibc's defaults
    opt.stop_at_eos = !ignore_eos;
    opt.use_cache = !no_cache;

    // A float checkpoint, an l4q-train run (its trained, fake-quantized layers) or a packed
    // l4q export. Without a tokenizer only --prompt-ids / --print-ids work.
    auto loaded = l4q::load_any_model(model_path, tokenizer_path, /*tokenizer_optional=*/true);
    const l4q::LlamaModel& model = *loaded.model;
    std::unique_ptr<l4q::Tokenizer> tok = std::move(loaded.tokenizer);
    const auto& cfg = model.config();
    if (tok && tok->vocab_size() != cfg.vocab_size)
      l4q::fail("tokenizer has ", tok->vocab_size(), " pieces but the model's vocabulary is ",
                cfg.vocab_size, " (give the matching one with --tokenizer)");

    std::vector<int32_t> ids;
    if (!prompt_ids.empty()) {
      ids = parse_ids(prompt_ids);
    } else if (tok) {
      ids = tok->encode(prompt, /*add_bos=*/true);
      if (tok->bos_id() < 0 && ids.empty())
        l4q::fail("the tokenizer has no BOS token: give a non-empty --prompt");
    } else if (prompt.empty()) {
      ids = {static_cast<int32_t>(cfg.bos_token_id)};
    } else {
      l4q::fail("no tokenizer found for '", model_path, "': give one with --tokenizer, or --prompt-ids");
    }
    if (!print_ids && !tok)
      l4q::fail("no tokenizer found for '", model_path, "' to print text: give --tokenizer or use --print-ids");

    if (!print_ids && prompt_ids.empty()) std::fputs(prompt.c_str(), stdout);
    std::fflush(stdout);
    int32_t prev = ids.back();
    const auto t0 = std::chrono::steady_clock::now();
    auto t_first = t0;
    size_t n = 0;
    const auto out = l4q::generate(model, ids, opt, [&](int32_t id) {
      if (n++ == 0) t_first = std::chrono::steady_clock::now();
      if (!print_ids) {
        const auto piece = tok->decode_stream(prev, id);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
      prev = id;
      return true;
    });
    const auto t1 = std::chrono::steady_clock::now();
    if (print_ids) {
      for (size_t i = 0; i < out.size(); ++i) std::printf(i ? " %d" : "%d", out[i]);
    }
    std::printf("\n");
    std::fflush(stdout);

    const double total = std::chrono::duration<double>(t1 - t0).count();
    const double decode = std::chrono::duration<double>(t1 - t_first).count();
    std::fprintf(stderr,
                 "l4q-generate: prompt %zu tokens, generated %zu in %.3f s (%.1f tok/s overall, "
                 "%.1f tok/s after the first token; %s, %d threads)\n",
                 ids.size(), out.size(), total, total > 0 ? out.size() / total : 0.0,
                 out.size() > 1 && decode > 0 ? (out.size() - 1) / decode : 0.0,
                 opt.use_cache ? "KV cache" : "no cache", l4q::set_num_threads(threads));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q-generate: %s\n", e.what());
    return 1;
  }
}
