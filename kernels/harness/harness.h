// Host-side helpers for the GPU tests (kernels/tests) and the checkers (kernels/dev): device
// detection, device buffers, test inputs, error measures. Plain C++ over the CUDA runtime API;
// no torch, no device code.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "l4q/kernels.h"

namespace l4q::kernels::harness {

// Why there is no usable device, or "" when there is one.
inline std::string no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + " (" +
           cudaGetErrorString(e) + ")";
  if (n == 0) return "cudaGetDeviceCount reports 0 devices";
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "cudaGetDeviceProperties failed";
  if (prop.major < 8)
    return "device 0 (" + std::string(prop.name) + ") is sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + "; the kernels need sm_80 or newer";
  return "";
}

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " " +
                             cudaGetErrorString(e));
}
inline void check(const Status& s, const char* what) {
  if (!s.ok())
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(s.code) + " (" + s.what +
                             ")");
}

// A device allocation (RAII).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) check(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

inline size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }

// Host floats -> device array of `t` (bf16 rounds to nearest even).
inline DeviceBuffer upload(const std::vector<float>& v, DType t) {
  DeviceBuffer d(v.size() * dtype_size(t));
  if (t == DType::BF16) {
    std::vector<uint16_t> h(v.size());
    for (size_t k = 0; k < v.size(); ++k) h[k] = bf16::from_float(v[k]);
    check(cudaMemcpy(d.get(), h.data(), h.size() * 2, cudaMemcpyHostToDevice), "upload");
  } else {
    check(cudaMemcpy(d.get(), v.data(), v.size() * 4, cudaMemcpyHostToDevice), "upload");
  }
  return d;
}

template <typename T>
DeviceBuffer upload_raw(const std::vector<T>& v) {
  DeviceBuffer d(v.size() * sizeof(T));
  check(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

// Device array of `t` -> host floats.
inline std::vector<float> download(const void* d, size_t n, DType t) {
  std::vector<float> v(n);
  if (t == DType::BF16) {
    std::vector<uint16_t> h(n);
    check(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost), "download");
    for (size_t k = 0; k < n; ++k) v[k] = bf16::to_float(h[k]);
  } else {
    check(cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost), "download");
  }
  return v;
}

// Values as the device will see them (bf16-rounded for bf16).
inline std::vector<float> as_dtype(std::vector<float> v, DType t) {
  if (t == DType::BF16)
    for (auto& x : v) x = bf16::round(x);
  return v;
}

inline std::vector<float> normal(size_t n, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// k / 2^e, k uniform in [-n, n]: exact in bf16 and fp32 for small n, and every product and sum
// of a few of them is exact in fp32, so the kernels and the references see the same merged
// weight whatever their summation order.
inline std::vector<float> dyadic(size_t n, int k_max, int e, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> d(-k_max, k_max);
  std::vector<float> v(n);
  for (auto& x : v) x = std::ldexp(static_cast<float>(d(rng)), -e);
  return v;
}

// Normwise relative error max|a - b| / max|b| (b is the reference).
template <typename A, typename B>
double rel_err(const std::vector<A>& a, const std::vector<B>& b) {
  double diff = 0, ref = 0;
  for (size_t k = 0; k < b.size(); ++k) {
    diff = std::max(diff, std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])));
    ref = std::max(ref, std::abs(static_cast<double>(b[k])));
  }
  return ref > 0 ? diff / ref : diff;
}

// CUDA events around a callable, with the L2 flushed before every repetition (llm.c style), so
// that a weight that fits in L2 is still read from memory. Returns the mean in milliseconds.
template <typename F>
float time_ms(F&& launch, int reps, cudaStream_t stream, bool flush_l2 = true) {
  int dev = 0, l2 = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "L2 size");
  DeviceBuffer flush(flush_l2 ? static_cast<size_t>(l2) * 2 : 0);
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  launch();  // warm-up
  float total = 0;
  for (int r = 0; r < reps; ++r) {
    if (flush_l2) check(cudaMemsetAsync(flush.get(), r & 0xff, flush.bytes(), stream), "flush L2");
    check(cudaEventRecord(a, stream), "event");
    launch();
    check(cudaEventRecord(b, stream), "event");
    check(cudaEventSynchronize(b), "event");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "event");
    total += ms;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return total / reps;
}

}  // namespace l4q::kernels::harness
