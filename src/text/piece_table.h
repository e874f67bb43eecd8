// String -> token id lookup for the BPE inner loop: open addressing (linear probing) over a
// power-of-two table, the full 64-bit hash kept beside each entry so that most misses never
// touch the key bytes. Keys are views; the strings they view must outlive the table.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace l4q {

class PieceTable {
 public:
  static uint64_t hash(std::string_view s) {
    // 8 bytes at a time, a multiply-xorshift mix (wyhash-like constants), length folded in.
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xff51afd7ed558ccdull);
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = mix(h ^ w);
    }
    if (i < s.size()) {
      uint64_t w = 0;
      std::memcpy(&w, s.data() + i, s.size() - i);
      h = mix(h ^ w);
    }
    return h;
  }

  // Returns false (and the id already stored in *existing) when `key` is present.
  bool insert(std::string_view key, int32_t id, int32_t* existing = nullptr) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    const uint64_t h = hash(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = Slot{h, key, id};
        ++size_;
        return true;
      }
      if (s.hash == h && s.key == key) {
        if (existing) *existing = s.id;
        return false;
      }
    }
  }

  // The id of `key`, or -1.
  int32_t find(std::string_view key) const {
    if (size_ == 0) return -1;
    const uint64_t h = hash(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.hash == h && s.key == key) return s.id;
    }
  }

  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    std::string_view key;
    int32_t id = -1;  // -1: empty
  };

  static uint64_t mix(uint64_t x) {
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 29);
  }

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, Slot{});
    mask_ = slots_.size() - 1;
    size_ = 0;
    for (const Slot& s : old)
      if (s.id >= 0) insert(s.key, s.id);
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace l4q
