#include "l4q/text/bpe_pretokenize.h"

#include <array>

#include "l4q/error.h"
#include "text/bpe_unicode.h"
#include "text/utf8.h"

namespace l4q {

namespace {

using bpe_unicode::Class;
using bpe_unicode::kLetter;
using bpe_unicode::kNumber;
using bpe_unicode::kOther;
using bpe_unicode::kSpace;

constexpr uint32_t kInvalid = 0xFFFFFFFFu;  // a byte that does not start valid UTF-8

// The text as characters: code point, class and byte offset of each (offset[n] = size).
struct Chars {
  std::vector<uint32_t> cp;
  std::vector<Class> cls;
  std::vector<size_t> off;

  explicit Chars(std::string_view s) {
    cp.reserve(s.size());
    cls.reserve(s.size());
    off.reserve(s.size() + 1);
    size_t i = 0;
    while (i < s.size()) {
      size_t len = 1;
      uint32_t c = kInvalid;
      if (utf8::valid_prefix(s.substr(i), &len)) {
        const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i + k])); };
        switch (len) {
          case 1: c = b(0); break;
          case 2: c = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F); break;
          case 3: c = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F); break;
          default: c = ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
        }
      }
      cp.push_back(c);
      cls.push_back(c == kInvalid ? kOther : bpe_unicode::classify(c));
      off.push_back(i);
      i += len;
    }
    off.push_back(s.size());
  }
  size_t size() const { return cp.size(); }
};

// Appends words [start, end) of char indices, as views of `text`.
struct Emitter {
  std::string_view text;
  const Chars& ch;
  std::vector<std::string_view>& out;
  void operator()(size_t a, size_t b) const {
    if (b > a) out.push_back(text.substr(ch.off[a], ch.off[b] - ch.off[a]));
  }
};

