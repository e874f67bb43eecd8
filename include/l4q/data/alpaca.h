// Alpaca-format instruction records: a JSON array of objects, or JSON Lines (one object per
// line), each with string fields `instruction`, `output` and an optional `input`.
#pragma once
#include <string>
#include <vector>

namespace l4q {

struct InstructRecord {
  std::string instruction;
  std::string input;  // empty when the record has none
  std::string output;
};

enum class AlpacaFormat {
  detect,      // .jsonl / .ndjson: JSON Lines; otherwise by the first character: '[' array, '{' lines
  json_array,  // [ {...}, {...} ]
  json_lines,  // {...}\n{...}\n (blank lines skipped)
};

// Parses `text`; `name` (usually the file name) prefixes every error. Rejects, with l4q::Error:
// malformed JSON (line and 1-based byte column), a record that is not an object, a missing
// `instruction` or `output`, a field of the wrong type (`input` may also be null), and a
// dataset with no records. Record numbers in messages are 0-based indices (as in jq's
// `.[3]`); JSON Lines messages add the 1-based line. Fields other than the three are ignored.
std::vector<InstructRecord> parse_alpaca(const std::string& text, const std::string& name,
                                         AlpacaFormat format = AlpacaFormat::detect);

// Reads and parses a file (see parse_alpaca); errors name the path.
std::vector<InstructRecord> read_alpaca(const std::string& path,
                                        AlpacaFormat format = AlpacaFormat::detect);

}  // namespace l4q
