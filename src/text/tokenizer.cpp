#include "l4q/text/tokenizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "l4q/error.h"
#include "l4q/text/bpe_json.h"
#include "l4q/text/sentencepiece.h"

namespace l4q {

namespace {

std::string read_all(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) fail(file, ": cannot open tokenizer: ", std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(file, ": read error");
  return ss.str();
}

bool exists(const std::string& file) {
  struct stat st {};
  return ::stat(file.c_str(), &st) == 0;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::string file = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    // An HF model directory keeps a SentencePiece model as tokenizer.model, a byte-level BPE as
    // tokenizer.json (SentencePiece models often have both: the .model is preferred).
    file = path + "/tokenizer.model";
    if (!exists(file)) file = path + "/tokenizer.json";
    if (!exists(file)) fail(path, ": directory has no tokenizer.model (SentencePiece) or tokenizer.json (byte-level BPE)");
  }
  const std::string bytes = read_all(file);

  const auto first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && bytes[first] == '{') {
    // tokenizer.json: EOS (and SmolLM2's BOS) live in tokenizer_config.json beside it.
    const auto slash = file.find_last_of('/');
    const std::string config = (slash == std::string::npos ? "" : file.substr(0, slash + 1)) + "tokenizer_config.json";
    return std::make_unique<BpeTokenizer>(
        parse_bpe_tokenizer_json(bytes, file, exists(config) ? read_all(config) : ""), file);
  }
  return std::make_unique<SentencePieceTokenizer>(parse_sentencepiece_model(bytes, file), file);
}

}  // namespace l4q