uint32_t lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// Length (2 or 3 chars) of a contraction 's 't 're 've 'm 'll 'd at `i`, else 0.
size_t contraction(const Chars& ch, size_t i, size_t end, bool ignore_case) {
  if (ch.cp[i] != '\'' || i + 1 >= end) return 0;
  const auto at = [&](size_t k) { return ignore_case ? lower_ascii(ch.cp[k]) : ch.cp[k]; };
  const uint32_t c1 = at(i + 1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (i + 2 >= end) return 0;
  const uint32_t c2 = at(i + 2);
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// \s+(?!\S) then \s+ at `i` (a whitespace char): the run, less its last char when a
// non-space follows and the run is longer than one.
size_t whitespace_tail(const Chars& ch, size_t i, size_t end) {
  size_t j = i;
  while (j < end && ch.cls[j] == kSpace) ++j;
  if (j < end && j - i > 1) --j;
  return j;
}

// The GPT-2 regex over chars [begin, end), as a leftmost-first regex engine matches it.
void split_gpt2(const Chars& ch, size_t begin, size_t end, const Emitter& emit) {
  size_t i = begin;
  while (i < end) {
    if (const size_t n = contraction(ch, i, end, false)) {
      emit(i, i + n);
      i += n;
      continue;
    }
    // ` ?X+` for X = letter, number, other: the optional space belongs to the run after it.
    const bool space_first = ch.cp[i] == ' ' && i + 1 < end && ch.cls[i + 1] != kSpace;
    const size_t k = space_first ? i + 1 : i;
    const Class c = ch.cls[k];
    if (c != kSpace) {
      size_t j = k + 1;
      while (j < end && ch.cls[j] == c) ++j;
      emit(i, j);
      i = j;
      continue;
    }
    const size_t j = whitespace_tail(ch, i, end);
    emit(i, j);
    i = j;
  }
}

bool is_cr_lf(uint32_t c) { return c == '\r' || c == '\n'; }

void split_llama3(const Chars& ch, size_t begin, size_t end, const Emitter& emit) {
  size_t i = begin;
  while (i < end) {
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (const size_t n = contraction(ch, i, end, true)) {
      emit(i, i + n);
      i += n;
      continue;
    }
    const Class c = ch.cls[i];
    // [^\r\n\p{L}\p{N}]?\p{L}+
    {
      size_t k = i;
      if (c != kLetter && c != kNumber && !is_cr_lf(ch.cp[i])) ++k;
      if (k < end && ch.cls[k] == kLetter) {
        size_t j = k + 1;
        while (j < end && ch.cls[j] == kLetter) ++j;
        emit(i, j);
        i = j;
        continue;
      }
    }
    // \p{N}{1,3}
    if (c == kNumber) {
      size_t j = i + 1;
      while (j < end && j < i + 3 && ch.cls[j] == kNumber) ++j;
      emit(i, j);
      i = j;
      continue;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    {
      const size_t k = (ch.cp[i] == ' ') ? i + 1 : i;
      if (k < end && ch.cls[k] == kOther) {
        size_t j = k + 1;
        while (j < end && ch.cls[j] == kOther) ++j;
        while (j < end && is_cr_lf(ch.cp[j])) ++j;
        emit(i, j);
        i = j;
        continue;
      }
    }
    // \s*[\r\n]+ : up to the last \r or \n of the whitespace run.
    size_t run = i;
    size_t last_nl = end;
    while (run < end && ch.cls[run] == kSpace) {
      if (is_cr_lf(ch.cp[run])) last_nl = run;
      ++run;
    }
    if (last_nl != end) {
      emit(i, last_nl + 1);
      i = last_nl + 1;
      continue;
    }
    // \s+(?!\S) | \s+ (here c is whitespace: every other class was matched above)
    const size_t j = whitespace_tail(ch, i, end);
    emit(i, j);
    i = j;
  }
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 324> from_unicode;  // code points 0..323 cover the whole map
  ByteMap() {
    from_unicode.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : 256u + static_cast<uint32_t>(extra++);
      std::string s;
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      to_unicode[b] = s;
      from_unicode[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

BpePreTokenizer parse_bpe_pre_tokenizer(const std::string& name, const std::string& where) {
  if (name == "gpt2") return BpePreTokenizer::gpt2;
  if (name == "smollm" || name == "starcoder" || name == "refact" || name == "codeshell" ||
      name == "command-r")
    return BpePreTokenizer::smollm;
  if (name == "llama-bpe" || name == "llama3") return BpePreTokenizer::llama3;
  fail(where, ": pre-tokenizer '", name,
       "' is not supported (expected gpt2, smollm, starcoder, refact, codeshell, command-r, "
       "llama-bpe or llama3)");
}

const char* to_string(BpePreTokenizer p) {
  switch (p) {
    case BpePreTokenizer::gpt2: return "gpt2";
    case BpePreTokenizer::smollm: return "smollm";
    case BpePreTokenizer::llama3: return "llama3";
  }
  return "?";
}

const char* bpe_pre_tokenizer_regex(BpePreTokenizer p) {
  if (p == BpePreTokenizer::llama3)
    return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
           "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
}

std::vector<std::string_view> bpe_pre_tokenize(std::string_view text, BpePreTokenizer p) {
  std::vector<std::string_view> out;
  const Chars ch(text);
  const Emitter emit{text, ch, out};
  const size_t n = ch.size();
  switch (p) {
    case BpePreTokenizer::gpt2:
      split_gpt2(ch, 0, n, emit);
      break;
    case BpePreTokenizer::smollm: {
      size_t start = 0;
      for (size_t i = 0; i < n; ++i) {
        if (ch.cls[i] != kNumber) continue;
        split_gpt2(ch, start, i, emit);
        emit(i, i + 1);
        start = i + 1;
      }
      split_gpt2(ch, start, n, emit);
      break;
    }
    case BpePreTokenizer::llama3:
      split_llama3(ch, 0, n, emit);
      break;
  }
  return out;
}

const std::string& bpe_byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

int bpe_unicode_to_byte(uint32_t codepoint) {
  return codepoint < byte_map().from_unicode.size() ? byte_map().from_unicode[codepoint] : -1;
}

std::string bpe_bytes_to_unicode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_map().to_unicode[static_cast<uint8_t>(c)];
  return out;
}

std::string bpe_unicode_to_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t len = 1;
    int b = -1;
    if (utf8::valid_prefix(text.substr(i), &len)) {
      uint32_t cp = static_cast<uint8_t>(text[i]);
      if (len == 2) cp = ((cp & 0x1F) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3F);
      if (len <= 2) b = bpe_unicode_to_byte(cp);
    }
    if (b >= 0) out.push_back(static_cast<char>(b));
    else out.append(text.substr(i, len));
    i += len;
  }
  return out;
}

}  // namespace l4q
