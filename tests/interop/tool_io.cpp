// Helper for tests/interop/test_safetensors.py and test_gguf.py: reads or writes files with
// l4q's readers/writers and prints what it saw as JSON on stdout, for comparison with the
// Python reference packages (safetensors, gguf-py).
//
//   l4q_interop_io st-dump FILE      tensors (dtype, shape, values) and metadata of FILE
//   l4q_interop_io st-write FILE     writes one tensor of every dtype, prints them
//   l4q_interop_io gguf-dump FILE    metadata (type, value) and tensors (type, ne, offset, values)
//   l4q_interop_io gguf-write FILE   writes every metadata type and F32/F16/BF16/Q4_0/Q4_1/Q8_0
//                                    tensors, then prints gguf-dump of the written file
#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "l4q/io/gguf.h"
#include "l4q/io/safetensors.h"
#include "l4q/runtime.h"

using json = nlohmann::json;

namespace {

json values_of(const at::Tensor& t) {
  const auto flat = t.contiguous().view(-1);
  json v = json::array();
  if (t.is_floating_point()) {
    const auto d = flat.to(at::kDouble);
    for (int64_t i = 0; i < d.numel(); ++i) v.push_back(d.data_ptr<double>()[i]);
  } else {
    const auto d = flat.to(at::kLong);
    for (int64_t i = 0; i < d.numel(); ++i) v.push_back(d.data_ptr<int64_t>()[i]);
  }
  return v;
}

json dump_tensor(const std::string& dtype, const at::Tensor& t) {
  return {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"values", values_of(t)}};
}

json st_dump(const std::string& path) {
  const auto f = l4q::SafetensorsFile::open(path);
  json out = {{"metadata", f.metadata()}, {"tensors", json::object()}};
  for (const auto& info : f.tensors()) out["tensors"][info.name] = dump_tensor(l4q::to_string(info.dtype), f.tensor(info.name));
  return out;
}

l4q::NamedTensors every_dtype() {
  at::manual_seed(1234);
  l4q::NamedTensors t;
  t.emplace_back("w.f32", at::randn({3, 4}));
  t.emplace_back("w.f16", at::randn({2, 5}).to(at::kHalf));
  t.emplace_back("w.bf16", at::randn({6}).to(at::kBFloat16));
  t.emplace_back("w.f64", at::randn({2, 2}, at::kDouble));
  t.emplace_back("i.i8", at::randint(-128, 128, {5}, at::kChar));
  t.emplace_back("i.u8", at::randint(0, 256, {2, 3}, at::kByte));
  t.emplace_back("i.i16", at::randint(-32768, 32768, {4}, at::kShort));
  t.emplace_back("i.i32", at::randint(-1000000, 1000000, {3}, at::kInt));
  t.emplace_back("i.i64", at::randint(-(int64_t{1} << 50), int64_t{1} << 50, {3}, at::kLong));
  t.emplace_back("b.bool", at::randint(0, 2, {7}, at::kLong).to(at::kBool));
  t.emplace_back("z.scalar", at::scalar_tensor(-0.75f));
  t.emplace_back("z.empty", at::zeros({0, 3}));
  return t;
}

json scalar_json(const l4q::GgufValue::Scalar& s) {
  return std::visit([](const auto& v) -> json { return v; }, s);
}

json gguf_dump(const std::string& path) {
  const auto f = l4q::GgufFile::open(path);
  json meta = json::array();
  for (const auto& [k, v] : f.metadata()) {
    json e = {{"key", k}, {"type", l4q::to_string(v.type())}};
    if (v.is_array()) {
      e["element_type"] = l4q::to_string(v.element_type());
      json arr = json::array();
      for (const auto& s : v.elements()) arr.push_back(scalar_json(s));
      e["value"] = arr;
    } else {
      e["value"] = scalar_json(v.scalar());
    }
    meta.push_back(e);
  }
  json tensors = json::array();
  for (const auto& t : f.tensors())
    tensors.push_back({{"name", t.name},
                       {"type", l4q::to_string(t.type)},
                       {"ne", t.ne},
                       {"offset", f.data_offset() + t.offset},
                       {"nbytes", t.nbytes},
                       {"values", values_of(f.tensor_f32(t.name))}});
  return {{"version", f.version()}, {"alignment", f.alignment()}, {"metadata", meta}, {"tensors", tensors}};
}

