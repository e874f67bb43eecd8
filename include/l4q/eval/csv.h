// CSV records (RFC 4180 as Python's csv module reads it): fields separated by commas,
// records by LF or CRLF; a field that starts with '"' is quoted and may hold commas, line
// breaks and doubled quotes ("" -> "); text after a closing quote is appended to the field
// (csv's non-strict mode). Blank lines are skipped (pandas' skip_blank_lines). A UTF-8 BOM at
// the start is dropped.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace l4q {

// Throws l4q::Error naming `where` and the line where an unterminated quoted field starts.
std::vector<std::vector<std::string>> parse_csv(std::string_view text, const std::string& where);

}  // namespace l4q
