// The SIMT emulator (see simt.h) and the CUDA runtime calls of the emulated build.
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace l4q_emu {
namespace {

struct Copy {
  void* dst;
  const void* src;
  size_t bytes, zero;
};

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  ucontext_t ctx;
  State state = State::Ready;
  std::vector<std::vector<Copy>> committed;  // oldest first
  std::vector<Copy> open;
};

constexpr size_t kStackBytes = 512 * 1024;
constexpr int kMaxThreads = 1024;

struct Block {
  int nthreads = 0;
  int current = -1;
  ucontext_t sched;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<const void*> published;  // [thread][4]
  std::vector<float> shfl;             // [thread]
};

Block* g_block = nullptr;
std::mt19937_64 g_rng(0x5eed);
// Dynamic shared memory of the running block; 1024-byte aligned like the device's (the kernels
// declare it __align__(128)).
unsigned char* g_smem = nullptr;
size_t g_smem_bytes = 0;
std::vector<std::vector<char>> g_stacks;

Fiber& self() { return g_block->fibers[g_block->current]; }

void yield_to_scheduler() {
  Fiber& f = self();
  swapcontext(&f.ctx, &g_block->sched);
}

void do_copy(const Copy& c) {
  std::memcpy(c.dst, c.src, c.bytes - c.zero);
  std::memset(static_cast<char*>(c.dst) + (c.bytes - c.zero), 0, c.zero);
}

void drain(Fiber& f) {
  for (const auto& g : f.committed)
    for (const auto& c : g) do_copy(c);
  f.committed.clear();
  for (const auto& c : f.open) do_copy(c);
  f.open.clear();
}

void fiber_entry() {
  (*g_block->body)();
  Fiber& f = self();
  drain(f);
  f.state = State::Done;
  // uc_link returns to the scheduler.
}

[[noreturn]] void deadlock(const Block& b) {
  std::fprintf(stderr, "l4q SIMT emulator: deadlock in block (%u, %u): no thread can proceed\n",
               blockIdx.x, blockIdx.y);
  for (int t = 0; t < b.nthreads; ++t) {
    const char* s[] = {"ready", "at __syncthreads", "at a warp-collective operation", "done"};
    std::fprintf(stderr, "  thread %d: %s\n", t, s[static_cast<int>(b.fibers[t].state)]);
  }
  std::abort();
}

// Releases the barriers whose participants have all arrived; true if any was released.
bool release_barriers(Block& b) {
  bool released = false;
  int done = 0, at_block = 0;
  for (const auto& f : b.fibers) {
    done += f.state == State::Done;
    at_block += f.state == State::AtBlockBarrier;
  }
  if (at_block > 0 && at_block + done == b.nthreads) {
    for (auto& f : b.fibers)
      if (f.state == State::AtBlockBarrier) f.state = State::Ready;
    released = true;
  }
  for (int w = 0; w * 32 < b.nthreads; ++w) {
    const int lo = w * 32, hi = std::min(lo + 32, b.nthreads);
    int at_warp = 0, lanes_done = 0;
    for (int t = lo; t < hi; ++t) {
      at_warp += b.fibers[t].state == State::AtWarpBarrier;
      lanes_done += b.fibers[t].state == State::Done;
    }
    if (at_warp > 0 && at_warp + lanes_done == hi - lo) {
      for (int t = lo; t < hi; ++t)
        if (b.fibers[t].state == State::AtWarpBarrier) b.fibers[t].state = State::Ready;
      released = true;
    }
  }
  return released;
}

void run_block(Block& b) {
  for (int t = 0; t < b.nthreads; ++t) {
    Fiber& f = b.fibers[t];
    f = Fiber{};
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = g_stacks[t].data();
    f.ctx.uc_stack.ss_size = g_stacks[t].size();
    f.ctx.uc_link = &b.sched;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  std::vector<int> order(b.nthreads);
  std::iota(order.begin(), order.end(), 0);
  const int warps = (b.nthreads + 31) / 32;
  std::vector<char> chosen(warps);
  for (;;) {
    // Each round resumes the ready threads of a random subset of the warps (in random order),
    // so warps drift apart between barriers instead of advancing in lockstep: a missing
    // __syncthreads then lets one warp overwrite what another still reads.
    bool any_ready = false;
    for (const auto& f : b.fibers) any_ready = any_ready || f.state == State::Ready;
    if (any_ready) {
      bool any_chosen_ready = false;
      while (!any_chosen_ready) {
        for (int w = 0; w < warps; ++w) chosen[w] = (g_rng() & 3) != 0;
        for (int t = 0; t < b.nthreads; ++t)
          any_chosen_ready = any_chosen_ready || (chosen[t / 32] && b.fibers[t].state == State::Ready);
      }
      std::shuffle(order.begin(), order.end(), g_rng);
      for (int t : order) {
        if (!chosen[t / 32] || b.fibers[t].state != State::Ready) continue;
        b.current = t;
        threadIdx = uint3{static_cast<unsigned>(t), 0, 0};
        swapcontext(&b.sched, &b.fibers[t].ctx);
      }
    }
    const bool released = release_barriers(b);
    bool all_done = true;
    for (const auto& f : b.fibers) all_done = all_done && f.state == State::Done;
    if (all_done) return;
    if (!any_ready && !released) deadlock(b);
  }
}

}  // namespace

void run_grid(const std::function<void()>& body, dim3 grid, dim3 block, size_t smem) {
  if (block.y != 1 || block.z != 1 || block.x < 1 || block.x > kMaxThreads || grid.z != 1) {
    std::fprintf(stderr, "l4q SIMT emulator: unsupported launch shape\n");
    std::abort();
  }
  if (g_stacks.size() < block.x) g_stacks.resize(block.x, std::vector<char>(kStackBytes));
  Block b;
  b.nthreads = static_cast<int>(block.x);
  b.body = &body;
  b.fibers.resize(b.nthreads);
  b.published.assign(static_cast<size_t>(b.nthreads) * 4, nullptr);
  b.shfl.assign(b.nthreads, 0.0f);
  gridDim = grid;
  blockDim = block;
  Block* outer = g_block;
  g_block = &b;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      blockIdx = uint3{bx, by, 0};
      // Uninitialised shared memory reads as NaN (0xFF bytes are NaN in fp32 and bf16).
      const size_t bytes = (smem + 1023) / 1024 * 1024 + 1024;
      if (bytes > g_smem_bytes) {
        std::free(g_smem);
        g_smem = static_cast<unsigned char*>(std::aligned_alloc(1024, bytes));
        g_smem_bytes = bytes;
      }
      std::memset(g_smem, 0xFF, g_smem_bytes);
      run_block(b);
    }
  g_block = outer;
}

