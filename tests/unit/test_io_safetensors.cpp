// safetensors reader/writer: exact layout of the reference writer, every dtype round trip,
// zero-copy views, sharding, and each validation rule with its message.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "l4q/io/safetensors.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::expect_error;
using test::safetensors_bytes;
using test::TempDir;

NamedTensors every_dtype() {
  at::manual_seed(7);
  NamedTensors t;
  t.emplace_back("f32", at::randn({3, 5}));
  t.emplace_back("f16", at::randn({4, 2}).to(at::kHalf));
  t.emplace_back("bf16", at::randn({7}).to(at::kBFloat16));
  t.emplace_back("f64", at::randn({2, 2, 2}, at::kDouble));
  t.emplace_back("i8", at::randint(-128, 127, {9}, at::kChar));
  t.emplace_back("u8", at::randint(0, 255, {3, 3}, at::kByte));
  t.emplace_back("i16", at::randint(-30000, 30000, {5}, at::kShort));
  t.emplace_back("i32", at::randint(-100000, 100000, {2, 3}, at::kInt));
  t.emplace_back("i64", at::randint(-(int64_t{1} << 40), int64_t{1} << 40, {4}, at::kLong));
  t.emplace_back("bool", at::randint(0, 2, {6}, at::kLong).to(at::kBool));
  t.emplace_back("scalar", at::scalar_tensor(2.5f));
  t.emplace_back("empty", at::zeros({0, 4}));
  t.emplace_back("a_noncontig", at::randn({4, 6}).t());
  return t;
}

TEST(Safetensors, RoundTripsEveryDtype) {
  TempDir dir;
  const auto tensors = every_dtype();
  write_safetensors(dir.file("x.safetensors"), tensors, {{"note", "hi"}});
  const auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hi"}}));
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const auto got = f.tensor(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(got, t)) << name;
  }
  EXPECT_TRUE(at::equal(f.tensor_f32("bf16"), tensors[2].second.to(at::kFloat)));
  EXPECT_EQ(f.tensor_f32("f16").scalar_type(), at::kFloat);
}

TEST(Safetensors, WritesTheReferenceLayout) {
  TempDir dir;
  write_safetensors(dir.file("x.safetensors"), every_dtype());
  const auto bytes = test::read_bytes(dir.file("x.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(n));
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\"},", 0), 0u) << header;
  EXPECT_EQ(header.find_first_not_of(' ', header.rfind('}') + 1), std::string::npos);  // space padding
  // Offsets in write order: descending dtype size, then name; contiguous; end == file end.
  const auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  std::vector<std::string> order;
  uint64_t end = 0;
  int prev_bits = 1000;
  std::string prev_name;
  for (const auto& t : f.tensors()) {
    const int bits = safetensors_dtype_bits(t.dtype);
    EXPECT_TRUE(bits < prev_bits || (bits == prev_bits && t.name > prev_name)) << t.name;
    EXPECT_EQ(t.begin, end);
    EXPECT_EQ((8 + n + t.begin) % (bits / 8), 0u) << t.name << " is misaligned";
    end = t.end;
    prev_bits = bits;
    prev_name = t.name;
  }
  EXPECT_EQ(8 + n + end, bytes.size());
  EXPECT_EQ(f.tensors().front().name, "f64");
  // The JSON itself: data_offsets key, shape order.
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["a_noncontig"]["shape"], nlohmann::json({6, 4}));
  EXPECT_EQ(j["scalar"]["shape"], nlohmann::json::array());
  EXPECT_EQ(j["bf16"]["dtype"], "BF16");
}

TEST(Safetensors, TensorsAreZeroCopyAndCopyOnWrite) {
  TempDir dir;
  const auto w = at::arange(16, at::kFloat).view({4, 4});
  write_safetensors(dir.file("x.safetensors"), {{"w", w}});
  at::Tensor view;
  {
    const auto f = SafetensorsFile::open(dir.file("x.safetensors"));
    view = f.tensor("w");
    EXPECT_EQ(view.data_ptr(), f.tensor("w").data_ptr());  // the same mapped bytes
    EXPECT_EQ(static_cast<const void*>(f.data(f.info("w"))), view.data_ptr());
  }
  EXPECT_TRUE(at::equal(view, w));  // outlives the SafetensorsFile
  view.add_(1);                     // private pages: the file is unchanged
  EXPECT_TRUE(at::equal(SafetensorsFile::open(dir.file("x.safetensors")).tensor("w"), w));
}

