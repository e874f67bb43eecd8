// GGUF files (ggml-org/ggml docs/gguf.md, src/gguf.cpp): GgufFile reads versions 2 and 3
// (identical little-endian layouts) by memory-mapping the file and validating it as ggml's
// reader does; GgufWriter writes version 3.
//
//   u32 magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x (string key | u32 value type | value)       string = u64 length + bytes
//   tensor_count x (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset)
//   zero padding to ALIGNMENT (general.alignment, u32 power of two, default 32)
//   data: tensor i at offset_i = sum_{j<i} PAD(nbytes_j, ALIGNMENT)
//
// ne[0] is the contiguous dimension: a PyTorch [out, in] weight has ne = [in, out].
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "l4q/quant/ggml_blocks.h"

namespace l4q {

// Metadata value types (gguf_type).
enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
std::string to_string(GgufType type);

namespace detail {
template <typename T> struct GgufTypeOf;
template <> struct GgufTypeOf<uint8_t> { static constexpr GgufType value = GgufType::UINT8; };
template <> struct GgufTypeOf<int8_t> { static constexpr GgufType value = GgufType::INT8; };
template <> struct GgufTypeOf<uint16_t> { static constexpr GgufType value = GgufType::UINT16; };
template <> struct GgufTypeOf<int16_t> { static constexpr GgufType value = GgufType::INT16; };
template <> struct GgufTypeOf<uint32_t> { static constexpr GgufType value = GgufType::UINT32; };
template <> struct GgufTypeOf<int32_t> { static constexpr GgufType value = GgufType::INT32; };
template <> struct GgufTypeOf<float> { static constexpr GgufType value = GgufType::FLOAT32; };
template <> struct GgufTypeOf<bool> { static constexpr GgufType value = GgufType::BOOL; };
template <> struct GgufTypeOf<std::string> { static constexpr GgufType value = GgufType::STRING; };
template <> struct GgufTypeOf<uint64_t> { static constexpr GgufType value = GgufType::UINT64; };
template <> struct GgufTypeOf<int64_t> { static constexpr GgufType value = GgufType::INT64; };
template <> struct GgufTypeOf<double> { static constexpr GgufType value = GgufType::FLOAT64; };
}  // namespace detail

// The type code of a C++ scalar type (uint32_t -> UINT32, std::string -> STRING, ...).
template <typename T>
constexpr GgufType gguf_type_of() { return detail::GgufTypeOf<T>::value; }

// One metadata value: a scalar, or an array of scalars of one type (arrays do not nest).
// Arrays of fixed-size elements are kept as their little-endian bytes (one byte per element
// for UINT8, so a corrupt count can never cost more memory than the file holds); string
// arrays as strings.
class GgufValue {
 public:
  // Alternative i holds type code i (i < 9) or i + 1 (i >= 9): ARRAY has no scalar alternative.
  using Scalar = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                              std::string, uint64_t, int64_t, double>;

  GgufValue() = default;
  // T is one of the Scalar alternatives.
  template <typename T>
  static GgufValue of(T v) {
    GgufValue g;
    g.type_ = gguf_type_of<T>();
    g.scalar_ = Scalar(std::in_place_type<T>, std::move(v));
    return g;
  }
  template <typename T>
  static GgufValue array_of(const std::vector<T>& v) {
    GgufValue g;
    g.type_ = GgufType::ARRAY;
    g.element_type_ = gguf_type_of<T>();
    if constexpr (std::is_same_v<T, std::string>) {
      g.strings_ = v;
    } else {
      g.raw_.reserve(v.size() * sizeof(T));
      for (const auto& e : v) {
        const T x = e;  // std::vector<bool> yields proxies
        g.raw_.append(reinterpret_cast<const char*>(&x), sizeof(T));
      }
    }
    return g;
  }
  // An array from scalars that all hold `element_type`; throws l4q::Error otherwise.
  static GgufValue array_of_scalars(GgufType element_type, const std::vector<Scalar>& v);

