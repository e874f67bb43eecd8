#include "l4q/text/bpe.h"

#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>

#include "l4q/error.h"
#include "text/piece_table.h"

namespace l4q {

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Merge {
  int32_t rank;
  int32_t result;
};

}  // namespace

struct BpeTokenizer::Impl {
  BpeVocab v;
  std::string where;
  PieceTable ids;                                // token text -> id
  std::unordered_map<uint64_t, Merge> merges;    // (left id, right id) -> rank, merged id
  std::array<int32_t, 256> byte_id{};            // id of each byte's character, -1: none
  std::vector<std::string> bytes;                // what each token decodes to
  std::vector<bool> special;                     // split out of text before pre-tokenizing
  // Special tokens by first byte, longest first (leftmost-longest matching).
  std::array<std::vector<int32_t>, 256> special_by_byte;

  BpeTokenType type(int32_t id) const {
    return v.types.empty() ? BpeTokenType::normal : v.types[static_cast<size_t>(id)];
  }

  // Leftmost-longest special token at or after `from`: its start, or npos.
  size_t find_special(std::string_view text, size_t from, int32_t* id) const {
    for (size_t i = from; i < text.size(); ++i) {
      for (int32_t s : special_by_byte[static_cast<uint8_t>(text[i])]) {
        const std::string& t = v.tokens[static_cast<size_t>(s)];
        if (text.compare(i, t.size(), t) == 0) {
          *id = s;
          return i;
        }
      }
    }
    return std::string_view::npos;
  }

  void encode_span(std::string_view span, std::vector<int32_t>& out) const {
    for (std::string_view word : bpe_pre_tokenize(span, v.pre)) encode_word(word, out);
  }

  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (v.ignore_merges) {
      const std::string mapped = bpe_bytes_to_unicode(word);
      const int32_t whole = ids.find(mapped);
      if (whole >= 0) {
        out.push_back(whole);
        return;
      }
    }
    struct Symbol {
      int32_t id;
      int32_t prev, next;  // -1: none
    };
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    for (char c : word) {
      const int32_t id = byte_id[static_cast<uint8_t>(c)];
      if (id < 0) continue;  // a byte the vocabulary cannot spell: dropped, as HF does
      const auto n = static_cast<int32_t>(sym.size());
      sym.push_back({id, n - 1, -1});
      if (n > 0) sym[static_cast<size_t>(n - 1)].next = n;
    }
    if (sym.size() > 1) {
      struct Cand {
        int32_t rank, left, right, left_id, right_id, result;
        bool operator>(const Cand& o) const {
          return rank != o.rank ? rank > o.rank : left > o.left;
        }
      };
      std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> q;
      auto push = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const auto a = sym[static_cast<size_t>(l)].id, b = sym[static_cast<size_t>(r)].id;
        const auto it = merges.find(pair_key(a, b));
        if (it != merges.end()) q.push({it->second.rank, l, r, a, b, it->second.result});
      };
      for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i, i + 1);
      while (!q.empty()) {
        const Cand c = q.top();
        q.pop();
        Symbol& l = sym[static_cast<size_t>(c.left)];
        // Stale: the left symbol was merged into its neighbour, or either one changed.
        if (l.id != c.left_id || l.next != c.right || sym[static_cast<size_t>(c.right)].id != c.right_id)
          continue;
        Symbol& r = sym[static_cast<size_t>(c.right)];
        l.id = c.result;
        l.next = r.next;
        if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = c.left;
        r.id = -1;  // dead
        r.prev = r.next = -1;
        push(l.prev, c.left);
        push(c.left, l.next);
      }
    }
    for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<size_t>(i)].next)
      out.push_back(sym[static_cast<size_t>(i)].id);
  }
};