TEST(Safetensors, ReadsMisalignedDataByCopying) {
  TempDir dir;
  // A 1-byte U8 tensor first puts the F32 tensor at an odd address (legal in the format).
  std::vector<uint8_t> data{42};
  const float vals[2] = {1.5f, -2.25f};
  const auto* p = reinterpret_cast<const uint8_t*>(vals);
  data.insert(data.end(), p, p + 8);
  test::write_bytes(dir.file("m.safetensors"),
                    safetensors_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})",
                                      data));
  const auto f = SafetensorsFile::open(dir.file("m.safetensors"));
  EXPECT_EQ(f.tensor("a").item<uint8_t>(), 42);
  const auto b = f.tensor("b");
  EXPECT_EQ(b[0].item<float>(), 1.5f);
  EXPECT_EQ(b[1].item<float>(), -2.25f);
}

TEST(Safetensors, ReadsAllSpecDtypesAndRefusesOnlyUnmappedOnes) {
  TempDir dir;
  // U16 is valid in the format but has no ATen dtype in LibTorch 1.13.
  test::write_bytes(dir.file("u.safetensors"),
                    safetensors_bytes(R"({"u":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}})", {1, 0, 2, 0}));
  const auto f = SafetensorsFile::open(dir.file("u.safetensors"));
  EXPECT_EQ(f.info("u").dtype, SafetensorsDtype::U16);
  expect_error([&] { f.tensor("u"); }, {"u.safetensors", "tensor 'u'", "U16"});
  expect_error([&] { f.tensor("nope"); }, {"no tensor named 'nope'"});
  test::write_bytes(dir.file("b.safetensors"),
                    safetensors_bytes(R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", {1, 0, 2}));
  expect_error([&] { SafetensorsFile::open(dir.file("b.safetensors")).tensor("b"); },
               {"tensor 'b': BOOL element 2 is 2, expected 0 or 1"});
}

struct BadCase {
  const char* what;
  std::vector<uint8_t> bytes;
  std::vector<std::string> fragments;
};

std::vector<uint8_t> bytes_of(const std::string& header, size_t data_bytes) {
  return safetensors_bytes(header, std::vector<uint8_t>(data_bytes, 0));
}

TEST(Safetensors, RefusesEveryMalformedFileWithAClearMessage) {
  std::vector<uint8_t> huge_len, past_eof;
  test::put<uint64_t>(huge_len, 100'000'001);
  huge_len.resize(64, ' ');
  test::put<uint64_t>(past_eof, 500);
  for (char ch : std::string("{}")) past_eof.push_back(static_cast<uint8_t>(ch));
  const std::string t = R"("dtype":"F32","shape":[2])";
  const std::vector<BadCase> cases = {
      {"empty", {}, {"too short for the 8-byte header length"}},
      {"truncated length", {1, 2, 3}, {"too short"}},
      {"huge header", huge_len, {"header length 100000001 exceeds the maximum 100000000"}},
      {"header past EOF", past_eof, {"header length 500 runs past the end of the file (10 bytes)"}},
      {"bad json", bytes_of(R"({"a": {)", 0), {"header is not valid JSON"}},
      {"not an object", bytes_of("[1,2]", 0), {"expected a JSON object, got array"}},
      {"unknown dtype", bytes_of(R"({"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "unknown dtype 'F17'"}},
      {"numel mismatch", bytes_of(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "shape [3] needs 12 bytes", "span 8"}},
      {"overlap",
       bytes_of(R"({"a":{)" + t + R"(,"data_offsets":[0,8]},"b":{)" + t + R"(,"data_offsets":[4,12]}})", 12),
       {"tensor 'b'", "data_offsets [4, 12] overlaps tensor 'a' which ends at 8"}},
      {"gap",
       bytes_of(R"({"a":{)" + t + R"(,"data_offsets":[0,8]},"b":{)" + t + R"(,"data_offsets":[12,20]}})", 20),
       {"tensor 'b'", "leaves a gap: expected begin 8 (end of tensor 'a')"}},
      {"gap at start", bytes_of(R"({"a":{)" + t + R"(,"data_offsets":[4,12]}})", 12),
       {"tensor 'a'", "expected begin 0 (start of the data)"}},
      {"trailing bytes", bytes_of(R"({"a":{)" + t + R"(,"data_offsets":[0,8]}})", 11), {"3 trailing bytes"}},
      {"truncated data", bytes_of(R"({"a":{)" + t + R"(,"data_offsets":[0,8]}})", 5),
       {"tensor 'a'", "past the end of the data buffer (5 bytes)"}},
      {"end before begin", bytes_of(R"({"a":{)" + t + R"(,"data_offsets":[8,0]}})", 8), {"end before begin"}},
      {"duplicate",
       bytes_of(R"({"a":{)" + t + R"(,"data_offsets":[0,8]},"a":{)" + t + R"(,"data_offsets":[8,16]}})", 16),
       {"duplicate key 'a'"}},
      {"negative dim", bytes_of(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "shape: expected a non-negative integer, got -2"}},
      {"float offset", bytes_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})", 8),
       {"data_offsets: expected a non-negative integer"}},
      {"three offsets", bytes_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", 8),
       {"expected 'data_offsets' [begin, end]"}},
      {"no dtype", bytes_of(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), {"missing string field 'dtype'"}},
      {"entry not object", bytes_of(R"({"a":[1]})", 0), {"tensor 'a': expected an object, got array"}},
      {"metadata value", bytes_of(R"({"__metadata__":{"format":1}})", 0),
       {"__metadata__ 'format': expected a string, got number"}},
      {"metadata list", bytes_of(R"({"__metadata__":["pt"]})", 0), {"__metadata__: expected an object of strings"}},
      {"numel overflow",
       bytes_of(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       {"element count overflows"}},
      {"sub-byte", bytes_of(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2),
       {"3 elements of 4 bits are not a whole number of bytes"}},
      {"deep nesting", bytes_of(std::string(40, '[') + std::string(40, ']'), 0), {"nests deeper than 16"}},
  };
  TempDir dir;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto path = dir.file("bad.safetensors");
    test::write_bytes(path, c.bytes);
    auto frags = c.fragments;
    frags.push_back("bad.safetensors");
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "expected l4q::Error";
    } catch (const Error& e) {
      for (const auto& fr : frags) EXPECT_NE(std::string(e.what()).find(fr), std::string::npos) << e.what();
    }
  }
  // A tiny valid file with padding spaces and a null __metadata__ still opens.
  test::write_bytes(dir.file("ok.safetensors"), bytes_of(R"({"__metadata__":null,"a":{)" + t + R"(,"data_offsets":[0,8]}}   )", 8));
  EXPECT_EQ(SafetensorsFile::open(dir.file("ok.safetensors")).tensors().size(), 1u);
}