void gguf_write(const std::string& path) {
  using l4q::GgufValue;
  l4q::GgufWriter w;
  w.set_scalar<std::string>("general.architecture", "llama");
  w.set_scalar<uint32_t>("general.alignment", 32);
  w.set_scalar<uint8_t>("test.u8", 250);
  w.set_scalar<int8_t>("test.i8", -120);
  w.set_scalar<uint16_t>("test.u16", 65000);
  w.set_scalar<int16_t>("test.i16", -32000);
  w.set_scalar<uint32_t>("test.u32", 4000000000u);
  w.set_scalar<int32_t>("test.i32", -2000000000);
  w.set_scalar<float>("test.f32", 0.1f);
  w.set_scalar<bool>("test.bool", true);
  w.set_scalar<std::string>("test.str", "\xe2\x96\x81hello <0x0A>");
  w.set_scalar<uint64_t>("test.u64", 18000000000000000000ull);
  w.set_scalar<int64_t>("test.i64", -9000000000000000000ll);
  w.set_scalar<double>("test.f64", 1.0 / 3.0);
  w.set("test.arr_str", GgufValue::array_of<std::string>({"<unk>", "<s>", "\xe2\x96\x81the", ""}));
  w.set("test.arr_f32", GgufValue::array_of<float>({0.0f, -1.5f, 3.25f}));
  w.set("test.arr_i32", GgufValue::array_of<int32_t>({1, 2, 3, 6}));
  w.set("test.arr_u8", GgufValue::array_of<uint8_t>({0, 255}));
  w.set("test.arr_bool", GgufValue::array_of<bool>({false, true, true}));
  w.set("test.arr_u64", GgufValue::array_of<uint64_t>({1ull << 63}));
  w.set("test.arr_f64", GgufValue::array_of<double>({-1e-300, 2.5}));
  w.set("test.arr_empty", GgufValue::array_of<int16_t>({}));
  at::manual_seed(99);
  w.add_tensor("t.f32", at::randn({3, 64}), l4q::GgmlType::F32);
  w.add_tensor("t.f16", at::randn({2, 32}), l4q::GgmlType::F16);
  w.add_tensor("t.bf16", at::randn({5}), l4q::GgmlType::BF16);
  // Quantized tensors, each with its F32 source ("src.<name>") so that a reader can requantize
  // the source with its own reference quantizer and compare bytes.
  const auto q40 = at::randn({4, 64}), q41 = at::randn({4, 64}) + 0.5, q80 = at::randn({2, 96}) * 3;
  w.add_tensor("t.q4_0", q40, l4q::GgmlType::Q4_0);
  w.add_tensor("t.q4_1", q41, l4q::GgmlType::Q4_1);
  w.add_tensor("t.q8_0", q80, l4q::GgmlType::Q8_0);
  w.add_tensor("src.t.q4_0", q40, l4q::GgmlType::F32);
  w.add_tensor("src.t.q4_1", q41, l4q::GgmlType::F32);
  w.add_tensor("src.t.q8_0", q80, l4q::GgmlType::F32);
  w.add_tensor("t.vec", at::arange(7, at::kFloat), l4q::GgmlType::F32);
  w.write(path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s st-dump|st-write|gguf-dump|gguf-write FILE\n", argv[0]);
    return 2;
  }
  try {
    l4q::init_runtime(1);
    const std::string cmd = argv[1], path = argv[2];
    json out;
    if (cmd == "st-dump") {
      out = st_dump(path);
    } else if (cmd == "st-write") {
      const auto ts = every_dtype();
      l4q::write_safetensors(path, ts, {{"source", "l4q"}});
      out = {{"tensors", json::object()}};
      for (const auto& [n, t] : ts) {
        const auto f = l4q::SafetensorsFile::open(path);
        out["tensors"][n] = dump_tensor(l4q::to_string(f.info(n).dtype), t);
      }
    } else if (cmd == "gguf-dump") {
      out = gguf_dump(path);
    } else if (cmd == "gguf-write") {
      gguf_write(path);
      out = gguf_dump(path);
    } else {
      std::fprintf(stderr, "unknown command '%s'\n", cmd.c_str());
      return 2;
    }
    std::cout << out.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "l4q_interop_io: %s\n", e.what());
    return 1;
  }
}
