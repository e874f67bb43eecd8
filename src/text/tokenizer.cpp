#include "l4q/text/tokenizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "l4q/error.h"
#include "l4q/text/sentencepiece.h"

namespace l4q {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::string file = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    // An HF model directory keeps its SentencePiece model as tokenizer.model.
    file = path + "/tokenizer.model";
    if (::stat(file.c_str(), &st) != 0)
      fail(path, ": directory has no tokenizer.model (the only tokenizer format l4q reads)");
  }
  std::ifstream f(file, std::ios::binary);
  if (!f) fail(file, ": cannot open tokenizer: ", std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string bytes = ss.str();
  if (f.bad()) fail(file, ": read error");

  const auto first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && bytes[first] == '{')
    fail(file, ": a JSON tokenizer (tokenizer.json?); l4q reads SentencePiece .model files only");
  return std::make_unique<SentencePieceTokenizer>(parse_sentencepiece_model(bytes, file), file);
}

}  // namespace l4q