TEST(Safetensors, WriterRefusesBadInputBeforeWriting) {
  TempDir dir;
  const auto path = dir.file("w.safetensors");
  expect_error([&] { write_safetensors(path, {{"a", at::zeros({2})}, {"a", at::zeros({2})}}); },
               {"duplicate tensor name 'a'"});
  expect_error([&] { write_safetensors(path, {{"", at::zeros({2})}}); }, {"tensor name ''"});
  expect_error([&] { write_safetensors(path, {{"__metadata__", at::zeros({2})}}); }, {"'__metadata__'"});
  expect_error([&] { write_safetensors(path, {{"c", at::zeros({2}, at::kComplexDouble)}}); },
               {"tensor 'c'", "cannot be stored"});
  expect_error([&] { write_safetensors(path, {{"u", at::Tensor()}}); }, {"tensor 'u' is undefined"});
  // Nothing was left behind, not even a temporary file.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Safetensors, AtomicWriteKeepsOldFileReadable) {
  TempDir dir;
  const auto path = dir.file("x.safetensors");
  write_safetensors(path, {{"w", at::ones({1000})}});
  const auto old = SafetensorsFile::open(path);
  const auto view = old.tensor("w");
  write_safetensors(path, {{"w", at::zeros({10})}});  // replaces the file by rename
  EXPECT_EQ(view.sum().item<float>(), 1000.f);          // the old mapping is intact
  EXPECT_EQ(SafetensorsFile::open(path).info("w").shape, std::vector<int64_t>{10});
}

