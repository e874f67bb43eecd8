// Unicode classes for the byte-level BPE pre-tokenizers (letter \p{L}, number \p{N},
// whitespace \s), from the generated table in bpe_unicode_data.cpp.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace l4q::bpe_unicode {

enum Class : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

extern const uint32_t kClassRuns[];
extern const size_t kNumClassRuns;
extern const char kUnicodeVersion[];

inline Class classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return kLetter;
    if (cp >= '0' && cp <= '9') return kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return kSpace;
    return kOther;
  }
  if (cp > 0x10FFFF) return kOther;
  // The last run whose first code point is <= cp.
  const uint32_t key = (cp << 2) | 3u;
  const uint32_t* end = kClassRuns + kNumClassRuns;
  const uint32_t* it = std::upper_bound(kClassRuns, end, key);
  return static_cast<Class>(*(it - 1) & 3u);
}

}  // namespace l4q::bpe_unicode
