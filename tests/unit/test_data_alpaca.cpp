// Alpaca JSON / JSONL readers and their errors.
#include <gtest/gtest.h>

#include "l4q/data/alpaca.h"
#include "test_data_support.h"
#include "test_support.h"

namespace l4q {
namespace {

TEST(DataAlpaca, ReadsJsonArrayWithOptionalInput) {
  const std::string text = R"([
  {"instruction": "Add.", "input": "1 2", "output": "3", "id": 7},
  {"instruction": "Greet.", "output": "Hi"},
  {"instruction": "Null input.", "input": null, "output": "ok"},
  {"instruction": "caf\u00e9", "input": "", "output": "line1\nline2"}
])";
  const auto r = parse_alpaca(text, "a.json");
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].instruction, "Add.");
  EXPECT_EQ(r[0].input, "1 2");
  EXPECT_EQ(r[0].output, "3");
  EXPECT_EQ(r[1].input, "");
  EXPECT_EQ(r[1].output, "Hi");
  EXPECT_EQ(r[2].input, "");
  EXPECT_EQ(r[3].instruction, "caf\xc3\xa9");  // decoded to UTF-8
  EXPECT_EQ(r[3].output, "line1\nline2");
}

TEST(DataAlpaca, ReadsJsonLinesByExtensionOrFirstCharacter) {
  const std::string text =
      "{\"instruction\": \"a\", \"input\": \"x\", \"output\": \"b\"}\r\n"
      "\n"
      "   \n"
      "{\"instruction\": \"c\", \"output\": \"d\"}";  // no final newline
  for (const auto* name : {"d.jsonl", "d.json", "d.ndjson"}) {
    const auto r = parse_alpaca(text, name);
    ASSERT_EQ(r.size(), 2u) << name;
    EXPECT_EQ(r[0].input, "x");
    EXPECT_EQ(r[1].instruction, "c");
    EXPECT_EQ(r[1].output, "d");
  }
  // A UTF-8 BOM before the array is accepted.
  EXPECT_EQ(parse_alpaca("\xEF\xBB\xBF[{\"instruction\":\"a\",\"output\":\"b\"}]", "b.json").size(), 1u);
}

TEST(DataAlpaca, MalformedJsonNamesFileLineAndColumn) {
  // Line 3 is `  {"instruction": tru}`: the bad literal ends at '}' (byte column 22).
  const std::string text =
      "[\n"
      "  {\"instruction\": \"a\", \"output\": \"b\"},\n"
      "  {\"instruction\": tru}\n"
      "]\n";
  test::expect_error([&] { parse_alpaca(text, "bad.json"); },
                     {"bad.json", "invalid JSON", "line 3, column 22", "invalid literal"});
  // Unterminated array: the error is at the end of input.
  test::expect_error([&] { parse_alpaca("[\n{\"instruction\":\"a\",\"output\":\"b\"}", "cut.json"); },
                     {"cut.json", "line 2, column 33", "unexpected end of input"});
  // Invalid UTF-8 inside a string.
  test::expect_error([&] { parse_alpaca("[\"a\xff\"]", "utf.json"); },
                     {"utf.json", "line 1, column 4", "UTF-8"});
}

TEST(DataAlpaca, NumberOverflowIsAnErrorToo) {
  test::expect_error([] { parse_alpaca(R"([{"instruction":"a","output":"b","x":1e500}])", "n.json"); },
                     {"n.json", "invalid JSON", "number overflow", "1e500"});
  test::expect_error(
      [] { parse_alpaca("{\"instruction\":\"a\",\"output\":\"b\"}\n{\"x\":-1e999}\n", "n.jsonl"); },
      {"n.jsonl", "line 2", "number overflow"});
}

// Every prefix of a valid file either parses or fails with l4q::Error, never anything else.
TEST(DataAlpaca, EveryTruncationFailsCleanly) {
  for (const std::string text :
       {std::string(R"([{"instruction": "caf\u00e9", "input": null, "output": "b\n"}, {"instruction": "c", "output": "d"}])"),
        std::string("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\", \"output\": \"d\"}\n")}) {
    int ok = 0;
    for (size_t n = 0; n <= text.size(); ++n) {
      try {
        ok += !parse_alpaca(text.substr(0, n), "p.json").empty();
      } catch (const Error&) {
      } catch (const std::exception& e) {
        ADD_FAILURE() << "prefix " << n << ": non-l4q exception " << e.what();
      }
    }
    EXPECT_GE(ok, 1);
  }
}

