#include "l4q/data/example.h"

#include <cstddef>

namespace l4q {

int64_t count_loss_tokens(const Example& e) {
  int64_t n = 0;
  for (size_t t = 1; t < e.labels.size(); ++t) n += e.labels[t] != kIgnoreIndex;
  return n;
}

uint64_t fingerprint(const std::vector<Example>& examples) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  };
  mix(examples.size());
  for (const auto& e : examples) {
    mix(e.ids.size());
    for (const auto id : e.ids) mix(static_cast<uint32_t>(id));
    for (const auto l : e.labels) mix(static_cast<uint32_t>(l));
  }
  return h;
}

}  // namespace l4q
