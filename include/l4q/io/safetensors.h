// safetensors files (huggingface/safetensors): a reader that memory-maps the file and checks
// every rule of the reference reader before any tensor is touched, a writer that produces the
// exact layout of the reference writer, and the sharded form (model.safetensors.index.json).
//
// Layout: u64 little-endian header length N (<= 100,000,000) | N bytes of JSON |
// data buffer. The JSON maps names to {"dtype", "shape", "data_offsets": [begin, end)}
// relative to the buffer, plus an optional "__metadata__" map of string to string.
// Sorted by offset, tensors tile the buffer exactly: no gap, no overlap, no trailing byte.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace l4q {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Every dtype of the format. Bits: BOOL/U8/I8/F8_* 8, F4 4, F6_* 6, I16/U16/F16/BF16 16,
// I32/U32/F32 32, F64/I64/U64/C64 64.
enum class SafetensorsDtype {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};
std::string to_string(SafetensorsDtype dtype);
int safetensors_dtype_bits(SafetensorsDtype dtype);

struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data buffer, end exclusive
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws l4q::Error naming the file, the tensor and what was
  // expected and found: header length over 100,000,000 or past the end of the file, malformed
  // JSON or header entries, unknown dtype, shape/byte-size mismatch, offsets that leave a gap,
  // overlap or do not end at the end of the file, duplicate names, non-string metadata.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const;
  // Tensors in data-offset order.
  const std::vector<SafetensorsTensorInfo>& tensors() const;
  const SafetensorsTensorInfo* find(const std::string& name) const;  // nullptr if absent
  const SafetensorsTensorInfo& info(const std::string& name) const;  // throws if absent
  const std::map<std::string, std::string>& metadata() const;

  // The tensor in its stored dtype (F32, F16, BF16, F64, C64, I8, U8, I16, I32, I64, BOOL).
  // Zero-copy: it aliases the (copy-on-write) mapping and keeps it alive, unless the bytes are
  // misaligned for the dtype, in which case it is a copy. Other dtypes, and BOOL bytes other
  // than 0 and 1, throw.
  at::Tensor tensor(const std::string& name) const;
  // The tensor as fp32: the zero-copy view for F32, a converted copy otherwise.
  at::Tensor tensor_f32(const std::string& name) const;
  // Raw little-endian bytes of a tensor inside the mapping.
  const uint8_t* data(const SafetensorsTensorInfo& info) const;
  // Drops the resident pages of a tensor's bytes (after converting it to a new buffer).
  void release(const SafetensorsTensorInfo& info) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// Writes `tensors` (any dtype above that ATen has; any device, any strides) to `path` in the
// reference writer's layout: header JSON padded with spaces to a multiple of 8, tensors sorted
// by descending dtype size then name, no gaps, "__metadata__" = `metadata` plus
// {"format": "pt"} unless it sets "format". Atomic: temp file + rename. Throws on duplicate
// or empty names and on unsupported dtypes, before writing anything.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Bytes a tensor occupies in a safetensors data buffer.
uint64_t safetensors_nbytes(const at::Tensor& t);

// Writes `tensors` into directory `dir` as HF does: one "model.safetensors" when everything
// fits in `max_shard_bytes` (tensor bytes), else "model-0000i-of-0000n.safetensors" files
// (a tensor larger than the limit gets a shard of its own) plus "model.safetensors.index.json"
// {"metadata": {"total_size": <sum of tensor bytes>}, "weight_map": {name: file}}.
// Removes a stale index or single file of the other form. Returns the files written.
std::vector<std::string> write_safetensors_sharded(const std::string& dir, const NamedTensors& tensors,
                                                   uint64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata = {});

// The tensors of a sharded checkpoint: model.safetensors.index.json and its shards. Every name
// of the weight map must be in its shard, and every tensor of a shard in the weight map.
class ShardedSafetensors {
 public:
  static ShardedSafetensors open_index(const std::string& index_path);

  const std::vector<std::string>& names() const { return names_; }  // weight-map order (sorted)
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorsFile& file_of(const std::string& name) const;
  const std::vector<SafetensorsFile>& shards() const { return shards_; }

 private:
  std::vector<SafetensorsFile> shards_;
  std::vector<std::string> names_;
  std::map<std::string, size_t> where_;
};

}  // namespace l4q
