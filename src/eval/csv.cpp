#include "l4q/eval/csv.h"

#include "l4q/error.h"

namespace l4q {

std::vector<std::vector<std::string>> parse_csv(std::string_view text, const std::string& where) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool in_quotes = false, record_has_content = false;
  size_t line = 1, quote_line = 0;
  auto end_field = [&] {
    row.push_back(std::move(field));
    field.clear();
  };
  auto end_record = [&] {
    end_field();
    if (record_has_content) rows.push_back(std::move(row));
    row.clear();
    record_has_content = false;
  };
  const size_t n = text.size();
  for (size_t i = 0; i < n; ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < n && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (c == '"' && field.empty()) {
      in_quotes = true;
      quote_line = line;
      record_has_content = true;
    } else if (c == ',') {
      end_field();
      record_has_content = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
      ++line;
      end_record();
    } else {
      field.push_back(c);
      record_has_content = true;
    }
  }
  if (in_quotes) fail(where, ": line ", quote_line, ": quoted field not closed before the end of the file");
  if (record_has_content || !field.empty()) end_record();
  return rows;
}

}  // namespace l4q
