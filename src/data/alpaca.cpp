#include "l4q/data/alpaca.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

#include "data/read_file.h"
#include "l4q/error.h"

namespace l4q {
namespace {

using nlohmann::json;

// nlohmann's parse_error::what() reads "[json.exception.parse_error.101] parse error at line L,
// column C: <detail>"; keep the detail, the location is computed by us (from the byte offset,
// relative to the whole file for JSON Lines).
std::string parse_error_detail(const json::parse_error& e) {
  const std::string what = e.what();
  const auto col = what.find("column ");
  const auto colon = col == std::string::npos ? std::string::npos : what.find(": ", col);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// Other nlohmann exceptions carry no position: drop the "[json.exception.x.N] " tag only.
std::string exception_detail(const json::exception& e) {
  const std::string what = e.what();
  const auto tag = what.find("] ");
  return tag == std::string::npos ? what : what.substr(tag + 2);
}

// `where` is "<name>: record N" (+ " (line L)").
InstructRecord to_record(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected an object, got ", j.type_name());
  InstructRecord r;
  const auto get = [&](const char* field, std::string& out, bool required) {
    const auto it = j.find(field);
    if (it == j.end()) {
      if (required) fail(where, ": missing field '", field, "'");
      return;
    }
    if (!required && it->is_null()) return;
    if (!it->is_string())
      fail(where, ": field '", field, "': expected a string, got ", it->type_name());
    out = it->get<std::string>();
  };
  get("instruction", r.instruction, true);
  get("input", r.input, false);
  get("output", r.output, true);
  return r;
}

[[noreturn]] void fail_parse(const std::string& name, const std::string& text, size_t offset,
                             const json::parse_error& e, const char* note) {
  // e.byte is the 1-based index of the last byte read, i.e. the offending one.
  const size_t pos = offset + (e.byte > 0 ? e.byte - 1 : 0);
  const auto loc = data_detail::locate(text, pos);
  fail(name, ": invalid JSON at line ", loc.line, ", column ", loc.column, note, ": ",
       parse_error_detail(e));
}

std::vector<InstructRecord> parse_array(const std::string& text, const std::string& name) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail_parse(name, text, 0, e, "");
  } catch (const json::exception& e) {  // e.g. out_of_range 406: a number beyond double
    fail(name, ": invalid JSON: ", exception_detail(e));
  }
  if (!j.is_array())
    fail(name, ": expected a JSON array of records (or JSON Lines, one object per line), got ",
         j.type_name());
  std::vector<InstructRecord> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i)
    out.push_back(to_record(j[i], detail::concat(name, ": record ", i)));
  return out;
}

std::vector<InstructRecord> parse_lines(const std::string& text, const std::string& name) {
  std::vector<InstructRecord> out;
  size_t start = 0, line = 1;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    size_t stop = end;
    if (stop > start && text[stop - 1] == '\r') --stop;
    const std::string_view sv(text.data() + start, stop - start);
    const bool blank = std::all_of(sv.begin(), sv.end(), [](char c) {
      return std::isspace(static_cast<unsigned char>(c)) != 0;
    });
    if (!blank) {
      json j;
      try {
        j = json::parse(sv);
      } catch (const json::parse_error& e) {
        fail_parse(name, text, start, e, " (JSON Lines: one object per line)");
      } catch (const json::exception& e) {
        fail(name, ": invalid JSON at line ", line, ": ", exception_detail(e));
      }
      out.push_back(
          to_record(j, detail::concat(name, ": record ", out.size(), " (line ", line, ")")));
    }
    start = end + 1;
    ++line;
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  return std::equal(suffix.rbegin(), suffix.rend(), s.rbegin(),
                    [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
}

}  // namespace

std::vector<InstructRecord> parse_alpaca(const std::string& text, const std::string& name,
                                         AlpacaFormat format) {
  if (format == AlpacaFormat::detect) {
    if (ends_with(name, ".jsonl") || ends_with(name, ".ndjson")) {
      format = AlpacaFormat::json_lines;
    } else {
      size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;  // UTF-8 BOM
      while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
      if (i == text.size()) fail(name, ": empty dataset (no records)");
      format = text[i] == '{' ? AlpacaFormat::json_lines : AlpacaFormat::json_array;
    }
  }
  auto records = format == AlpacaFormat::json_lines ? parse_lines(text, name) : parse_array(text, name);
  if (records.empty()) fail(name, ": empty dataset (no records)");
  return records;
}

std::vector<InstructRecord> read_alpaca(const std::string& path, AlpacaFormat format) {
  return parse_alpaca(data_detail::read_file(path), path, format);
}

}  // namespace l4q