  GgufType type() const { return type_; }                  // ARRAY for arrays
  GgufType element_type() const { return element_type_; }  // arrays only
  bool is_array() const { return type_ == GgufType::ARRAY; }
  size_t size() const;                                      // arrays only
  const Scalar& scalar() const { return scalar_; }          // scalars only
  Scalar element(size_t i) const;                           // arrays only, i < size()
  std::vector<Scalar> elements() const;                     // arrays only

  // Exact-type access, as llama.cpp's loader checks it. Throws l4q::Error naming `key`, the
  // expected and the actual type.
  template <typename T>
  const T& as(const std::string& key) const;
  template <typename T>
  std::vector<T> as_array(const std::string& key) const;

  // Human-readable value (arrays shortened), for messages and dumps.
  std::string to_string(size_t max_elements = 8) const;

  // Same type and same value; floats compare by their stored bits.
  bool operator==(const GgufValue& o) const;
  bool operator!=(const GgufValue& o) const { return !(*this == o); }

 private:
  friend class GgufFile;
  friend class GgufWriter;
  GgufType type_ = GgufType::UINT8;
  GgufType element_type_ = GgufType::UINT8;
  Scalar scalar_;
  std::string raw_;                   // fixed-size array elements, little-endian
  std::vector<std::string> strings_;  // STRING array elements
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] contiguous
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;      // relative to the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
  std::vector<int64_t> shape() const;  // PyTorch order: ne reversed
};

class GgufFile {
 public:
  // Maps and parses `path`. Throws l4q::Error naming the file and the key or tensor when:
  // the magic or version is wrong; a string, array or count runs past the end of the file;
  // a value type is unknown or an array nests; a key or tensor name repeats; a tensor name is
  // 64 bytes or longer; n_dims > 4; a dimension is negative or the size overflows; the ggml
  // type is unknown; ne[0] is not a multiple of the block size; general.alignment is not a
  // u32 power of two; an offset differs from the running padded sum or the data runs past EOF.
  static GgufFile open(const std::string& path);

  const std::string& path() const;
  uint32_t version() const;
  uint32_t alignment() const;
  uint64_t data_offset() const;  // file offset of the data section

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const;
  const GgufValue* find(const std::string& key) const;  // nullptr if absent
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  // Typed access: throws l4q::Error naming the file and key if absent or of another type.
  template <typename T>
  T get(const std::string& key) const;
  // As get(), but `fallback` when the key is absent (a present key of another type throws).
  template <typename T>
  T get_or(const std::string& key, T fallback) const;
  template <typename T>
  std::vector<T> get_array(const std::string& key) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor_info(const std::string& name) const;  // throws if absent

  // Raw bytes of a tensor inside the mapping.
  const uint8_t* data(const GgufTensorInfo& info) const;
  // The tensor as fp32 in PyTorch shape (ne reversed): a zero-copy view of the copy-on-write
  // mapping for aligned F32 data, else a dequantized copy (F16, BF16, Q4_0, Q4_1, Q8_0).
  // Other types throw naming the tensor and type.
  at::Tensor tensor_f32(const std::string& name) const;
  // Drops the resident pages of a tensor's bytes (after converting it to a new buffer).
  void release(const GgufTensorInfo& info) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// Builds a GGUF v3 file. Metadata keeps insertion order (set() on an existing key replaces
// its value in place); tensors are written in the order added, each padded to the alignment
// (general.alignment when set, else 32). The file is written atomically.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue value);
  template <typename T>
  void set_scalar(const std::string& key, T v) { set(key, GgufValue::of<T>(std::move(v))); }

  // Stored bytes of a tensor of PyTorch shape `shape` (outermost first) and type `type`.
  // Throws if the byte count does not match the type and shape.
  void add_tensor_bytes(const std::string& name, GgmlType type, std::vector<int64_t> shape,
                        std::vector<uint8_t> bytes);
  // A float tensor (any dtype, any device) converted to `type` with ggml's reference
  // quantizer when the file is written, so the writer holds no second copy of the weights.
  void add_tensor(const std::string& name, const at::Tensor& values, GgmlType type);

  size_t tensor_count() const { return tensors_.size(); }
  void write(const std::string& path) const;

 private:
  struct Pending {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;  // used when `values` is undefined
    at::Tensor values;
    uint64_t nbytes;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Pending> tensors_;
};

}  // namespace l4q