unsigned char* dynamic_smem() { return g_smem; }

int lane() { return g_block->current % 32; }

void warp_sync() {
  self().state = State::AtWarpBarrier;
  yield_to_scheduler();
}

void warp_publish(int slot, const void* p) { g_block->published[g_block->current * 4 + slot] = p; }

const void* warp_peer(int slot, int peer_lane) {
  const int t = (g_block->current / 32) * 32 + peer_lane;
  return g_block->published[t * 4 + slot];
}

void fail(const char* what) {
  std::fprintf(stderr, "l4q SIMT emulator: %s\n", what);
  std::abort();
}

void require_aligned(const void* p, size_t alignment, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % alignment != 0) {
    std::fprintf(stderr, "l4q SIMT emulator: %s (address %p, required alignment %zu)\n", what, p,
                 alignment);
    std::abort();
  }
}

void async_copy(void* dst, const void* src, size_t bytes, size_t zero_fill) {
  if (bytes != 4 && bytes != 8 && bytes != 16) {
    std::fprintf(stderr, "l4q SIMT emulator: cp.async of %zu bytes\n", bytes);
    std::abort();
  }
  require_aligned(dst, bytes, "cp.async: misaligned shared-memory destination");
  require_aligned(src, bytes, "cp.async: misaligned global source");
  const Copy c{dst, src, bytes, zero_fill};
  if (g_rng() & 1)
    do_copy(c);  // landed at once
  else
    self().open.push_back(c);  // lands at the covering wait
}

void async_commit() {
  Fiber& f = self();
  f.committed.push_back(std::move(f.open));
  f.open.clear();
}

void async_wait_prior(size_t prior) {
  Fiber& f = self();
  while (f.committed.size() > prior) {
    for (const auto& c : f.committed.front()) do_copy(c);
    f.committed.erase(f.committed.begin());
  }
}

float shfl_xor(float v, int lane_mask) {
  Block& b = *g_block;
  const int t = b.current, base = (t / 32) * 32;
  b.shfl[t] = v;
  warp_sync();
  const float r = b.shfl[base + ((t - base) ^ lane_mask)];
  warp_sync();
  return r;
}

}  // namespace l4q_emu

void __syncthreads() {
  l4q_emu::self().state = l4q_emu::State::AtBlockBarrier;
  l4q_emu::yield_to_scheduler();
}

// Fibers run one at a time, so a read-modify-write is atomic.
float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

// ---------------------------------------------------------------------------------------
// CUDA runtime calls of the emulated build: device memory is host memory.
// ---------------------------------------------------------------------------------------
extern "C" {

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "l4q SIMT emulator (CPU)");
  prop->major = 8;
  prop->minor = 0;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrL2CacheSize ? (4 << 20) : 0;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t size) {
  *ptr = std::aligned_alloc(256, (size + 255) / 256 * 256 + 256);
  return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t CUDARTAPI cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind) {
  std::memcpy(dst, src, count);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t CUDARTAPI cudaGetLastError(void) { return cudaSuccess; }

cudaError_t CUDARTAPI cudaFuncSetAttribute(const void*, enum cudaFuncAttribute, int) {
  return cudaSuccess;
}

const char* CUDARTAPI cudaGetErrorName(cudaError_t error) {
  return error == cudaSuccess ? "cudaSuccess"
         : error == cudaErrorInvalidValue ? "cudaErrorInvalidValue"
                                          : "cudaError (emulator)";
}

const char* CUDARTAPI cudaGetErrorString(cudaError_t error) { return cudaGetErrorName(error); }

}  // extern "C"
