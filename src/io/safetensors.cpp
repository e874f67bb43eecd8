#include "l4q/io/safetensors.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "io/mapped_file.h"
#include "l4q/error.h"
#include "quant/tensor_checks.h"
#include "l4q/io/atomic_file.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "l4q reads little-endian files in place");

namespace l4q {

using json = nlohmann::json;

namespace {

using detail::shape_str;

constexpr uint64_t kMaxHeaderSize = 100'000'000;  // safetensors MAX_HEADER_SIZE

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  int bits;
  c10::optional<at::ScalarType> aten;
};

const DtypeInfo kDtypes[] = {
    {SafetensorsDtype::BOOL, "BOOL", 8, at::kBool},
    {SafetensorsDtype::F4, "F4", 4, c10::nullopt},
    {SafetensorsDtype::F6_E2M3, "F6_E2M3", 6, c10::nullopt},
    {SafetensorsDtype::F6_E3M2, "F6_E3M2", 6, c10::nullopt},
    {SafetensorsDtype::U8, "U8", 8, at::kByte},
    {SafetensorsDtype::I8, "I8", 8, at::kChar},
    {SafetensorsDtype::F8_E5M2, "F8_E5M2", 8, c10::nullopt},
    {SafetensorsDtype::F8_E4M3, "F8_E4M3", 8, c10::nullopt},
    {SafetensorsDtype::F8_E8M0, "F8_E8M0", 8, c10::nullopt},
    {SafetensorsDtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8, c10::nullopt},
    {SafetensorsDtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8, c10::nullopt},
    {SafetensorsDtype::I16, "I16", 16, at::kShort},
    {SafetensorsDtype::U16, "U16", 16, c10::nullopt},
    {SafetensorsDtype::F16, "F16", 16, at::kHalf},
    {SafetensorsDtype::BF16, "BF16", 16, at::kBFloat16},
    {SafetensorsDtype::I32, "I32", 32, at::kInt},
    {SafetensorsDtype::U32, "U32", 32, c10::nullopt},
    {SafetensorsDtype::F32, "F32", 32, at::kFloat},
    {SafetensorsDtype::C64, "C64", 64, at::kComplexFloat},
    {SafetensorsDtype::F64, "F64", 64, at::kDouble},
    {SafetensorsDtype::I64, "I64", 64, at::kLong},
    {SafetensorsDtype::U64, "U64", 64, c10::nullopt},
};

const DtypeInfo& dtype_info(SafetensorsDtype d) { return kDtypes[static_cast<int>(d)]; }

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_of(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.aten && *d.aten == t) return &d;
  return nullptr;
}

// Parses the header JSON, refusing duplicate keys (nlohmann keeps the last one silently) and
// nesting deeper than any valid header needs.
json parse_header_json(const std::string& text, const std::string& path) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (depth > 16) fail(path, ": header JSON nests deeper than 16 levels");
    if (ev == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (ev == json::parse_event_t::key && !open_objects.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, cb);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  if (!duplicate.empty()) fail(path, ": header: duplicate key '", duplicate, "'");
  if (!j.is_object()) fail(path, ": header: expected a JSON object, got ", j.type_name());
  return j;
}

uint64_t as_u64(const json& v, const std::string& path, const std::string& name, const char* field) {
  if (!v.is_number_unsigned())
    fail(path, ": tensor '", name, "': ", field, ": expected a non-negative integer, got ", v.dump());
  return v.get<uint64_t>();
}

SafetensorsTensorInfo parse_entry(const std::string& name, const json& v, const std::string& path) {
  if (!v.is_object()) fail(path, ": tensor '", name, "': expected an object, got ", v.type_name());
  SafetensorsTensorInfo info;
  info.name = name;
  const auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) fail(path, ": tensor '", name, "': missing string field 'dtype'");
  const auto* d = find_dtype(dt->get_ref<const std::string&>());
  if (d == nullptr) fail(path, ": tensor '", name, "': unknown dtype '", dt->get_ref<const std::string&>(), "'");
  info.dtype = d->dtype;
  const auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) fail(path, ": tensor '", name, "': missing array field 'shape'");
  for (const auto& e : *sh) {
    const uint64_t dim = as_u64(e, path, name, "shape");
    if (dim > static_cast<uint64_t>(INT64_MAX)) fail(path, ": tensor '", name, "': shape dimension ", dim, " too large");
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  const auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2)
    fail(path, ": tensor '", name, "': expected 'data_offsets' [begin, end]");
  info.begin = as_u64((*off)[0], path, name, "data_offsets");
  info.end = as_u64((*off)[1], path, name, "data_offsets");
  return info;
}

