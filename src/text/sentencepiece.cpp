#include "l4q/text/sentencepiece.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <cstdio>
#include <unordered_map>
#include <utility>

#include "l4q/error.h"
#include "text/piece_table.h"
#include "text/utf8.h"

namespace l4q {
namespace {

// sentencepiece refuses pieces this long (model_interface.cc, kMaxPieceSize).
constexpr size_t kMaxPieceSize = 8000;
constexpr std::string_view kDefaultUnkSurface = " \xE2\x81\x87 ";  // " U+2047 "

std::string byte_piece(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", b);
  return buf;
}

// Parses sentencepiece's spelling of a byte piece; -1 when `p` is not one.
int piece_to_byte(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = p[i];
    if (c >= '0' && c <= '9')
      v = v * 16 + (c - '0');
    else if (c >= 'A' && c <= 'F')
      v = v * 16 + (c - 'A' + 10);
    else
      return -1;
  }
  return v;
}

// Printable form of a piece for error messages.
std::string quoted(std::string_view p) {
  std::string out = "'";
  for (const char c : p.substr(0, 64)) {
    const auto u = static_cast<uint8_t>(c);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (p.size() > 64) out += "...";
  return out + "'";
}

bool is_normal_class(SentencePieceType t) {
  return t == SentencePieceType::kNormal || t == SentencePieceType::kUserDefined ||
         t == SentencePieceType::kUnused;
}

std::string replace_space_symbol(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, utf8::kSpaceSymbol.size(), utf8::kSpaceSymbol) == 0) {
      out += ' ';
      i += utf8::kSpaceSymbol.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace

struct SentencePieceTokenizer::Impl {
  SentencePieceModel model;
  std::string source;
  // sentencepiece's two lookup tables: NORMAL/USER_DEFINED/UNUSED pieces take part in
  // merges; UNKNOWN/CONTROL/BYTE pieces are found only by exact lookup.
  PieceTable normal, reserved;
  size_t max_normal_size = 0;
  // Packed (character, next character) pairs that occur inside some NORMAL/USER_DEFINED/UNUSED
  // piece. No merge can ever join two symbols across a boundary whose pair is not here, so
  // the text is cut there and each part is merged on its own with a small heap; the merges
  // and their order inside a part are those of the single global heap, so the result is
  // identical to bpe_model.cc's.
  std::vector<uint64_t> joinable;  // open-addressing set, 0 = empty slot
  uint64_t joinable_mask = 0;
  size_t joinable_fill = 0;
  // User-defined pieces by first byte, longest first (longest-prefix match).
  std::array<std::vector<std::string_view>, 256> user_defined;
  bool has_user_defined = false;
  int32_t unk_piece_id = -1;  // the UNKNOWN piece that unmatched characters map to
  int32_t unk = -1, bos = -1, eos = -1, pad = -1;
  std::array<int32_t, 256> byte_ids{};
  bool byte_fallback = false, has_unused = false;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true,
       whitespace_as_suffix = false;
  std::string unk_surface;

  void init(SentencePieceModel m, const std::string& src);

  [[noreturn]] void reject(const std::string& what) const {
    fail(source, ": SentencePiece model: ", what);
  }
  const SentencePieceEntry& entry(int32_t id) const { return model.pieces[static_cast<size_t>(id)]; }
  int32_t n() const { return static_cast<int32_t>(model.pieces.size()); }
  void check_id(int32_t id, const char* op) const {
    if (id < 0 || id >= n())
      fail(source, ": ", op, ": token id ", id, " is outside the vocabulary [0, ", n(), ")");
  }

  int32_t piece_to_id(std::string_view p) const {
    if (const int32_t id = reserved.find(p); id >= 0) return id;
    if (const int32_t id = normal.find(p); id >= 0) return id;
    return unk_piece_id;
  }
  // Length of the longest user-defined piece that `s` starts with, or 0.
  size_t match_user_defined(std::string_view s) const {
    if (!has_user_defined || s.empty()) return 0;
    for (const auto& p : user_defined[static_cast<uint8_t>(s[0])])
      if (s.size() >= p.size() && s.compare(0, p.size(), p) == 0) return p.size();
    return 0;
  }

  static uint64_t pair_key(std::string_view a, std::string_view b) {
    uint32_t x = 0, y = 0;
    std::memcpy(&x, a.data(), std::min<size_t>(a.size(), 4));
    std::memcpy(&y, b.data(), std::min<size_t>(b.size(), 4));
    // Never 0, which marks an empty slot.
    return ((static_cast<uint64_t>(y) << 32) | x) ^ 0x8000000000000001ull;
  }
  static size_t pair_slot(uint64_t key) { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20); }
  void add_joinable_pairs(std::string_view piece);
  void insert_joinable(uint64_t key);
  bool is_joinable(uint64_t key) const {
    if (joinable.empty()) return false;
    for (size_t i = pair_slot(key) & joinable_mask;; i = (i + 1) & joinable_mask) {
      if (joinable[i] == key) return true;
      if (joinable[i] == 0) return false;
    }
  }

  std::string normalize(std::string_view input) const;
  // BPE over normalized text: (piece, id) per symbol, as bpe::Model::Encode returns them.
  std::vector<std::pair<std::string_view, int32_t>> bpe(std::string_view normalized) const;
  void encode(std::string_view text, std::vector<int32_t>* ids,
              std::vector<std::string>* pieces) const;
};

void SentencePieceTokenizer::Impl::insert_joinable(uint64_t key) {
  if (joinable.empty() || (joinable_fill + 1) * 2 > joinable.size()) {
    std::vector<uint64_t> old = std::move(joinable);
    joinable.assign(old.empty() ? 1024 : old.size() * 2, 0);
    joinable_mask = joinable.size() - 1;
    joinable_fill = 0;
    for (const uint64_t k : old)
      if (k != 0) insert_joinable(k);
  }
  for (size_t i = pair_slot(key) & joinable_mask;; i = (i + 1) & joinable_mask) {
    if (joinable[i] == key) return;
    if (joinable[i] == 0) {
      joinable[i] = key;
      ++joinable_fill;
      return;
    }
  }
}

// The characters of a piece, cut as the encoder cuts text (one_char_len, clipped at the end).
void SentencePieceTokenizer::Impl::add_joinable_pairs(std::string_view piece) {
  std::string_view prev;
  while (!piece.empty()) {
    const size_t len = std::min(piece.size(), utf8::one_char_len(piece[0]));
    const std::string_view ch = piece.substr(0, len);
    if (!prev.empty()) insert_joinable(pair_key(prev, ch));
    prev = ch;
    piece.remove_prefix(len);
  }
}

void SentencePieceTokenizer::Impl::init(SentencePieceModel m, const std::string& src) {
  model = std::move(m);
  source = src;
  const auto& ts = model.trainer_spec;
  const auto& ns = model.normalizer_spec;

  if (ts.model_type != SentencePieceModelType::kBpe)
    reject(detail::concat("model_type ", sentencepiece_model_type_name(ts.model_type),
                          " is not supported; l4q implements BPE models only"));
  if (!ns.precompiled_charsmap.empty())
    reject(detail::concat("normalizer '", ns.name.value_or(""), "' has a precompiled_charsmap (",
                          ns.precompiled_charsmap.size(),
                          " bytes of normalization rules, e.g. NFKC); l4q implements only the "
                          "identity normalizer and refuses rather than mis-encode"));
  if (model.denormalizer_spec && !model.denormalizer_spec->precompiled_charsmap.empty())
    reject("denormalizer_spec has a precompiled_charsmap; l4q does not implement denormalization");
  if (model.pieces.empty()) reject("no pieces");
  if (model.pieces.size() > static_cast<size_t>(INT32_MAX)) reject("too many pieces");

  byte_fallback = ts.byte_fallback;
  std::array<bool, 256> byte_found{};
  for (int32_t i = 0; i < n(); ++i) {
    const auto& e = entry(i);
    const std::string_view p = e.piece;
    const auto where = [&] { return detail::concat("piece ", i, " (", quoted(p), ")"); };
    if (p.empty()) reject(detail::concat("piece ", i, " is empty"));
    if (p.size() >= kMaxPieceSize)
      reject(detail::concat(where(), ": ", p.size(), " bytes, longer than sentencepiece's limit ",
                            kMaxPieceSize - 1));
    if (p.find('\0') != std::string_view::npos) reject(detail::concat(where(), " contains a NUL byte"));
    auto& table = is_normal_class(e.type) ? normal : reserved;
    int32_t existing = -1;
    if (!table.insert(p, i, &existing))
      reject(detail::concat(where(), " is already defined as piece ", existing));
    if (is_normal_class(e.type)) {
      max_normal_size = std::max(max_normal_size, p.size());
      add_joinable_pairs(p);
    }
    switch (e.type) {
      case SentencePieceType::kUserDefined:
        user_defined[static_cast<uint8_t>(p[0])].push_back(p);
        has_user_defined = true;
        break;
      case SentencePieceType::kUnknown:
        if (unk_piece_id >= 0)
          reject(detail::concat(where(), " is a second UNKNOWN piece (the first is ", unk_piece_id, ")"));
        unk_piece_id = i;
        break;
      case SentencePieceType::kByte: {
        if (!byte_fallback)
          reject(detail::concat(where(), " is a BYTE piece although trainer_spec.byte_fallback is false"));
        const int b = piece_to_byte(p);
        if (b < 0) reject(detail::concat(where(), " is a BYTE piece not spelled <0xXX>"));
        byte_found[static_cast<size_t>(b)] = true;
        byte_ids[static_cast<size_t>(b)] = i;
        break;
      }
      case SentencePieceType::kUnused: has_unused = true; break;
      default: break;
    }
  }
  if (unk_piece_id < 0) reject("no UNKNOWN (<unk>) piece");
  if (byte_fallback) {
    const auto missing = std::find(byte_found.begin(), byte_found.end(), false);
    if (missing != byte_found.end())
      reject(detail::concat("trainer_spec.byte_fallback is set but byte piece ",
                            byte_piece(static_cast<uint8_t>(missing - byte_found.begin())),
                            " is missing (all 256 are required)"));
    // A byte piece is looked up by name, as sentencepiece does.
    for (int b = 0; b < 256; ++b) byte_ids[static_cast<size_t>(b)] = piece_to_id(byte_piece(static_cast<uint8_t>(b)));
  }
  for (auto& list : user_defined)
    std::stable_sort(list.begin(), list.end(),
                     [](std::string_view a, std::string_view b) { return a.size() > b.size(); });

  // sentencepiece's unk_id()/bos_id()/...: the id of the named piece, if it has the right type.
  const auto special = [&](const std::string& name, const char* fallback, SentencePieceType want) {
    const int32_t id = piece_to_id(name.empty() ? std::string_view(fallback) : std::string_view(name));
    return entry(id).type == want ? id : -1;
  };
  unk = special(ts.unk_piece, "<unk>", SentencePieceType::kUnknown);
  bos = special(ts.bos_piece, "<s>", SentencePieceType::kControl);
  eos = special(ts.eos_piece, "</s>", SentencePieceType::kControl);
  pad = special(ts.pad_piece, "<pad>", SentencePieceType::kControl);

  add_dummy_prefix = ns.add_dummy_prefix;
  remove_extra_whitespaces = ns.remove_extra_whitespaces;
  escape_whitespaces = ns.escape_whitespaces;
  whitespace_as_suffix = ts.treat_whitespace_as_suffix;
  unk_surface = ts.unk_surface ? *ts.unk_surface : std::string(kDefaultUnkSurface);
}

// normalizer.cc Normalizer::Normalize with no charsmap: each step consumes a user-defined
// piece, one valid UTF-8 character, or one malformed byte (which becomes U+FFFD).
std::string SentencePieceTokenizer::Impl::normalize(std::string_view input) const {
  std::string out;
  if (input.empty()) return out;
  const auto next = [&](std::string_view s) -> std::pair<std::string_view, size_t> {
    if (const size_t len = match_user_defined(s)) return {s.substr(0, len), len};
    size_t len = 0;
    if (!utf8::valid_prefix(s, &len)) return {utf8::kReplacementChar, 1};
    return {s.substr(0, len), len};
  };
  const std::string_view space = escape_whitespaces ? utf8::kSpaceSymbol : std::string_view(" ");

  if (remove_extra_whitespaces) {
    while (!input.empty()) {
      const auto [sp, len] = next(input);
      if (sp != " ") break;
      input.remove_prefix(len);
    }
    if (input.empty()) return out;
  }
  out.reserve(input.size() + input.size() / 2 + 3);
  if (!whitespace_as_suffix && add_dummy_prefix) out.append(space);

  bool is_prev_space = remove_extra_whitespaces;
  while (!input.empty()) {
    auto [sp, len] = next(input);
    while (is_prev_space && !sp.empty() && sp.front() == ' ') sp.remove_prefix(1);
    if (!sp.empty()) {
      for (const char c : sp) {
        if (escape_whitespaces && c == ' ')
          out.append(utf8::kSpaceSymbol);
        else
          out += c;
      }
      is_prev_space = sp.back() == ' ';
    }
    input.remove_prefix(len);
    if (!remove_extra_whitespaces) is_prev_space = false;
  }
  if (remove_extra_whitespaces) {
    while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0)
      out.resize(out.size() - space.size());
  }
  if (whitespace_as_suffix && add_dummy_prefix) out.append(space);
  return out;
}

