// UTF-8 helpers with sentencepiece's exact rules (src/util.h, util.cc), so that malformed
// input is cut into the same units as the reference.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace l4q::utf8 {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";      // U+2581 LOWER ONE EIGHTH BLOCK

// Length of the character that begins with `lead`, from its high nibble alone
// (continuation bytes count as 1); the caller clips it to what is left.
inline size_t one_char_len(char lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[static_cast<uint8_t>(lead) >> 4];
}

inline bool is_trail(char c) { return (static_cast<uint8_t>(c) & 0xC0) == 0x80; }

inline bool is_valid_codepoint(uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

// sentencepiece's IsValidDecodeUTF8: true with the character's length when `s` starts with a
// well-formed, non-overlong, non-surrogate character; false with length 1 otherwise.
// `s` must not be empty.
inline bool valid_prefix(std::string_view s, size_t* len) {
  const auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i])); };
  const size_t n = s.size();
  if (b(0) < 0x80) {
    *len = 1;
    return true;
  }
  if (n >= 2 && (b(0) & 0xE0) == 0xC0) {
    const uint32_t cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    if (is_trail(s[1]) && cp >= 0x80 && is_valid_codepoint(cp)) {
      *len = 2;
      return true;
    }
  } else if (n >= 3 && (b(0) & 0xF0) == 0xE0) {
    const uint32_t cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    if (is_trail(s[1]) && is_trail(s[2]) && cp >= 0x800 && is_valid_codepoint(cp)) {
      *len = 3;
      return true;
    }
  } else if (n >= 4 && (b(0) & 0xF8) == 0xF0) {
    const uint32_t cp =
        ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    if (is_trail(s[1]) && is_trail(s[2]) && is_trail(s[3]) && cp >= 0x10000 &&
        is_valid_codepoint(cp)) {
      *len = 4;
      return true;
    }
  }
  *len = 1;
  return false;
}

}  // namespace l4q::utf8
