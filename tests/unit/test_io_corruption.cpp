// Corruption test: valid files of every format, mutated at random (seeded), must either load
// correctly or throw l4q::Error; any other exception or a crash fails. Run it under
// AddressSanitizer/UBSan with tools/fuzz-asan.sh.
//
// Each case goes through the whole reading path: open + every tensor + metadata for the
// container readers, and load_checkpoint for the model formats.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "l4q/error.h"
#include "l4q/io/checkpoint.h"
#include "l4q/io/gguf.h"
#include "l4q/io/hf_config.h"
#include "l4q/io/llama2c.h"
#include "l4q/io/safetensors.h"
#include "test_io_support.h"

namespace l4q {
namespace {

using Bytes = std::vector<uint8_t>;

// One random mutation of `b`: bit flips, byte overwrites, "interesting" integers written over
// length/offset fields, truncation, insertion, deletion, duplication of a range.
Bytes mutate(Bytes b, std::mt19937_64& rng) {
  const auto pick = [&](uint64_t n) { return n == 0 ? uint64_t{0} : rng() % n; };
  const int kind = static_cast<int>(rng() % 7);
  if (b.empty()) return {static_cast<uint8_t>(rng())};
  switch (kind) {
    case 0:  // flip 1-4 bits
      for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n; ++i) b[pick(b.size())] ^= uint8_t(1u << (rng() % 8));
      break;
    case 1:  // random bytes
      for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n; ++i) b[pick(b.size())] = static_cast<uint8_t>(rng());
      break;
    case 2: {  // an interesting 1/2/4/8-byte integer at a random position
      static const uint64_t vals[] = {0, 1, 2, 7, 8, 31, 32, 63, 64, 255, 0x7fff, 0xffff, 0x7fffffff, 0xffffffff,
                                      0x80000000, 1ull << 32, 1ull << 40, 1ull << 62, 0x7fffffffffffffffull,
                                      0x8000000000000000ull, ~0ull, ~0ull - 7};
      uint64_t v = vals[pick(sizeof vals / sizeof vals[0])];
      if (rng() % 4 == 0) v = b.size() + pick(64) - 32;  // near the file size
      const size_t w = size_t{1} << (rng() % 4);
      const size_t at = pick(b.size());
      for (size_t i = 0; i < w && at + i < b.size(); ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
      break;
    }
    case 3:  // truncate
      b.resize(pick(b.size()));
      break;
    case 4: {  // insert random bytes
      Bytes ins(1 + pick(16));
      for (auto& x : ins) x = static_cast<uint8_t>(rng());
      b.insert(b.begin() + static_cast<int64_t>(pick(b.size() + 1)), ins.begin(), ins.end());
      break;
    }
    case 5: {  // delete a range
      const size_t at = pick(b.size()), n = 1 + pick(std::min<size_t>(32, b.size() - at));
      b.erase(b.begin() + static_cast<int64_t>(at), b.begin() + static_cast<int64_t>(std::min(b.size(), at + n)));
      break;
    }
    default: {  // duplicate a range
      const size_t at = pick(b.size()), n = 1 + pick(std::min<size_t>(32, b.size() - at));
      const Bytes r(b.begin() + static_cast<int64_t>(at), b.begin() + static_cast<int64_t>(std::min(b.size(), at + n)));
      b.insert(b.begin() + static_cast<int64_t>(pick(b.size() + 1)), r.begin(), r.end());
    }
  }
  return b;
}

// Touches every value, so a bad pointer or size would be read (and caught by ASan).
double touch(const at::Tensor& t) { return t.to(at::kDouble).nan_to_num(0, 0, 0).sum().item<double>(); }

struct Outcome {
  int loaded = 0, refused = 0;
};

// Runs `cases` mutations of `valid` through `read`; fails the test on anything but success or
// l4q::Error, naming the case so it can be replayed.
void fuzz(const std::string& what, const Bytes& valid, const std::string& path, int cases, uint64_t seed,
          const std::function<void(const std::string&)>& read, Outcome& out) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < cases; ++i) {
    Bytes b = mutate(valid, rng);
    if (rng() % 3 == 0) b = mutate(std::move(b), rng);  // sometimes two mutations
    test::write_bytes(path, b);
    try {
      read(path);
      ++out.loaded;
    } catch (const Error&) {
      ++out.refused;
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << " case " << i << " (seed " << seed << "): non-l4q exception: " << e.what();
    }
  }
  ::testing::Test::RecordProperty(what + " loaded", out.loaded);
  ::testing::Test::RecordProperty(what + " refused", out.refused);
}

class IoCorruption : public ::testing::Test {
 protected:
  test::TempDir dir{/*in_memory=*/true};
  // Keeps the suite well under ~10 s in a Release build (and runnable under ASan).
  static constexpr int kCases = 1500;
};

