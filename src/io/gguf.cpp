#include "l4q/io/gguf.h"

#include <ATen/ATen.h>

#include <cstring>
#include <set>
#include <sstream>

#include "io/mapped_file.h"
#include "l4q/error.h"
#include "l4q/io/atomic_file.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "l4q reads little-endian files in place");

namespace l4q {

namespace {

constexpr uint32_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT
constexpr size_t kMaxNameBytes = 64;         // GGML_MAX_NAME: names must be shorter
constexpr uint32_t kMaxDims = 4;             // GGML_MAX_DIMS

const char* const kTypeNames[] = {"UINT8", "INT8",  "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                  "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};

bool known_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

// Size of a fixed-size value type; 0 for STRING and ARRAY.
uint64_t fixed_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

size_t variant_index(GgufType t) {
  const auto i = static_cast<size_t>(t);
  return i < 9 ? i : i - 1;
}

uint64_t pad_to(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

// Bounds-checked little-endian reader over the mapping; every failure names the file, the
// byte position and what was being read.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& path) : p_(data), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  // `element` >= 0 names an array element in messages.
  template <typename T>
  T read(const std::string& what, int64_t element = -1) {
    if (remaining() < sizeof(T))
      fail(path_, ": ", what, element >= 0 ? " element " + std::to_string(element) : std::string(), ": needs ",
           sizeof(T), " bytes at offset ", pos_, " but the file ends at ", size_);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what, int64_t element = -1) {
    const auto n = read<uint64_t>(what, element);
    if (n > remaining())
      fail(path_, ": ", what, element >= 0 ? " element " + std::to_string(element) : std::string(), ": string of ", n, " bytes at offset ", pos_, " runs past the end of the file (",
           remaining(), " bytes left)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

  // `n` bytes the caller has already bounds-checked against remaining().
  std::string read_bytes(uint64_t n) {
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

  GgufValue::Scalar read_scalar(GgufType t, const std::string& what, int64_t element = -1) {
    switch (t) {
      case GgufType::UINT8: return read<uint8_t>(what, element);
      case GgufType::INT8: return read<int8_t>(what, element);
      case GgufType::UINT16: return read<uint16_t>(what, element);
      case GgufType::INT16: return read<int16_t>(what, element);
      case GgufType::UINT32: return read<uint32_t>(what, element);
      case GgufType::INT32: return read<int32_t>(what, element);
      case GgufType::FLOAT32: return read<float>(what, element);
      case GgufType::BOOL: {
        const auto b = read<uint8_t>(what, element);
        if (b > 1) fail(path_, ": ", what, ": BOOL byte ", int(b), " at offset ", pos_ - 1, ", expected 0 or 1");
        return b != 0;
      }
      case GgufType::STRING: return read_string(what, element);
      case GgufType::UINT64: return read<uint64_t>(what, element);
      case GgufType::INT64: return read<int64_t>(what, element);
      case GgufType::FLOAT64: return read<double>(what, element);
      default: fail(path_, ": ", what, ": type ", static_cast<uint32_t>(t), " is not a scalar type");
    }
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

// Appends little-endian values to a byte string (the writer's header).
struct Sink {
  std::string buf;
  template <typename T>
  void put(const T& v) { buf.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    buf += s;
  }
  void put_scalar(const GgufValue::Scalar& s) {
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string>) put_string(v);
          else if constexpr (std::is_same_v<T, bool>) put<uint8_t>(v ? 1 : 0);
          else put<T>(v);
        },
        s);
  }
};

std::string scalar_to_string(const GgufValue::Scalar& s) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        std::ostringstream os;
        if constexpr (std::is_same_v<T, std::string>) os << '\'' << v << '\'';
        else if constexpr (std::is_same_v<T, bool>) os << (v ? "true" : "false");
        else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) os << static_cast<int>(v);
        else {
          os.precision(std::is_same_v<T, float> ? 9 : 17);
          os << v;
        }
        return os.str();
      },
      s);
}

}  // namespace

std::string to_string(GgufType type) {
  const auto i = static_cast<uint32_t>(type);
  return known_type(i) ? kTypeNames[i] : "gguf_type(" + std::to_string(i) + ")";
}

// --- GgufValue -------------------------------------------------------------------------------

