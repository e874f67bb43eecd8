// A small SIMT emulator that runs the CUDA kernels of kernels/src on the CPU, so that their
// tests (kernels/tests/test_kernels_gpu.cpp) execute the real kernel code in CI, where no GPU
// exists. Force-included (-include) into every translation unit of the emulated build.
//
// Model:
//  - one block at a time; its threads are fibers (ucontext) on one OS thread, resumed in a
//    random order (fixed seed) between synchronisation points, so that code relying on an
//    order between barriers has a chance to break;
//  - __syncthreads() waits for every unfinished thread of the block; warp-collective operations
//    (WMMA mma_sync, __shfl_xor_sync) wait for the unfinished lanes of the warp; a state where
//    no thread can proceed aborts with a deadlock report;
//  - cp.async copies (__pipeline_memcpy_async) complete at a random point between their issue
//    and the __pipeline_wait_prior that covers them: either at once or only at the wait;
//  - WMMA fragments use a layout of the emulator's own (element e of lane l is the matrix entry
//    with row-major index 32 e + l): kernels must treat fragments as opaque, as the CUDA
//    programming guide requires, and those that do give the same results;
//  - misaligned cp.async, vector loads and WMMA pointers or strides abort, as they would fault
//    (or be undefined) on the device;
//  - device memory is host memory; the CUDA runtime calls the kernels and tests make are
//    provided by simt.cpp (cudaMalloc = malloc, streams are ignored, launches are synchronous).
// Not modelled: timing, memory consistency beyond barriers, bank conflicts, register limits.
#pragma once
#include <cuda_runtime.h>  // host-compatible: dim3, vector types, the runtime API declarations

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __launch_bounds__(...)

// Built-in variables of the running thread.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

namespace l4q_emu {

void run_grid(const std::function<void()>& body, dim3 grid, dim3 block, size_t smem);
unsigned char* dynamic_smem();

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t /*stream*/,
            A&&... args) {
  // Kernel parameters are copies, as on the device.
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  run_grid([&] { std::apply(kernel, params); }, grid, block, smem);
}

// Warp-level synchronisation of the lanes of the calling thread's warp.
void warp_sync();
int lane();
// Publishes one pointer per lane (slot 0..3) for the warp's collective operation in progress.
void warp_publish(int slot, const void* p);
const void* warp_peer(int slot, int lane);

// cp.async model.
void async_copy(void* dst, const void* src, size_t bytes, size_t zero_fill);
void async_commit();
void async_wait_prior(size_t prior);

float shfl_xor(float v, int lane_mask);

// Aborts with `what` unless p is a multiple of `alignment` (the device would fault or, for
// WMMA, behave undefined).
void require_aligned(const void* p, size_t alignment, const char* what);
[[noreturn]] void fail(const char* what);

}  // namespace l4q_emu

// ---------------------------------------------------------------------------------------
// Device built-ins used by the kernels
// ---------------------------------------------------------------------------------------
void __syncthreads();
inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  return l4q_emu::shfl_xor(v, lane_mask);
}
float atomicAdd(float* address, float value);

inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
template <typename T>
inline T __ldg(const T* p) {
  l4q_emu::require_aligned(p, alignof(T), "__ldg: misaligned vector load");
  return *p;
}
