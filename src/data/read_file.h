// Whole-file reads for the data readers (private to src/data).
#pragma once
#include <string>

namespace l4q::data_detail {

// The file's bytes; l4q::Error "<path>: cannot open ..." when it cannot be read.
std::string read_file(const std::string& path);

// 1-based line and byte column of the 0-based byte offset `pos` in `text` (pos may equal
// text.size(), the end of input).
struct TextLocation {
  size_t line;
  size_t column;
};
TextLocation locate(const std::string& text, size_t pos);

}  // namespace l4q::data_detail