GgufValue GgufValue::array_of_scalars(GgufType element_type, const std::vector<Scalar>& v) {
  if (element_type == GgufType::ARRAY || !known_type(static_cast<uint32_t>(element_type)))
    fail("GGUF array: element type ", l4q::to_string(element_type), " is not a scalar type");
  GgufValue g;
  g.type_ = GgufType::ARRAY;
  g.element_type_ = element_type;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].index() != variant_index(element_type))
      fail("GGUF array of ", l4q::to_string(element_type), ": element ", i, " has another type");
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::string>) {
            g.strings_.push_back(x);
          } else {
            const T y = x;
            g.raw_.append(reinterpret_cast<const char*>(&y), sizeof(T));
          }
        },
        v[i]);
  }
  return g;
}

size_t GgufValue::size() const {
  if (!is_array()) return 0;
  if (element_type_ == GgufType::STRING) return strings_.size();
  return raw_.size() / fixed_size(element_type_);
}

namespace {

template <typename T>
T load_le(const std::string& raw, size_t i) {
  T v;
  std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));
  return v;
}

}  // namespace

GgufValue::Scalar GgufValue::element(size_t i) const {
  if (!is_array() || i >= size()) fail("GGUF value: element ", i, " out of range (", size(), " elements)");
  switch (element_type_) {
    case GgufType::UINT8: return load_le<uint8_t>(raw_, i);
    case GgufType::INT8: return load_le<int8_t>(raw_, i);
    case GgufType::UINT16: return load_le<uint16_t>(raw_, i);
    case GgufType::INT16: return load_le<int16_t>(raw_, i);
    case GgufType::UINT32: return load_le<uint32_t>(raw_, i);
    case GgufType::INT32: return load_le<int32_t>(raw_, i);
    case GgufType::FLOAT32: return load_le<float>(raw_, i);
    case GgufType::BOOL: return load_le<uint8_t>(raw_, i) != 0;
    case GgufType::STRING: return strings_[i];
    case GgufType::UINT64: return load_le<uint64_t>(raw_, i);
    case GgufType::INT64: return load_le<int64_t>(raw_, i);
    case GgufType::FLOAT64: return load_le<double>(raw_, i);
    default: fail("GGUF value: bad element type");
  }
}

std::vector<GgufValue::Scalar> GgufValue::elements() const {
  std::vector<Scalar> out;
  out.reserve(size());
  for (size_t i = 0; i < size(); ++i) out.push_back(element(i));
  return out;
}

template <typename T>
const T& GgufValue::as(const std::string& key) const {
  if (type_ != gguf_type_of<T>())
    fail("key '", key, "' has wrong type: expected ", l4q::to_string(gguf_type_of<T>()), ", got ",
         is_array() ? "ARRAY of " + l4q::to_string(element_type_) : l4q::to_string(type_));
  return std::get<T>(scalar_);
}

template <typename T>
std::vector<T> GgufValue::as_array(const std::string& key) const {
  if (!is_array() || element_type_ != gguf_type_of<T>())
    fail("key '", key, "' has wrong type: expected ARRAY of ", l4q::to_string(gguf_type_of<T>()), ", got ",
         is_array() ? "ARRAY of " + l4q::to_string(element_type_) : l4q::to_string(type_));
  if constexpr (std::is_same_v<T, std::string>) {
    return strings_;
  } else {
    std::vector<T> out(size());
    for (size_t i = 0; i < out.size(); ++i) {
      if constexpr (std::is_same_v<T, bool>) out[i] = load_le<uint8_t>(raw_, i) != 0;
      else out[i] = load_le<T>(raw_, i);
    }
    return out;
  }
}

std::string GgufValue::to_string(size_t max_elements) const {
  if (!is_array()) return scalar_to_string(scalar_);
  std::string s = "[";
  for (size_t i = 0; i < size() && i < max_elements; ++i) s += (i ? ", " : "") + scalar_to_string(element(i));
  if (size() > max_elements) s += ", ... (" + std::to_string(size()) + " elements)";
  return s + "]";
}

bool GgufValue::operator==(const GgufValue& o) const {
  if (type_ != o.type_) return false;
  if (is_array()) return element_type_ == o.element_type_ && raw_ == o.raw_ && strings_ == o.strings_;
  if (scalar_.index() != o.scalar_.index()) return false;
  // Floats by their bits, so NaN == NaN and -0 != 0, like the bytes in a file.
  if (type_ == GgufType::FLOAT32) return std::memcmp(&std::get<float>(scalar_), &std::get<float>(o.scalar_), 4) == 0;
  if (type_ == GgufType::FLOAT64) return std::memcmp(&std::get<double>(scalar_), &std::get<double>(o.scalar_), 8) == 0;
  return scalar_ == o.scalar_;
}