// Bytes of `shape` elements of `bits` each; throws naming the tensor on overflow or when the
// bit count is not whole bytes.
uint64_t byte_size(const std::vector<int64_t>& shape, int bits, const std::string& where) {
  uint64_t n = 1;
  for (const int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) fail(where, ": element count overflows");
  uint64_t b = 0;
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(bits), &b)) fail(where, ": bit count overflows");
  if (b % 8 != 0) fail(where, ": ", n, " elements of ", bits, " bits are not a whole number of bytes");
  return b / 8;
}

}  // namespace

std::string to_string(SafetensorsDtype dtype) { return dtype_info(dtype).name; }
int safetensors_dtype_bits(SafetensorsDtype dtype) { return dtype_info(dtype).bits; }

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

struct SafetensorsFile::Impl {
  std::shared_ptr<const detail::MappedFile> file;
  uint64_t data_start = 0;
  std::vector<SafetensorsTensorInfo> tensors;
  std::map<std::string, size_t> index;
  std::map<std::string, std::string> metadata;
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->file = detail::MappedFile::open(path);
  const uint64_t size = impl->file->size();
  if (size < 8) fail(path, ": file of ", size, " bytes is too short for the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, impl->file->data(), 8);
  if (n > kMaxHeaderSize) fail(path, ": header length ", n, " exceeds the maximum ", kMaxHeaderSize);
  if (n > size - 8) fail(path, ": header length ", n, " runs past the end of the file (", size, " bytes)");
  impl->data_start = 8 + n;
  const std::string text(reinterpret_cast<const char*>(impl->file->data()) + 8, n);
  const json header = parse_header_json(text, path);

  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (v.is_null()) continue;
      if (!v.is_object()) fail(path, ": __metadata__: expected an object of strings, got ", v.type_name());
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string())
          fail(path, ": __metadata__ '", k, "': expected a string, got ", s.type_name(), " ", s.dump());
        impl->metadata[k] = s.get<std::string>();
      }
      continue;
    }
    impl->tensors.push_back(parse_entry(name, v, path));
  }

  // The reference reader's validate(): sorted by offsets, each tensor starts where the
  // previous ended, its byte size matches dtype x shape, and the last ends the file.
  auto& ts = impl->tensors;
  std::sort(ts.begin(), ts.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t buffer = size - impl->data_start;
  uint64_t expected_begin = 0;
  const SafetensorsTensorInfo* prev = nullptr;
  for (const auto& t : ts) {
    const std::string where = path + ": tensor '" + t.name + "'";
    const std::string offs = "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
    if (t.end < t.begin) fail(where, ": ", offs, ": end before begin");
    if (t.begin < expected_begin)
      fail(where, ": ", offs, " overlaps tensor '", prev->name, "' which ends at ", expected_begin);
    if (t.begin > expected_begin)
      fail(where, ": ", offs, " leaves a gap: expected begin ", expected_begin,
           prev ? " (end of tensor '" + prev->name + "')" : std::string(" (start of the data)"));
    const uint64_t want = byte_size(t.shape, dtype_info(t.dtype).bits, where);
    if (t.end - t.begin != want)
      fail(where, ": dtype ", to_string(t.dtype), " shape ", shape_str(t.shape), " needs ", want,
           " bytes, but ", offs, " span ", t.end - t.begin);
    if (t.end > buffer)
      fail(where, ": ", offs, " past the end of the data buffer (", buffer, " bytes)");
    expected_begin = t.end;
    prev = &t;
  }
  if (expected_begin != buffer)
    fail(path, ": tensors end at data offset ", expected_begin, " but the data buffer has ", buffer,
         " bytes (", buffer - expected_begin, " trailing bytes)");
  for (size_t i = 0; i < ts.size(); ++i) impl->index.emplace(ts[i].name, i);

  SafetensorsFile f;
  f.impl_ = std::move(impl);
  return f;
}

