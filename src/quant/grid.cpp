#include "l4q/quant/grid.h"

#include "l4q/error.h"

namespace l4q {

void QuantGrid::validate(const std::string& where) const {
  if (bits < 2 || bits > 8) fail("[", where, "] quant.bits: expected 2..8, got ", bits);
  if (group_size != -1 && group_size < 1)
    fail("[", where, "] quant.group_size: expected a positive divisor of in_features or -1 "
         "(per-channel), got ", group_size);
}

void QuantGrid::validate(const std::string& where, int64_t in_features) const {
  validate(where);
  if (in_features < 1) fail("[", where, "] in_features: expected >= 1, got ", in_features);
  if (group_size != -1 && in_features % group_size != 0)
    fail("[", where, "] quant.group_size: ", group_size, " does not divide in_features ",
         in_features, " (use a divisor, or -1 for one group per row)");
}

std::string QuantGrid::describe() const {
  return detail::concat(bits, "-bit, ",
                        group_size == -1 ? std::string("per-channel")
                                         : detail::concat("group ", group_size));
}

}  // namespace l4q