#define L4Q_GGUF_INSTANTIATE(T)                                                 \
  template const T& GgufValue::as<T>(const std::string&) const;                 \
  template std::vector<T> GgufValue::as_array<T>(const std::string&) const;     \
  template T GgufFile::get<T>(const std::string&) const;                        \
  template T GgufFile::get_or<T>(const std::string&, T) const;                  \
  template std::vector<T> GgufFile::get_array<T>(const std::string&) const;

// --- GgufTensorInfo --------------------------------------------------------------------------

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (const int64_t d : ne) n *= d;
  return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

// --- GgufFile --------------------------------------------------------------------------------

struct GgufFile::Impl {
  std::shared_ptr<const detail::MappedFile> file;
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, GgufValue>> kv;
  std::map<std::string, size_t> kv_index;
  std::vector<GgufTensorInfo> tensors;
  std::map<std::string, size_t> tensor_index;
};

GgufFile GgufFile::open(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->file = detail::MappedFile::open(path);
  Cursor c(impl->file->data(), impl->file->size(), path);

  if (impl->file->size() < 4 || std::memcmp(impl->file->data(), "GGUF", 4) != 0)
    fail(path, ": not a GGUF file (expected magic 'GGUF')");
  c.read<uint32_t>("magic");
  impl->version = c.read<uint32_t>("version");
  if (impl->version == 1) fail(path, ": GGUF version 1 is not supported (expected 2 or 3)");
  if (impl->version != 2 && impl->version != 3)
    fail(path, ": GGUF version ", impl->version, " is not supported (expected 2 or 3; a big-endian file?)");
  const auto n_tensors = c.read<uint64_t>("tensor_count");
  const auto n_kv = c.read<uint64_t>("kv_count");
  // Every entry takes at least one byte: larger counts are certainly corrupt.
  if (n_kv > c.remaining())
    fail(path, ": kv_count ", n_kv, " cannot fit in the ", c.remaining(), " bytes left");
  if (n_tensors > c.remaining())
    fail(path, ": tensor_count ", n_tensors, " cannot fit in the ", c.remaining(), " bytes left");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("key of metadata entry " + std::to_string(i));
    const std::string what = "key '" + key + "'";
    const auto t = c.read<uint32_t>(what + " (value type)");
    if (!known_type(t)) fail(path, ": ", what, ": unknown value type ", t);
    GgufValue v;
    if (static_cast<GgufType>(t) == GgufType::ARRAY) {
      const auto et = c.read<uint32_t>(what + " (array element type)");
      if (et == static_cast<uint32_t>(GgufType::ARRAY)) fail(path, ": ", what, ": nested arrays are not supported");
      if (!known_type(et)) fail(path, ": ", what, ": unknown array element type ", et);
      const auto etype = static_cast<GgufType>(et);
      const auto count = c.read<uint64_t>(what + " (array length)");
      const uint64_t min_elem = etype == GgufType::STRING ? 8 : fixed_size(etype);
      if (count > c.remaining() / min_elem)
        fail(path, ": ", what, ": array of ", count, " ", to_string(etype), " elements runs past the end of the file (",
             c.remaining(), " bytes left)");
      v.type_ = GgufType::ARRAY;
      v.element_type_ = etype;
      if (etype == GgufType::STRING) {
        // Each string takes at least its 8-byte length, so `count` is bounded by the file.
        v.strings_.reserve(count);
        for (uint64_t j = 0; j < count; ++j) v.strings_.push_back(c.read_string(what, static_cast<int64_t>(j)));
      } else {
        v.raw_ = c.read_bytes(count * min_elem);
        if (etype == GgufType::BOOL)
          for (size_t j = 0; j < v.raw_.size(); ++j)
            if (static_cast<uint8_t>(v.raw_[j]) > 1)
              fail(path, ": ", what, " element ", j, ": BOOL byte ", int(static_cast<uint8_t>(v.raw_[j])),
                   ", expected 0 or 1");
      }
    } else {
      v = GgufValue();
      const auto type = static_cast<GgufType>(t);
      switch (type) {
        case GgufType::UINT8: v = GgufValue::of(std::get<uint8_t>(c.read_scalar(type, what))); break;
        case GgufType::INT8: v = GgufValue::of(std::get<int8_t>(c.read_scalar(type, what))); break;
        case GgufType::UINT16: v = GgufValue::of(std::get<uint16_t>(c.read_scalar(type, what))); break;
        case GgufType::INT16: v = GgufValue::of(std::get<int16_t>(c.read_scalar(type, what))); break;
        case GgufType::UINT32: v = GgufValue::of(std::get<uint32_t>(c.read_scalar(type, what))); break;
        case GgufType::INT32: v = GgufValue::of(std::get<int32_t>(c.read_scalar(type, what))); break;
        case GgufType::FLOAT32: v = GgufValue::of(std::get<float>(c.read_scalar(type, what))); break;
        case GgufType::BOOL: v = GgufValue::of(std::get<bool>(c.read_scalar(type, what))); break;
        case GgufType::STRING: v = GgufValue::of(std::get<std::string>(c.read_scalar(type, what))); break;
        case GgufType::UINT64: v = GgufValue::of(std::get<uint64_t>(c.read_scalar(type, what))); break;
        case GgufType::INT64: v = GgufValue::of(std::get<int64_t>(c.read_scalar(type, what))); break;
        case GgufType::FLOAT64: v = GgufValue::of(std::get<double>(c.read_scalar(type, what))); break;
        default: break;
      }
    }
    if (!impl->kv_index.emplace(key, impl->kv.size()).second) fail(path, ": duplicate key '", key, "'");
    impl->kv.emplace_back(std::move(key), std::move(v));
  }

  if (const auto it = impl->kv_index.find("general.alignment"); it != impl->kv_index.end()) {
    const auto& v = impl->kv[it->second].second;
    if (v.type() != GgufType::UINT32)
      fail(path, ": key 'general.alignment' has wrong type: expected UINT32, got ", to_string(v.type()));
    const uint32_t a = std::get<uint32_t>(v.scalar());
    if (a == 0 || (a & (a - 1)) != 0) fail(path, ": general.alignment ", a, ": expected a power of two");
    impl->alignment = a;
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo ti;
    ti.name = c.read_string("name of tensor " + std::to_string(i));
    const std::string where = path + ": tensor '" + ti.name + "'";
    if (ti.name.size() >= kMaxNameBytes)
      fail(where, ": name of ", ti.name.size(), " bytes, expected fewer than ", kMaxNameBytes);
    const auto n_dims = c.read<uint32_t>("tensor '" + ti.name + "' n_dims");
    if (n_dims > kMaxDims) fail(where, ": n_dims ", n_dims, ", expected at most ", kMaxDims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = c.read<uint64_t>("tensor '" + ti.name + "' ne[" + std::to_string(d) + "]");
      if (ne > static_cast<uint64_t>(INT64_MAX)) fail(where, ": ne[", d, "] = ", ne, " is negative as int64");
      if (__builtin_mul_overflow(numel, static_cast<int64_t>(ne), &numel))
        fail(where, ": element count overflows int64");
      ti.ne.push_back(static_cast<int64_t>(ne));
    }
    const auto type = c.read<uint32_t>("tensor '" + ti.name + "' type");
    const auto* traits = find_ggml_type(type);
    if (traits == nullptr) fail(where, ": unknown ggml type ", type);
    ti.type = traits->type;
    const int64_t ne0 = ti.ne.empty() ? 1 : ti.ne[0];
    if (ne0 % traits->block_size != 0)
      fail(where, ": ne[0] = ", ne0, " is not a multiple of the ", traits->name, " block size ", traits->block_size);
    ti.nbytes = ggml_nbytes(ti.type, numel, where);
    ti.offset = c.read<uint64_t>("tensor '" + ti.name + "' offset");
    if (!impl->tensor_index.emplace(ti.name, impl->tensors.size()).second)
      fail(path, ": duplicate tensor name '", ti.name, "'");
    impl->tensors.push_back(std::move(ti));
  }

  const uint64_t size = impl->file->size();
  impl->data_offset = pad_to(c.pos(), impl->alignment);
  uint64_t expected = 0;
  for (const auto& ti : impl->tensors) {
    const std::string where = path + ": tensor '" + ti.name + "'";
    if (ti.offset != expected)
      fail(where, ": data offset ", ti.offset, ", expected ", expected,
           " (tensor data must follow the tensor infos in order, each padded to ", impl->alignment, " bytes)");
    uint64_t end = 0;
    if (__builtin_add_overflow(impl->data_offset + ti.offset, ti.nbytes, &end) || end > size)
      fail(where, ": ", ti.nbytes, " bytes of ", to_string(ti.type), " data at file offset ",
           impl->data_offset + ti.offset, " run past the end of the file (", size, " bytes)");
    expected = pad_to(ti.offset + ti.nbytes, impl->alignment);
  }

  GgufFile f;
  f.impl_ = std::move(impl);
  return f;
}