BpeTokenizer::BpeTokenizer(BpeVocab vocab, const std::string& where) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.v = std::move(vocab);
  m.where = where;
  const BpeVocab& v = m.v;
  const auto n = static_cast<int64_t>(v.tokens.size());
  if (n == 0) fail(where, ": empty BPE vocabulary");
  if (n > INT32_MAX) fail(where, ": BPE vocabulary of ", n, " tokens: too large");
  if (!v.types.empty() && static_cast<int64_t>(v.types.size()) != n)
    fail(where, ": ", v.types.size(), " token types for ", n, " tokens");
  for (int32_t i = 0; i < n; ++i) {
    int32_t existing = -1;
    if (!m.ids.insert(v.tokens[static_cast<size_t>(i)], i, &existing))
      fail(where, ": token ", i, " '", v.tokens[static_cast<size_t>(i)], "' duplicates token ", existing);
  }
  for (const auto& [name, id] : {std::pair<const char*, int32_t>{"bos", v.bos_id}, {"eos", v.eos_id},
                                 {"unk", v.unk_id}, {"pad", v.pad_id}})
    if (id < -1 || id >= n) fail(where, ": ", name, " id ", id, " out of range [0, ", n, ")");
  if (v.add_bos && v.bos_id < 0) fail(where, ": add_bos is set but there is no BOS token");

  m.merges.reserve(v.merges.size() * 2);
  for (size_t r = 0; r < v.merges.size(); ++r) {
    const auto& [a, b] = v.merges[r];
    const int32_t ia = m.ids.find(a), ib = m.ids.find(b);
    const std::string joined = a + b;
    const int32_t ij = m.ids.find(joined);
    if (ia < 0 || ib < 0 || ij < 0)
      fail(where, ": merge ", r, " '", a, " ", b, "': ", ia < 0 ? "'" + a + "'" : ib < 0 ? "'" + b + "'" : "'" + joined + "'",
           " is not in the vocabulary");
    m.merges.emplace(pair_key(ia, ib), Merge{static_cast<int32_t>(r), ij});  // first rank wins
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = m.ids.find(bpe_byte_to_unicode(static_cast<uint8_t>(b)));
    m.byte_id[static_cast<size_t>(b)] = id >= 0 ? id : v.unk_for_missing_bytes ? v.unk_id : -1;
  }
  m.bytes.resize(static_cast<size_t>(n));
  m.special.assign(static_cast<size_t>(n), false);
  for (int32_t i = 0; i < n; ++i) {
    const auto t = m.type(i);
    const std::string& tok = v.tokens[static_cast<size_t>(i)];
    if (t == BpeTokenType::control || t == BpeTokenType::user_defined) {
      if (!tok.empty()) {
        m.special[static_cast<size_t>(i)] = true;
        m.special_by_byte[static_cast<uint8_t>(tok[0])].push_back(i);
      }
      // Control tokens print as nothing; user-defined ones are plain text.
      if (t == BpeTokenType::user_defined) m.bytes[static_cast<size_t>(i)] = tok;
    } else if (t != BpeTokenType::unused) {
      m.bytes[static_cast<size_t>(i)] = bpe_unicode_to_bytes(tok);
    }
  }
  for (auto& list : m.special_by_byte)
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return v.tokens[static_cast<size_t>(a)].size() > v.tokens[static_cast<size_t>(b)].size();
    });
}

BpeTokenizer::~BpeTokenizer() = default;

std::vector<int32_t> BpeTokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && m.v.add_bos) out.push_back(m.v.bos_id);
  const std::string_view s(text);
  size_t pos = 0;
  while (pos < s.size()) {
    int32_t id = -1;
    const size_t at = m.find_special(s, pos, &id);
    m.encode_span(s.substr(pos, (at == std::string_view::npos ? s.size() : at) - pos), out);
    if (at == std::string_view::npos) break;
    out.push_back(id);
    pos = at + m.v.tokens[static_cast<size_t>(id)].size();
  }
  if (add_eos && m.v.eos_id >= 0) out.push_back(m.v.eos_id);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

std::string BpeTokenizer::decode_stream(int32_t /*prev*/, int32_t id) const { return token_bytes(id); }

std::string BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail(impl_->where, ": token id ", id, " out of range [0, ", vocab_size(), ")");
  return impl_->bytes[static_cast<size_t>(id)];
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  impl_->encode_word(word, out);
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->v.tokens.size()); }
int32_t BpeTokenizer::bos_id() const { return impl_->v.add_bos ? impl_->v.bos_id : -1; }
int32_t BpeTokenizer::eos_id() const { return impl_->v.eos_id; }
int32_t BpeTokenizer::unk_id() const { return impl_->v.unk_id; }
std::string BpeTokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail(impl_->where, ": token id ", id, " out of range [0, ", vocab_size(), ")");
  return impl_->v.tokens[static_cast<size_t>(id)];
}
const BpeVocab& BpeTokenizer::vocab() const { return impl_->v; }

}  // namespace l4q