// bpe_model.cc Model::SampleEncode with alpha = 0, run part by part (see `joinable`).
std::vector<std::pair<std::string_view, int32_t>> SentencePieceTokenizer::Impl::bpe(
    std::string_view text) const {
  std::vector<std::pair<std::string_view, int32_t>> out;
  if (text.empty()) return out;
  if (text.size() > static_cast<size_t>(INT32_MAX))
    fail(source, ": encode: ", text.size(), " bytes of normalized text is too long (limit 2 GiB)");

  struct Symbol {
    int32_t prev, next;     // neighbours in the current segmentation, -1 at the ends
    uint32_t begin, size;   // bytes of `text`; size 0 once merged into its left neighbour
    bool freeze;            // a user-defined piece: never merges
    bool cut_before;        // no piece can span the boundary at `begin`
  };
  struct Pair {
    float score;
    int32_t left, right;
    uint32_t size;  // bytes of the merged piece when queued; a mismatch later means stale
  };
  // Max-heap order: higher score first; equal scores: leftmost first.
  const auto lower = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::vector<Pair> agenda;
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  // Merges that formed an UNUSED piece, to split it back afterwards.
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;

  const auto view = [&](const Symbol& s) { return text.substr(s.begin, s.size); };
  const auto maybe_add_pair = [&](int32_t left, int32_t right) {
    if (left == -1 || right == -1) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    const Symbol& r = symbols[static_cast<size_t>(right)];
    if (r.cut_before || l.freeze || r.freeze) return;
    const size_t merged_size = size_t{l.size} + r.size;
    if (merged_size > max_normal_size) return;
    const std::string_view merged = text.substr(l.begin, merged_size);
    const int32_t id = normal.find(merged);
    if (id < 0) return;
    agenda.push_back(Pair{entry(id).score, left, right, static_cast<uint32_t>(merged_size)});
    std::push_heap(agenda.begin(), agenda.end(), lower);
    if (entry(id).type == SentencePieceType::kUnused) rev_merge[merged] = {view(l), view(r)};
  };

  // One symbol per character (or user-defined piece).
  for (size_t pos = 0; pos < text.size();) {
    const std::string_view rest = text.substr(pos);
    size_t len = match_user_defined(rest);
    const bool freeze = len > 0;
    if (!freeze) len = std::min(rest.size(), utf8::one_char_len(rest[0]));
    const auto index = static_cast<int32_t>(symbols.size());
    bool cut = true;
    if (index > 0) {
      const Symbol& p = symbols.back();
      cut = p.freeze || freeze || !is_joinable(pair_key(view(p), rest.substr(0, len)));
    }
    symbols.push_back(Symbol{index - 1, pos + len < text.size() ? index + 1 : -1,
                             static_cast<uint32_t>(pos), static_cast<uint32_t>(len), freeze, cut});
    pos += len;
  }

  const auto n_symbols = static_cast<int32_t>(symbols.size());
  for (int32_t seg = 0; seg < n_symbols;) {
    int32_t end = seg + 1;
    while (end < n_symbols && !symbols[static_cast<size_t>(end)].cut_before) ++end;
    for (int32_t i = seg + 1; i < end; ++i) maybe_add_pair(i - 1, i);
    while (!agenda.empty()) {
      std::pop_heap(agenda.begin(), agenda.end(), lower);
      const Pair top = agenda.back();
      agenda.pop_back();
      Symbol& l = symbols[static_cast<size_t>(top.left)];
      Symbol& r = symbols[static_cast<size_t>(top.right)];
      // Stale: one side was merged away or grew since this pair was queued.
      if (l.size == 0 || r.size == 0 || l.size + r.size != top.size) continue;
      l.size += r.size;
      l.next = r.next;
      if (r.next >= 0) symbols[static_cast<size_t>(r.next)].prev = top.left;
      r.size = 0;
      maybe_add_pair(l.prev, top.left);
      maybe_add_pair(top.left, l.next);
    }
    seg = end;
  }

  out.reserve(symbols.size());
  // Splits merges into UNUSED pieces back into their halves, recursively.
  const auto resegment = [&](auto&& self, std::string_view w) -> void {
    const int32_t id = piece_to_id(w);
    if (!has_unused || entry(id).type != SentencePieceType::kUnused) {
      out.emplace_back(w, id);
      return;
    }
    const auto p = rev_merge.find(w);
    if (p == rev_merge.end()) {
      out.emplace_back(w, id);
      return;
    }
    self(self, p->second.first);
    self(self, p->second.second);
  };
  for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next)
    resegment(resegment, view(symbols[static_cast<size_t>(i)]));
  return out;
}

