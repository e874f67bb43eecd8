// Helper for tests/interop/test_sentencepiece.py (and the throughput figure in
// docs/tokenizers.md). Texts and results travel as length-prefixed binary records so any
// bytes (newlines, malformed UTF-8) survive:
//   l4q_interop_tokenize encode MODEL IN OUT
//       IN: records [u32 len][bytes]; OUT per record: [u32 n][i32 ids[n]] then the decoded
//       text [u32 len][bytes], then [u32 n][i32 ids] of encode(add_bos, add_eos)
//   l4q_interop_tokenize decode MODEL IN OUT
//       IN: records [u32 n][i32 ids[n]]; OUT: the decoded text per record, [u32 len][bytes]
//   l4q_interop_tokenize write-vocab VOCAB OUT.model
//       VOCAB: [u32 n] then per piece [u32 len][bytes][f32 score][i32 type], then
//       [i32 bos][i32 eos][i32 unk][i32 pad][u8 add_dummy_prefix]; writes the .model that
//       sentencepiece_model_from_vocab builds
//   l4q_interop_tokenize rewrite MODEL OUT.model     read and write back
//   l4q_interop_tokenize info MODEL                  specs and special ids
//   l4q_interop_tokenize bench MODEL TEXT [REPEATS]  encode throughput, per line and whole
// Little-endian throughout (the only byte order l4q runs on).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/text/sentencepiece.h"

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) l4q::fail(path, ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct In {
  const std::string& s;
  size_t pos = 0;
  template <typename T>
  T get() {
    if (s.size() - pos < sizeof(T)) l4q::fail("input truncated at byte ", pos);
    T v;
    std::memcpy(&v, s.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string bytes() {
    const auto n = get<uint32_t>();
    if (s.size() - pos < n) l4q::fail("input truncated at byte ", pos);
    std::string out = s.substr(pos, n);
    pos += n;
    return out;
  }
};

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_ids(std::string& out, const std::vector<int32_t>& ids) {
  put<uint32_t>(out, static_cast<uint32_t>(ids.size()));
  for (const auto id : ids) put<int32_t>(out, id);
}

int cmd_encode(const std::string& model, const std::string& in_path, const std::string& out_path) {
  const l4q::SentencePieceTokenizer tok(model);
  const std::string data = slurp(in_path);
  In in{data};
  std::string out;
  size_t count = 0;
  while (in.pos < data.size()) {
    const std::string text = in.bytes();
    const auto ids = tok.encode(text);
    put_ids(out, ids);
    const std::string decoded = tok.decode(ids);
    put<uint32_t>(out, static_cast<uint32_t>(decoded.size()));
    out += decoded;
    put_ids(out, tok.encode(text, tok.bos_id() >= 0, tok.eos_id() >= 0));
    ++count;
  }
  std::ofstream(out_path, std::ios::binary) << out;
  std::printf("encoded %zu texts\n", count);
  return 0;
}

int cmd_decode(const std::string& model, const std::string& in_path, const std::string& out_path) {
  const l4q::SentencePieceTokenizer tok(model);
  const std::string data = slurp(in_path);
  In in{data};
  std::string out;
  size_t count = 0;
  while (in.pos < data.size()) {
    std::vector<int32_t> ids(in.get<uint32_t>());
    for (auto& id : ids) id = in.get<int32_t>();
    const std::string text = tok.decode(ids);
    put<uint32_t>(out, static_cast<uint32_t>(text.size()));
    out += text;
    ++count;
  }
  std::ofstream(out_path, std::ios::binary) << out;
  std::printf("decoded %zu id sequences\n", count);
  return 0;
}

int cmd_write_vocab(const std::string& vocab_path, const std::string& out_path) {
  const std::string data = slurp(vocab_path);
  In in{data};
  l4q::SentencePieceVocab v;
  const auto n = in.get<uint32_t>();
  for (uint32_t i = 0; i < n; ++i) {
    v.pieces.push_back(in.bytes());
    v.scores.push_back(in.get<float>());
    v.types.push_back(in.get<int32_t>());
  }
  v.bos_id = in.get<int32_t>();
  v.eos_id = in.get<int32_t>();
  v.unk_id = in.get<int32_t>();
  v.pad_id = in.get<int32_t>();
  v.add_dummy_prefix = in.get<uint8_t>() != 0;
  const l4q::SentencePieceTokenizer tok(v, vocab_path);  // validates like a GGUF load would
  l4q::write_sentencepiece_model(tok.model(), out_path);
  std::printf("wrote %s (%lld pieces)\n", out_path.c_str(), static_cast<long long>(tok.vocab_size()));
  return 0;
}

int cmd_rewrite(const std::string& model, const std::string& out_path) {
  l4q::write_sentencepiece_model(l4q::read_sentencepiece_model(model), out_path);
  return 0;
}

int cmd_info(const std::string& model) {
  const l4q::SentencePieceTokenizer tok(model);
  const auto& m = tok.model();
  std::printf("pieces %lld model_type %s byte_fallback %d\n", static_cast<long long>(tok.vocab_size()),
              l4q::sentencepiece_model_type_name(m.trainer_spec.model_type), m.trainer_spec.byte_fallback);
  std::printf("unk %d bos %d eos %d pad %d\n", tok.unk_id(), tok.bos_id(), tok.eos_id(), tok.pad_id());
  const auto& n = m.normalizer_spec;
  std::printf("normalizer name '%s' add_dummy_prefix %d remove_extra_whitespaces %d escape_whitespaces %d "
              "charsmap %zu bytes\n",
              n.name.value_or("").c_str(), n.add_dummy_prefix, n.remove_extra_whitespaces,
              n.escape_whitespaces, n.precompiled_charsmap.size());
  std::printf("unknown fields: model %zu trainer_spec %zu normalizer_spec %zu bytes\n",
              m.unknown_fields.size(), m.trainer_spec.unknown_fields.size(),
              n.unknown_fields.size());
  return 0;
}

int cmd_bench(const std::string& model, const std::string& text_path, int repeats) {
  const l4q::SentencePieceTokenizer tok(model);
  const std::string text = slurp(text_path);
  std::vector<std::string> lines;
  std::istringstream ss(text);
  for (std::string line; std::getline(ss, line);)
    if (!line.empty()) lines.push_back(line);
  using clock = std::chrono::steady_clock;
  const double mb = static_cast<double>(text.size()) / 1e6;
  double best_lines = 1e30, best_whole = 1e30;
  size_t n_ids_lines = 0, n_ids_whole = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = clock::now();
    n_ids_lines = 0;
    for (const auto& l : lines) n_ids_lines += tok.encode(l).size();
    auto t1 = clock::now();
    n_ids_whole = tok.encode(text).size();
    auto t2 = clock::now();
    best_lines = std::min(best_lines, std::chrono::duration<double>(t1 - t0).count());
    best_whole = std::min(best_whole, std::chrono::duration<double>(t2 - t1).count());
  }
  std::printf("%s on %s (%.3f MB, %zu non-empty lines), best of %d:\n", model.c_str(),
              text_path.c_str(), mb, lines.size(), repeats);
  std::printf("  per line:   %.3f s  %.2f MB/s  %zu ids\n", best_lines, mb / best_lines, n_ids_lines);
  std::printf("  whole file: %.3f s  %.2f MB/s  %zu ids\n", best_whole, mb / best_whole, n_ids_whole);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 4 && a[0] == "encode") return cmd_encode(a[1], a[2], a[3]);
    if (a.size() == 4 && a[0] == "decode") return cmd_decode(a[1], a[2], a[3]);
    if (a.size() == 3 && a[0] == "write-vocab") return cmd_write_vocab(a[1], a[2]);
    if (a.size() == 3 && a[0] == "rewrite") return cmd_rewrite(a[1], a[2]);
    if (a.size() == 2 && a[0] == "info") return cmd_info(a[1]);
    if ((a.size() == 3 || a.size() == 4) && a[0] == "bench")
      return cmd_bench(a[1], a[2], a.size() == 4 ? std::stoi(a[3]) : 3);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: l4q_interop_tokenize encode MODEL IN OUT | decode MODEL IN OUT | write-vocab VOCAB OUT | "
               "rewrite MODEL OUT | info MODEL | bench MODEL TEXT [REPEATS]\n");
  return 2;
}
