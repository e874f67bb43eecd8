// The integer grid of LSQ+ quantization: bit width and grouping along the input dimension.
#pragma once
#include <cstdint>
#include <string>

namespace l4q {

// Signed grid of the paper: w_int in [Qn, Qp] = [-2^(bits-1), 2^(bits-1) - 1], one step size s
// and one offset b per group of `group_size` consecutive weights of an output row. The
// unsigned view used by export formats is q = w_int - Qn in [0, 2^bits - 1], W = s*q + m with
// m = b + s*Qn.
struct QuantGrid {
  int bits = 4;
  int64_t group_size = 128;  // -1: one group spanning each whole row (per-channel)

  int qn() const { return -(1 << (bits - 1)); }
  int qp() const { return (1 << (bits - 1)) - 1; }
  int levels() const { return 1 << bits; }

  // Group size once in_features is known (resolves -1).
  int64_t group_size_for(int64_t in_features) const {
    return group_size == -1 ? in_features : group_size;
  }
  int64_t groups_per_row(int64_t in_features) const {
    return in_features / group_size_for(in_features);
  }

  // Throws l4q::Error naming `where`, the field, the value and what is allowed.
  void validate(const std::string& where) const;
  void validate(const std::string& where, int64_t in_features) const;

  std::string describe() const;  // "4-bit, group 128"
};

}  // namespace l4q