// sentencepiece_processor.cc PopulateSentencePieceText: unknown pieces become byte pieces
// (byte_fallback) or one <unk> per run of unknown pieces.
void SentencePieceTokenizer::Impl::encode(std::string_view text, std::vector<int32_t>* ids,
                                          std::vector<std::string>* pieces) const {
  const std::string normalized = normalize(text);
  const auto result = bpe(normalized);
  bool prev_unk = false;
  for (const auto& [w, id] : result) {
    const auto type = entry(id).type;
    const bool is_unk = type == SentencePieceType::kUnknown;
    if (type == SentencePieceType::kControl)
      // sentencepiece fails here too ("all normalized characters are not consumed").
      fail(source, ": encode: the text contains ", quoted(w),
           ", which is a CONTROL piece of the vocabulary; sentencepiece cannot encode it");
    if (is_unk && byte_fallback) {
      for (const char c : w) {
        const int32_t b = byte_ids[static_cast<uint8_t>(c)];
        if (ids) ids->push_back(b);
        if (pieces) pieces->push_back(entry(b).piece);
      }
    } else if (is_unk && prev_unk) {
      if (pieces) pieces->back().append(w.data(), w.size());
    } else {
      if (ids) ids->push_back(id);
      if (pieces) pieces->emplace_back(w);
    }
    prev_unk = is_unk;
  }
}

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : impl_(std::make_unique<Impl>()) {
  impl_->init(read_sentencepiece_model(model_path), model_path);
}

SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceModel model, const std::string& source)
    : impl_(std::make_unique<Impl>()) {
  impl_->init(std::move(model), source);
}

SentencePieceTokenizer::SentencePieceTokenizer(const SentencePieceVocab& vocab,
                                               const std::string& source)
    : impl_(std::make_unique<Impl>()) {
  impl_->init(sentencepiece_model_from_vocab(vocab, source), source);
  // The vocabulary's own ids win over lookups by name (GGUF need not call BOS "<s>").
  impl_->unk = vocab.unk_id;
  impl_->bos = vocab.bos_id;
  impl_->eos = vocab.eos_id;
  impl_->pad = vocab.pad_id;
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;
SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept = default;

std::vector<int32_t> SentencePieceTokenizer::encode(const std::string& text, bool add_bos,
                                                    bool add_eos) const {
  std::vector<int32_t> ids;
  if (add_bos) {
    if (impl_->bos < 0) fail(impl_->source, ": encode: add_bos requested but the vocabulary has no BOS");
    ids.push_back(impl_->bos);
  }
  impl_->encode(text, &ids, nullptr);
  if (add_eos) {
    if (impl_->eos < 0) fail(impl_->source, ": encode: add_eos requested but the vocabulary has no EOS");
    ids.push_back(impl_->eos);
  }
  return ids;
}

std::vector<std::string> SentencePieceTokenizer::encode_pieces(const std::string& text) const {
  std::vector<std::string> pieces;
  impl_->encode(text, nullptr, &pieces);
  return pieces;
}

std::string SentencePieceTokenizer::normalize(std::string_view text) const {
  return impl_->normalize(text);
}

// sentencepiece_processor.cc Decode (0.2.0).
std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& m = *impl_;
  for (const int32_t id : ids) m.check_id(id, "decode");
  std::string text;
  std::string bytes;  // pending run of byte pieces
  const auto flush_bytes = [&] {
    std::string_view rest = bytes;
    while (!rest.empty()) {
      size_t len = 0;
      if (utf8::valid_prefix(rest, &len))
        text.append(rest.substr(0, len));
      else
        text.append(utf8::kReplacementChar);
      rest.remove_prefix(len);
    }
    bytes.clear();
  };
  // The dummy-prefix space is dropped from the first piece only; with
  // remove_extra_whitespaces, from every leading piece until text appears.
  bool is_bos_ws = true, bos_ws_seen = false;
  for (const int32_t id : ids) {
    const auto& e = m.entry(id);
    if (e.type == SentencePieceType::kByte) {
      bytes += static_cast<char>(piece_to_byte(e.piece));
      continue;
    }
    flush_bytes();
    if (bos_ws_seen || !text.empty()) is_bos_ws = false;
    bos_ws_seen = false;
    if (e.type == SentencePieceType::kControl) continue;
    if (e.type == SentencePieceType::kUnknown) {
      text += m.unk_surface;
      continue;
    }
    std::string_view p = e.piece;
    if (is_bos_ws && (m.add_dummy_prefix || m.remove_extra_whitespaces)) {
      if (p.substr(0, utf8::kSpaceSymbol.size()) == utf8::kSpaceSymbol) {
        p.remove_prefix(utf8::kSpaceSymbol.size());
        bos_ws_seen = !m.remove_extra_whitespaces;
      }
    }
    text += replace_space_symbol(p);
  }
  flush_bytes();
  return text;
}