const std::string& SafetensorsFile::path() const { return impl_->file->path(); }
const std::vector<SafetensorsTensorInfo>& SafetensorsFile::tensors() const { return impl_->tensors; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->metadata; }

const SafetensorsTensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto* t = find(name);
  if (t == nullptr) fail(path(), ": no tensor named '", name, "'");
  return *t;
}

const uint8_t* SafetensorsFile::data(const SafetensorsTensorInfo& info) const {
  return impl_->file->data() + impl_->data_start + info.begin;
}

void SafetensorsFile::release(const SafetensorsTensorInfo& info) const {
  impl_->file->release(impl_->data_start + info.begin, info.nbytes());
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto& t = info(name);
  const auto& d = dtype_info(t.dtype);
  if (!d.aten)
    fail(path(), ": tensor '", name, "': dtype ", d.name, " has no ATen equivalent; cannot be loaded");
  const auto opts = at::TensorOptions().dtype(*d.aten);
  const uint8_t* p = data(t);
  const size_t elem = static_cast<size_t>(d.bits / 8);
  if (t.nbytes() == 0) return at::empty(t.shape, opts);
  if (t.dtype == SafetensorsDtype::BOOL)  // any other byte is undefined behaviour for bool
    for (uint64_t i = 0; i < t.nbytes(); ++i)
      if (p[i] > 1) fail(path(), ": tensor '", name, "': BOOL element ", i, " is ", int(p[i]), ", expected 0 or 1");
  if (reinterpret_cast<uintptr_t>(p) % elem != 0) {
    auto out = at::empty(t.shape, opts);
    std::memcpy(out.data_ptr(), p, t.nbytes());
    return out;
  }
  auto keep = impl_;  // the tensor keeps the mapping alive
  return at::from_blob(const_cast<uint8_t*>(p), t.shape, [keep](void*) {}, opts);
}

at::Tensor SafetensorsFile::tensor_f32(const std::string& name) const {
  auto t = tensor(name);
  return t.scalar_type() == at::kFloat ? t : t.to(at::kFloat);
}

uint64_t safetensors_nbytes(const at::Tensor& t) {
  const auto* d = dtype_of(t.scalar_type());
  if (d == nullptr) fail("safetensors: dtype ", t.scalar_type(), " cannot be stored");
  return static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(d->bits / 8);
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  struct Entry {
    const std::string* name;
    const at::Tensor* t;
    const DtypeInfo* d;
  };
  std::vector<Entry> entries;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") fail(path, ": tensor name '", name, "' is not allowed");
    if (!seen.insert(name).second) fail(path, ": duplicate tensor name '", name, "'");
    if (!t.defined()) fail(path, ": tensor '", name, "' is undefined");
    const auto* d = dtype_of(t.scalar_type());
    if (d == nullptr) fail(path, ": tensor '", name, "': dtype ", t.scalar_type(), " cannot be stored");
    entries.push_back({&name, &t, d});
  }
  // Largest dtype first keeps every tensor naturally aligned with no padding in between.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.d->bits != b.d->bits ? a.d->bits > b.d->bits : *a.name < *b.name;
  });

  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");
  std::string header = "{\"__metadata__\":" + json(meta).dump();
  uint64_t offset = 0;
  for (const auto& e : entries) {
    const uint64_t nb = static_cast<uint64_t>(e.t->numel()) * static_cast<uint64_t>(e.d->bits / 8);
    header += "," + json(*e.name).dump() + ":{\"dtype\":\"" + e.d->name + "\",\"shape\":" +
              json(e.t->sizes().vec()).dump() + ",\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + nb) + "]}";
    offset += nb;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kMaxHeaderSize) fail(path, ": header of ", header.size(), " bytes exceeds ", kMaxHeaderSize);

  AtomicFile out(path);
  const uint64_t n = header.size();
  out.write(&n, 8);
  out.write(header);
  for (const auto& e : entries) {
    const auto c = e.t->cpu().contiguous();
    out.write(c.data_ptr(), static_cast<size_t>(c.numel()) * static_cast<size_t>(e.d->bits / 8));
  }
  out.commit();
}