const std::string& GgufFile::path() const { return impl_->file->path(); }
uint32_t GgufFile::version() const { return impl_->version; }
uint32_t GgufFile::alignment() const { return impl_->alignment; }
uint64_t GgufFile::data_offset() const { return impl_->data_offset; }
const std::vector<std::pair<std::string, GgufValue>>& GgufFile::metadata() const { return impl_->kv; }
const std::vector<GgufTensorInfo>& GgufFile::tensors() const { return impl_->tensors; }

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = impl_->kv_index.find(key);
  return it == impl_->kv_index.end() ? nullptr : &impl_->kv[it->second].second;
}

template <typename T>
T GgufFile::get(const std::string& key) const {
  const auto* v = find(key);
  if (v == nullptr) fail(path(), ": missing key '", key, "'");
  try {
    return v->as<T>(key);
  } catch (const Error& e) {
    fail(path(), ": ", e.what());
  }
}

template <typename T>
T GgufFile::get_or(const std::string& key, T fallback) const {
  return contains(key) ? get<T>(key) : fallback;
}

template <typename T>
std::vector<T> GgufFile::get_array(const std::string& key) const {
  const auto* v = find(key);
  if (v == nullptr) fail(path(), ": missing key '", key, "'");
  try {
    return v->as_array<T>(key);
  } catch (const Error& e) {
    fail(path(), ": ", e.what());
  }
}

