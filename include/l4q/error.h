// The one exception type of l4q. Messages name the operation or file, the parameter, the
// value received and what is allowed, e.g.
//   "[L4QLinear] quant.bits: expected 2..8, got 9".
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace l4q {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws l4q::Error with the arguments streamed together.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

}  // namespace l4q