TEST(DataAlpaca, MalformedJsonLinesNamesTheFileLine) {
  const std::string text =
      "{\"instruction\": \"a\", \"output\": \"b\"}\n"
      "\n"
      "{\"instruction\": \"c\", \"output\": \"d\",}\n";
  test::expect_error([&] { parse_alpaca(text, "bad.jsonl"); },
                     {"bad.jsonl", "line 3, column 36", "JSON Lines"});
}

TEST(DataAlpaca, MissingFieldNamesRecordAndField) {
  test::expect_error(
      [] { parse_alpaca(R"([{"instruction":"a","output":"b"},{"instruction":"c"}])", "m.json"); },
      {"m.json", "record 1", "missing field 'output'"});
  test::expect_error(
      [] { parse_alpaca("{\"instruction\":\"a\",\"output\":\"b\"}\n\n{\"output\":\"c\"}\n", "m.jsonl"); },
      {"m.jsonl", "record 1 (line 3)", "missing field 'instruction'"});
}

TEST(DataAlpaca, WrongTypeNamesRecordFieldAndType) {
  test::expect_error([] { parse_alpaca(R"([{"instruction":"a","output":5}])", "t.json"); },
                     {"t.json", "record 0", "field 'output'", "expected a string", "number"});
  test::expect_error([] { parse_alpaca(R"([{"instruction":"a","input":["x"],"output":"b"}])", "t.json"); },
                     {"record 0", "field 'input'", "array"});
  test::expect_error([] { parse_alpaca(R"([{"instruction":null,"output":"b"}])", "t.json"); },
                     {"record 0", "field 'instruction'", "null"});
  test::expect_error(
      [] { parse_alpaca("{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":true,\"output\":\"b\"}", "t.jsonl"); },
      {"t.jsonl", "record 1 (line 2)", "field 'instruction'", "boolean"});
  test::expect_error([] { parse_alpaca(R"([{"instruction":"a","output":"b"}, "text"])", "o.json"); },
                     {"o.json", "record 1", "expected an object", "string"});
  test::expect_error([] { parse_alpaca(R"("just a string")", "s.json"); },
                     {"s.json", "expected a JSON array", "string"});
}

TEST(DataAlpaca, EmptyDatasetIsAnError) {
  test::expect_error([] { parse_alpaca("[]", "e.json"); }, {"e.json", "empty dataset"});
  test::expect_error([] { parse_alpaca("", "e.json"); }, {"e.json", "empty dataset"});
  test::expect_error([] { parse_alpaca(" \n\n", "e.jsonl"); }, {"e.jsonl", "empty dataset"});
  const auto path = test::write_temp("empty.json", "[ ]\n");
  test::expect_error([&] { read_alpaca(path); }, {path, "empty dataset"});
}

TEST(DataAlpaca, UnreadableFileNamesThePath) {
  test::expect_error([] { read_alpaca("/nonexistent/alpaca.json"); },
                     {"/nonexistent/alpaca.json", "cannot open"});
}

TEST(DataAlpaca, ReadsTheBundledSubset) {
  const auto r = read_alpaca(std::string(L4Q_SOURCE_DIR) + "/assets/alpaca/alpaca_en_demo.json");
  ASSERT_EQ(r.size(), 999u);
  int64_t with_input = 0;
  for (const auto& x : r) with_input += !x.input.empty();
  EXPECT_EQ(with_input, 412);
  EXPECT_EQ(r[0].instruction, "Describe a process of making crepes.");
  EXPECT_TRUE(r[0].input.empty());
}

TEST(DataAlpaca, JsonLinesFileRoundTrip) {
  const auto path = test::write_temp("rt.jsonl",
                                     "{\"instruction\":\"i\",\"input\":\"in\",\"output\":\"o\"}\n");
  const auto r = read_alpaca(path);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].input, "in");
  // Forcing the array reader on JSON Lines fails with a location.
  test::expect_error(
      [] { parse_alpaca("{\"instruction\":\"i\",\"output\":\"o\"}\n{\"instruction\":\"i\",\"output\":\"o\"}\n", "f.json", AlpacaFormat::json_array); },
      {"f.json", "line 2, column 1"});
}

}  // namespace
}  // namespace l4q