L4Q_GGUF_INSTANTIATE(uint8_t)
L4Q_GGUF_INSTANTIATE(int8_t)
L4Q_GGUF_INSTANTIATE(uint16_t)
L4Q_GGUF_INSTANTIATE(int16_t)
L4Q_GGUF_INSTANTIATE(uint32_t)
L4Q_GGUF_INSTANTIATE(int32_t)
L4Q_GGUF_INSTANTIATE(float)
L4Q_GGUF_INSTANTIATE(bool)
L4Q_GGUF_INSTANTIATE(std::string)
L4Q_GGUF_INSTANTIATE(uint64_t)
L4Q_GGUF_INSTANTIATE(int64_t)
L4Q_GGUF_INSTANTIATE(double)

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

const GgufTensorInfo& GgufFile::tensor_info(const std::string& name) const {
  const auto* t = find_tensor(name);
  if (t == nullptr) fail(path(), ": no tensor named '", name, "'");
  return *t;
}

const uint8_t* GgufFile::data(const GgufTensorInfo& info) const {
  return impl_->file->data() + impl_->data_offset + info.offset;
}

void GgufFile::release(const GgufTensorInfo& info) const {
  impl_->file->release(impl_->data_offset + info.offset, info.nbytes);
}

at::Tensor GgufFile::tensor_f32(const std::string& name) const {
  const auto& ti = tensor_info(name);
  const auto& traits = ggml_traits(ti.type);
  if (traits.to_float == nullptr)
    fail(path(), ": tensor '", name, "': type ", traits.name,
         " cannot be converted to float (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)");
  const uint8_t* p = data(ti);
  if (ti.type == GgmlType::F32 && reinterpret_cast<uintptr_t>(p) % alignof(float) == 0 && ti.nbytes > 0) {
    auto keep = impl_;
    return at::from_blob(const_cast<uint8_t*>(p), ti.shape(), [keep](void*) {}, at::kFloat);
  }
  auto out = at::empty(ti.shape(), at::kFloat);
  traits.to_float(p, out.data_ptr<float>(), ti.numel());
  return out;
}

// --- GgufWriter ------------------------------------------------------------------------------

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& kv : kv_)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

