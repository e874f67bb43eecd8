// Helper for test_bpe_tokenizer.py / test_smollm2_generate.py.
//   l4q_interop_bpe encode TOKENIZER IN OUT_IDS OUT_TEXT
//     TOKENIZER: a .gguf (its tokenizer.ggml.*) or a tokenizer.json. IN holds texts, each as a
//     little-endian uint32 byte count and the bytes; OUT_IDS gets one line of space-separated
//     ids per text, OUT_TEXT the decoded texts framed as IN. Prints the encode time.
//   l4q_interop_bpe pretokenize PRE IN OUT: the words of each text (PRE: gpt2|smollm|llama3),
//     one line per text, each word hex-encoded.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "l4q/error.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/text/bpe.h"
#include "l4q/text/bpe_json.h"
#include "l4q/text/bpe_pretokenize.h"

namespace {

std::vector<std::string> read_records(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) l4q::fail(path, ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string all = ss.str();
  std::vector<std::string> out;
  size_t i = 0;
  while (i < all.size()) {
    uint32_t n = 0;
    if (i + 4 > all.size()) l4q::fail(path, ": truncated record header at byte ", i);
    std::memcpy(&n, all.data() + i, 4);
    if (i + 4 + n > all.size()) l4q::fail(path, ": record at byte ", i, " runs past the end");
    out.push_back(all.substr(i + 4, n));
    i += 4 + n;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "encode" && argc == 6) {
      const std::string path = argv[2];
      const bool gguf = path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
      const auto tok = gguf ? l4q::tokenizer_from_gguf(path) : l4q::load_tokenizer(path);
      const auto texts = read_records(argv[3]);
      std::ofstream ids_out(argv[4], std::ios::binary), text_out(argv[5], std::ios::binary);
      std::vector<std::vector<int32_t>> all;
      all.reserve(texts.size());
      size_t bytes = 0, n_ids = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (const auto& t : texts) {
        all.push_back(tok->encode(t));
        bytes += t.size();
        n_ids += all.back().size();
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (const auto& ids : all) {
        for (size_t i = 0; i < ids.size(); ++i) ids_out << (i ? " " : "") << ids[i];
        ids_out << '\n';
        const std::string back = tok->decode(ids);
        const auto n = static_cast<uint32_t>(back.size());
        text_out.write(reinterpret_cast<const char*>(&n), 4);
        text_out.write(back.data(), static_cast<std::streamsize>(back.size()));
      }
      std::printf("l4q encode: %zu texts, %zu bytes -> %zu tokens in %.3f s (%.2f MB/s)\n",
                  texts.size(), bytes, n_ids, s, bytes / 1e6 / s);
      return 0;
    }
    if (mode == "pretokenize" && argc == 5) {
      const auto pre = l4q::parse_bpe_pre_tokenizer(argv[2], "pretokenize");
      const auto texts = read_records(argv[3]);
      std::ofstream out(argv[4], std::ios::binary);
      static const char* hex = "0123456789abcdef";
      for (const auto& t : texts) {
        bool first = true;
        for (auto w : l4q::bpe_pre_tokenize(t, pre)) {
          if (!first) out << ' ';
          first = false;
          for (unsigned char c : w) out << hex[c >> 4] << hex[c & 15];
        }
        out << '\n';
      }
      return 0;
    }
    if (mode == "write-json" && argc == 4) {  // what exports write for a BPE run
      const auto tok = l4q::tokenizer_from_gguf(argv[2]);
      const auto& v = dynamic_cast<const l4q::BpeTokenizer&>(*tok).vocab();
      const std::string dir = argv[3];
      std::ofstream(dir + "/tokenizer.json", std::ios::binary) << l4q::bpe_tokenizer_json(v);
      std::ofstream(dir + "/tokenizer_config.json", std::ios::binary) << l4q::bpe_tokenizer_config_json(v);
      return 0;
    }
    std::cerr << "usage: l4q_interop_bpe encode TOKENIZER IN OUT_IDS OUT_TEXT\n"
                 "       l4q_interop_bpe write-json MODEL.gguf DIR\n"
                 "       l4q_interop_bpe pretokenize gpt2|smollm|llama3 IN OUT\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "l4q_interop_bpe: " << e.what() << "\n";
    return 1;
  }
}