TEST_F(IoCorruption, Safetensors) {
  NamedTensors ts;
  at::manual_seed(1);
  ts.emplace_back("a", at::randn({4, 3}));
  ts.emplace_back("b", at::randn({5}).to(at::kBFloat16));
  ts.emplace_back("c", at::randint(0, 100, {3}, at::kLong));
  ts.emplace_back("d", at::randn({2, 2}).to(at::kHalf));
  ts.emplace_back("e", at::zeros({0}));
  ts.emplace_back("f", at::tensor({1, 0, 1}).to(at::kBool));
  write_safetensors(dir.file("v.safetensors"), ts, {{"k", "v"}});
  Outcome o;
  fuzz("safetensors", test::read_bytes(dir.file("v.safetensors")), dir.file("m.safetensors"), kCases, 101,
       [](const std::string& p) {
         const auto f = SafetensorsFile::open(p);
         for (const auto& t : f.tensors()) {
           const auto d = safetensors_dtype_bits(t.dtype);
           if (t.dtype == SafetensorsDtype::U16 || t.dtype == SafetensorsDtype::U32 ||
               t.dtype == SafetensorsDtype::U64 || d < 8 || (d == 8 && t.dtype != SafetensorsDtype::U8 &&
                                                             t.dtype != SafetensorsDtype::I8 &&
                                                             t.dtype != SafetensorsDtype::BOOL)) {
             EXPECT_THROW(f.tensor(t.name), Error);
             continue;
           }
           const auto x = f.tensor(t.name);
           EXPECT_EQ(static_cast<uint64_t>(x.numel()) * x.element_size(), t.nbytes());
           if (x.scalar_type() != at::kComplexFloat) touch(f.tensor_f32(t.name));
         }
       },
       o);
  EXPECT_GT(o.refused, kCases / 2);  // most mutations must be caught...
  EXPECT_GT(o.loaded, 0);            // ...while harmless ones (e.g. in data bytes) still load
}

TEST_F(IoCorruption, Gguf) {
  auto ck = test::random_checkpoint(test::tiny_config(false), 2);
  GgufWriter w;
  add_llama_metadata(w, ck.config);
  w.set("tokenizer.ggml.tokens", GgufValue::array_of<std::string>({"<unk>", "<s>", "</s>", "a", "bb"}));
  w.set("tokenizer.ggml.scores", GgufValue::array_of<float>({0, 0, 0, -1, -2}));
  w.set_scalar<bool>("x.flag", true);
  w.set_scalar<double>("x.f64", 2.5);
  w.add_tensor("f32", at::randn({2, 32}), GgmlType::F32);
  w.add_tensor("f16", at::randn({32}), GgmlType::F16);
  w.add_tensor("q40", at::randn({2, 32}), GgmlType::Q4_0);
  w.add_tensor("q41", at::randn({32}), GgmlType::Q4_1);
  w.add_tensor("q80", at::randn({1, 32}), GgmlType::Q8_0);
  w.add_tensor("bf", at::randn({3}), GgmlType::BF16);
  w.write(dir.file("v.gguf"));
  Outcome o;
  fuzz("gguf", test::read_bytes(dir.file("v.gguf")), dir.file("m.gguf"), kCases, 202,
       [](const std::string& p) {
         const auto f = GgufFile::open(p);
         for (const auto& [k, v] : f.metadata()) (void)v.to_string();
         for (const auto& t : f.tensors()) {
           if (ggml_traits(t.type).to_float == nullptr) {
             EXPECT_THROW(f.tensor_f32(t.name), Error);
             continue;
           }
           const auto x = f.tensor_f32(t.name);
           EXPECT_EQ(x.numel(), t.numel());
           touch(x);
         }
       },
       o);
  EXPECT_GT(o.refused, kCases / 3);
  EXPECT_GT(o.loaded, 0);
}

TEST_F(IoCorruption, GgufModel) {
  const auto ck = test::random_checkpoint(test::tiny_config(true), 3);
  test::write_llama_gguf(dir.file("v.gguf"), ck, GgmlType::Q8_0);
  Outcome o;
  fuzz("gguf_model", test::read_bytes(dir.file("v.gguf")), dir.file("m.gguf"), kCases / 2, 303,
       [](const std::string& p) {
         const auto c = load_checkpoint(p);
         for (const auto& nt : c.tensors) touch(nt.second);
       },
       o);
  EXPECT_GT(o.refused, 0);
  EXPECT_GT(o.loaded, 0);
}

TEST_F(IoCorruption, Llama2c) {
  const auto ck = test::random_checkpoint(test::tiny_config(false), 4);
  test::write_llama2c(dir.file("v.bin"), ck, 8);
  Outcome o;
  fuzz("llama2c", test::read_bytes(dir.file("v.bin")), dir.file("m.bin"), kCases / 2, 404,
       [](const std::string& p) {
         const auto c = load_checkpoint(p);
         for (const auto& nt : c.tensors) touch(nt.second);
       },
       o);
  EXPECT_GT(o.refused, 0);
  EXPECT_GT(o.loaded, 0);
}

TEST_F(IoCorruption, HfDirectory) {
  const auto ck = test::random_checkpoint(test::tiny_config(false), 5);
  save_hf_directory(ck, dir.path());
  const auto cfg = test::read_bytes(dir.file("config.json"));
  const auto st = test::read_bytes(dir.file("model.safetensors"));
  Outcome o;
  const auto load = [&](const std::string&) {
    const auto c = load_checkpoint(dir.path());
    for (const auto& nt : c.tensors) touch(nt.second);
  };
  fuzz("config_json", cfg, dir.file("config.json"), kCases / 2, 505, load, o);
  test::write_bytes(dir.file("config.json"), cfg);
  fuzz("model_safetensors", st, dir.file("model.safetensors"), kCases / 2, 606, load, o);
  EXPECT_GT(o.refused, kCases / 4);
  EXPECT_GT(o.loaded, 0);
}

}  // namespace
}  // namespace l4q