namespace {

void check_new_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& shape,
                      const std::vector<std::string>& existing) {
  const std::string where = "GgufWriter: tensor '" + name + "'";
  if (name.empty() || name.size() >= kMaxNameBytes)
    fail(where, ": name of ", name.size(), " bytes, expected 1 to ", kMaxNameBytes - 1);
  for (const auto& e : existing)
    if (e == name) fail(where, ": added twice");
  if (shape.size() > kMaxDims) fail(where, ": ", shape.size(), " dimensions, expected at most ", kMaxDims);
  for (const auto d : shape)
    if (d < 0) fail(where, ": negative dimension ", d);
  const auto& t = ggml_traits(type);
  const int64_t ne0 = shape.empty() ? 1 : shape.back();
  if (ne0 % t.block_size != 0)
    fail(where, ": innermost dimension ", ne0, " is not a multiple of the ", t.name, " block size ", t.block_size);
}

}  // namespace

void GgufWriter::add_tensor_bytes(const std::string& name, GgmlType type, std::vector<int64_t> shape,
                                  std::vector<uint8_t> bytes) {
  std::vector<std::string> names;
  for (const auto& t : tensors_) names.push_back(t.name);
  check_new_tensor(name, type, shape, names);
  int64_t numel = 1;
  for (const auto d : shape) numel *= d;
  const uint64_t nb = ggml_nbytes(type, numel, "GgufWriter: tensor '" + name + "'");
  if (bytes.size() != nb)
    fail("GgufWriter: tensor '", name, "': ", bytes.size(), " bytes given, ", to_string(type), " of ", numel,
         " elements needs ", nb);
  tensors_.push_back({name, type, std::move(shape), std::move(bytes), at::Tensor(), nb});
}

void GgufWriter::add_tensor(const std::string& name, const at::Tensor& values, GgmlType type) {
  std::vector<std::string> names;
  for (const auto& t : tensors_) names.push_back(t.name);
  if (!values.defined()) fail("GgufWriter: tensor '", name, "' is undefined");
  if (!values.is_floating_point()) fail("GgufWriter: tensor '", name, "': expected a float tensor, got ", values.scalar_type());
  auto shape = values.sizes().vec();
  check_new_tensor(name, type, shape, names);
  if (ggml_traits(type).from_float == nullptr)
    fail("GgufWriter: tensor '", name, "': cannot quantize to ", to_string(type),
         " (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)");
  const uint64_t nb = ggml_nbytes(type, values.numel(), "GgufWriter: tensor '" + name + "'");
  tensors_.push_back({name, type, std::move(shape), {}, values, nb});
}

void GgufWriter::write(const std::string& path) const {
  uint32_t alignment = kDefaultAlignment;
  for (const auto& [k, v] : kv_)
    if (k == "general.alignment") {
      if (v.type() != GgufType::UINT32) fail(path, ": general.alignment must be UINT32, got ", to_string(v.type()));
      alignment = std::get<uint32_t>(v.scalar());
      if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        fail(path, ": general.alignment ", alignment, ": expected a power of two");
    }

  Sink h;
  h.buf = "GGUF";
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    h.put_string(k);
    h.put<uint32_t>(static_cast<uint32_t>(v.type()));
    if (v.is_array()) {
      h.put<uint32_t>(static_cast<uint32_t>(v.element_type()));
      h.put<uint64_t>(v.size());
      if (v.element_type() == GgufType::STRING)
        for (const auto& e : v.strings_) h.put_string(e);
      else
        h.buf += v.raw_;
    } else {
      h.put_scalar(v.scalar());
    }
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    h.put_string(t.name);
    h.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) h.put<uint64_t>(static_cast<uint64_t>(*it));
    h.put<uint32_t>(static_cast<uint32_t>(t.type));
    h.put<uint64_t>(offset);
    offset = pad_to(offset + t.nbytes, alignment);
  }
  h.buf.append(pad_to(h.buf.size(), alignment) - h.buf.size(), '\0');

  AtomicFile out(path);
  out.write(h.buf);
  const std::string zeros(alignment, '\0');
  for (const auto& t : tensors_) {
    if (!t.values.defined()) {
      out.write(t.bytes.data(), t.bytes.size());
    } else {
      const auto f = t.values.detach().to(at::kCPU).to(at::kFloat).contiguous();
      if (t.type == GgmlType::F32) {
        out.write(f.data_ptr<float>(), t.nbytes);
      } else {
        std::vector<uint8_t> packed(t.nbytes);
        ggml_traits(t.type).from_float(f.data_ptr<float>(), packed.data(), f.numel());
        out.write(packed.data(), packed.size());
      }
    }
    out.write(zeros.data(), pad_to(t.nbytes, alignment) - t.nbytes);
  }
  out.commit();
}

}  // namespace l4q
