// The CSV reader behind the MMLU loader: quoting, embedded separators and line breaks, line
// ends, blank lines, and the one error (an unterminated quote).
#include <gtest/gtest.h>

#include "l4q/eval/csv.h"
#include "test_support.h"

namespace l4q {
namespace {

using Rows = std::vector<std::vector<std::string>>;

TEST(EvalCsv, PlainAndQuotedFields) {
  EXPECT_EQ(parse_csv("a,b,c\n1,2,3\n", "t"), (Rows{{"a", "b", "c"}, {"1", "2", "3"}}));
  EXPECT_EQ(parse_csv("\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\n", "t"),
            (Rows{{"x, y", "say \"hi\"", "two\nlines"}}));
  // A quote inside an unquoted field is literal; text after a closing quote is appended.
  EXPECT_EQ(parse_csv("ab\"c,\"q\"x,\"\"\n", "t"), (Rows{{"ab\"c", "qx", ""}}));
}

TEST(EvalCsv, LineEndsBlankLinesEmptyFieldsAndBom) {
  EXPECT_EQ(parse_csv("\xEF\xBB\xBF" "a,b\r\n\r\n\nc,\r\n,d", "t"), (Rows{{"a", "b"}, {"c", ""}, {"", "d"}}));
  EXPECT_EQ(parse_csv("last,row", "t"), (Rows{{"last", "row"}}));
  EXPECT_EQ(parse_csv("\"crlf\r\ninside\"\r\nnext\r", "t"), (Rows{{"crlf\r\ninside"}, {"next"}}));
  EXPECT_TRUE(parse_csv("", "t").empty());
  EXPECT_TRUE(parse_csv("\n\n", "t").empty());
}

TEST(EvalCsv, UnterminatedQuoteNamesItsLine) {
  test::expect_error([] { parse_csv("a,b\nc,\"open\nstill open\n", "file.csv"); },
                     {"file.csv", "line 2", "quoted field not closed"});
}

}  // namespace
}  // namespace l4q