std::vector<std::string> write_safetensors_sharded(const std::string& dir, const NamedTensors& tensors,
                                                   uint64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata) {
  // huggingface_hub split_torch_state_dict_into_shards: in order, start a new shard when the
  // next tensor would overflow the current one; an oversized tensor gets a shard of its own.
  std::vector<NamedTensors> shards;
  uint64_t current = 0, total = 0;
  for (const auto& nt : tensors) {
    if (!nt.second.defined()) fail(dir, ": tensor '", nt.first, "' is undefined");
    const uint64_t nb = safetensors_nbytes(nt.second);
    total += nb;
    if (nb > max_shard_bytes) {
      shards.push_back({nt});
      current = max_shard_bytes;  // nothing more fits after an oversized tensor
      continue;
    }
    if (shards.empty() || current + nb > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(nt);
    current += nb;
  }
  if (shards.empty()) shards.emplace_back();

  const std::string single = dir + "/model.safetensors";
  const std::string index = dir + "/model.safetensors.index.json";
  std::vector<std::string> written;
  if (shards.size() == 1) {
    write_safetensors(single, shards[0], metadata);
    std::remove(index.c_str());
    written.push_back("model.safetensors");
    return written;
  }
  json weight_map = json::object();
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    write_safetensors(dir + "/" + name, shards[i], metadata);
    for (const auto& nt : shards[i]) weight_map[nt.first] = name;
    written.push_back(name);
  }
  json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic(index, idx.dump(2) + "\n");
  std::remove(single.c_str());  // HF prefers model.safetensors over an index: drop a stale one
  written.push_back("model.safetensors.index.json");
  return written;
}

ShardedSafetensors ShardedSafetensors::open_index(const std::string& index_path) {
  std::string text;
  {
    const auto f = detail::MappedFile::open(index_path);
    text.assign(reinterpret_cast<const char*>(f->data()), f->size());
  }
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(index_path, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(index_path, ": expected a JSON object");
  const auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) fail(index_path, ": missing object 'weight_map'");
  const auto slash = index_path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : index_path.substr(0, slash);

  ShardedSafetensors s;
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [name, v] : wm->items()) {
    if (!v.is_string()) fail(index_path, ": weight_map '", name, "': expected a file name, got ", v.dump());
    const auto& file = v.get_ref<const std::string&>();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      fail(index_path, ": weight_map '", name, "': '", file, "' is not a file name in the index's directory");
    auto it = shard_of_file.find(file);
    if (it == shard_of_file.end()) {
      it = shard_of_file.emplace(file, s.shards_.size()).first;
      s.shards_.push_back(SafetensorsFile::open(dir + "/" + file));
    }
    if (s.shards_[it->second].find(name) == nullptr)
      fail(index_path, ": tensor '", name, "' is mapped to ", file, ", which does not contain it");
    s.names_.push_back(name);
    s.where_.emplace(name, it->second);
  }
  for (size_t i = 0; i < s.shards_.size(); ++i)
    for (const auto& t : s.shards_[i].tensors()) {
      const auto it = s.where_.find(t.name);
      if (it == s.where_.end())
        fail(s.shards_[i].path(), ": tensor '", t.name, "' is not listed in ", index_path);
      if (it->second != i)
        fail(s.shards_[i].path(), ": tensor '", t.name, "' is also stored in ", s.shards_[it->second].path());
    }
  return s;
}

const SafetensorsFile& ShardedSafetensors::file_of(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) fail("sharded safetensors: no tensor named '", name, "'");
  return shards_[it->second];
}

}  // namespace l4q