TEST(Safetensors, ShardsLikeHuggingFace) {
  TempDir dir;
  NamedTensors ts;
  for (int i = 0; i < 5; ++i) ts.emplace_back("t" + std::to_string(i), at::full({25}, float(i)));  // 100 B each
  ts.emplace_back("big", at::ones({100}));                                                          // 400 B
  ts.emplace_back("h", at::ones({10}, at::kHalf));                                                 // 20 B
  const auto files = write_safetensors_sharded(dir.path(), ts, 250);
  // t0 t1 | t2 t3 | t4 | big (oversized, alone) | h
  const std::vector<std::string> want = {"model-00001-of-00005.safetensors", "model-00002-of-00005.safetensors",
                                         "model-00003-of-00005.safetensors", "model-00004-of-00005.safetensors",
                                         "model-00005-of-00005.safetensors", "model.safetensors.index.json"};
  EXPECT_EQ(files, want);
  const auto idx = nlohmann::json::parse(test::read_text(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(idx["metadata"]["total_size"], 5 * 100 + 400 + 20);
  EXPECT_EQ(idx["weight_map"]["t3"], "model-00002-of-00005.safetensors");
  EXPECT_EQ(idx["weight_map"]["big"], "model-00004-of-00005.safetensors");
  EXPECT_EQ(idx["weight_map"]["h"], "model-00005-of-00005.safetensors");
  const auto s = ShardedSafetensors::open_index(dir.file("model.safetensors.index.json"));
  EXPECT_EQ(s.names().size(), ts.size());
  EXPECT_EQ(s.shards().size(), 5u);
  for (const auto& [name, t] : ts) EXPECT_TRUE(at::equal(s.file_of(name).tensor(name), t)) << name;
  EXPECT_FALSE(std::filesystem::exists(dir.file("model.safetensors")));

  // Everything fits: one model.safetensors, and the stale index is removed.
  EXPECT_EQ(write_safetensors_sharded(dir.path(), ts, 1 << 20), std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(SafetensorsFile::open(dir.file("model.safetensors")).tensors().size(), ts.size());
}

TEST(Safetensors, ShardIndexIsValidated) {
  TempDir dir;
  write_safetensors(dir.file("a.safetensors"), {{"x", at::zeros({2})}, {"y", at::zeros({2})}});
  const auto idx = dir.file("model.safetensors.index.json");
  test::write_text(idx, R"({"weight_map": {"x": "a.safetensors"}})");
  expect_error([&] { ShardedSafetensors::open_index(idx); }, {"tensor 'y' is not listed in"});
  test::write_text(idx, R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "a.safetensors"}})");
  expect_error([&] { ShardedSafetensors::open_index(idx); }, {"tensor 'z' is mapped to a.safetensors"});
  test::write_text(idx, R"({"weight_map": {"x": "../a.safetensors"}})");
  expect_error([&] { ShardedSafetensors::open_index(idx); }, {"'../a.safetensors' is not a file name"});
  test::write_text(idx, R"({"weight_map": {"x": 3}})");
  expect_error([&] { ShardedSafetensors::open_index(idx); }, {"weight_map 'x': expected a file name"});
  test::write_text(idx, R"({"metadata": {}})");
  expect_error([&] { ShardedSafetensors::open_index(idx); }, {"missing object 'weight_map'"});
  test::write_text(idx, R"({"weight_map": {"x": "missing.safetensors"}})");
  expect_error([&] { ShardedSafetensors::open_index(idx); }, {"missing.safetensors", "cannot open"});
  write_safetensors(dir.file("b.safetensors"), {{"x", at::zeros({2})}});
  test::write_text(idx, R"({"weight_map": {"x": "b.safetensors", "y": "a.safetensors"}})");
  expect_error([&] { ShardedSafetensors::open_index(idx); }, {"a.safetensors: tensor 'x' is also stored in", "b.safetensors"});
}

}  // namespace
}  // namespace l4q
