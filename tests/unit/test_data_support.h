// A stand-in Tokenizer for the data tests: every byte is one token (id = byte + 3), after a
// greedy longest match over optional multi-byte pieces (ids from 259 up), so tests can build a
// tokenizer whose pieces would straddle a prompt/response boundary. unk 0, bos 1, eos 2.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "l4q/text/tokenizer.h"

namespace l4q::test {

class FakeTokenizer : public Tokenizer {
 public:
  explicit FakeTokenizer(std::vector<std::string> pieces = {}, int32_t bos = 1, int32_t eos = 2)
      : pieces_(std::move(pieces)), bos_(bos), eos_(eos) {}

  std::vector<int32_t> encode(const std::string& text, bool add_bos = false,
                              bool add_eos = false) const override {
    std::vector<int32_t> ids;
    if (add_bos && bos_ >= 0) ids.push_back(bos_);
    size_t i = 0;
    while (i < text.size()) {
      int32_t best = -1;
      size_t best_len = 1;
      for (size_t p = 0; p < pieces_.size(); ++p)
        if (pieces_[p].size() > best_len && text.compare(i, pieces_[p].size(), pieces_[p]) == 0) {
          best = static_cast<int32_t>(259 + p);
          best_len = pieces_[p].size();
        }
      ids.push_back(best >= 0 ? best : static_cast<int32_t>(static_cast<unsigned char>(text[i])) + 3);
      i += best_len;
    }
    if (add_eos && eos_ >= 0) ids.push_back(eos_);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (const auto id : ids) s += piece(id);
    return s;
  }
  std::string decode_stream(int32_t, int32_t id) const override { return piece(id); }
  int64_t vocab_size() const override { return 259 + static_cast<int64_t>(pieces_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t unk_id() const override { return 0; }
  std::string piece(int32_t id) const override {
    if (id >= 259) return pieces_[static_cast<size_t>(id - 259)];
    if (id >= 3) return std::string(1, static_cast<char>(id - 3));
    return "";
  }

 private:
  std::vector<std::string> pieces_;
  int32_t bos_, eos_;
};

// Byte ids of `s` as FakeTokenizer() encodes it.
inline std::vector<int32_t> byte_ids(const std::string& s) {
  std::vector<int32_t> ids;
  for (const unsigned char c : s) ids.push_back(static_cast<int32_t>(c) + 3);
  return ids;
}

// Writes `text` to a file under the test temp dir (named per process, so concurrent runs of
// the suite do not collide) and returns its path.
inline std::string write_temp(const std::string& name, const std::string& text) {
  const auto path =
      ::testing::TempDir() + "l4q_data_" + std::to_string(::getpid()) + "_" + name;
  std::ofstream(path, std::ios::binary) << text;
  // Removed when the process exits.
  static struct Cleanup {
    std::vector<std::string> paths;
    ~Cleanup() {
      for (const auto& p : paths) std::remove(p.c_str());
    }
  } cleanup;
  cleanup.paths.push_back(path);
  return path;
}

}  // namespace l4q::test
