#include "data/read_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "l4q/error.h"

namespace l4q::data_detail {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open for reading (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return ss.str();
}

TextLocation locate(const std::string& text, size_t pos) {
  pos = std::min(pos, text.size());
  const auto begin = text.begin();
  const size_t line = 1 + static_cast<size_t>(std::count(begin, begin + static_cast<long>(pos), '\n'));
  const auto nl = pos == 0 ? std::string::npos : text.rfind('\n', pos - 1);
  const size_t column = nl == std::string::npos ? pos + 1 : pos - nl;
  return {line, column};
}

}  // namespace l4q::data_detail