std::string SentencePieceTokenizer::decode_stream(int32_t prev, int32_t id) const {
  impl_->check_id(id, "decode_stream");
  const auto& e = impl_->entry(id);
  switch (e.type) {
    case SentencePieceType::kByte: return std::string(1, static_cast<char>(piece_to_byte(e.piece)));
    case SentencePieceType::kControl: return {};
    case SentencePieceType::kUnknown: return impl_->unk_surface;
    default: break;
  }
  std::string s = replace_space_symbol(e.piece);
  if (prev >= 0 && prev == impl_->bos && !s.empty() && s[0] == ' ') s.erase(0, 1);
  return s;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->n(); }
int32_t SentencePieceTokenizer::bos_id() const { return impl_->bos; }
int32_t SentencePieceTokenizer::eos_id() const { return impl_->eos; }
int32_t SentencePieceTokenizer::unk_id() const { return impl_->unk; }
int32_t SentencePieceTokenizer::pad_id() const { return impl_->pad; }

std::string SentencePieceTokenizer::piece(int32_t id) const {
  impl_->check_id(id, "piece");
  return impl_->entry(id).piece;
}

int32_t SentencePieceTokenizer::piece_to_id(std::string_view piece) const {
  return impl_->piece_to_id(piece);
}

float SentencePieceTokenizer::score(int32_t id) const {
  impl_->check_id(id, "score");
  return impl_->entry(id).score;
}

SentencePieceType SentencePieceTokenizer::type(int32_t id) const {
  impl_->check_id(id, "type");
  return impl_->entry(id).type;
}

const SentencePieceModel& SentencePieceTokenizer::model() const { return impl_->model; }

}  // namespace l4q
