#include "l4q/memory.h"

#include <c10/core/CPUAllocator.h>
#include <sys/resource.h>
#include <torch/version.h>

#include <atomic>

namespace l4q {

namespace {

struct Counters {
  std::atomic<int64_t> live{0}, peak{0};
};

// SetCPUAllocator only replaces an allocator of lower or equal priority.
uint8_t next_priority() {
  static std::atomic<int> p{10};
  return static_cast<uint8_t>(++p);
}

// LibTorch 2.3 made Allocator::allocate() non-const and added the pure virtual copy_data().
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define L4Q_ALLOCATOR_2_3 1
#else
#define L4Q_ALLOCATOR_2_3 0
#endif

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base)
      : base_(base), counters_(std::make_shared<Counters>()) {}

#if L4Q_ALLOCATOR_2_3
  c10::DataPtr allocate(size_t n) override {
#else
  c10::DataPtr allocate(size_t n) const override {
#endif
    auto* ctx = new Ctx{base_->allocate(n), static_cast<int64_t>(n), counters_};
    void* data = ctx->inner.get();
    const int64_t now = counters_->live += ctx->n;
    int64_t p = counters_->peak.load();
    while (now > p && !counters_->peak.compare_exchange_weak(p, now)) {
    }
    return {data, ctx, &CountingAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
#if L4Q_ALLOCATOR_2_3
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
#endif

  c10::Allocator* base() const { return base_; }
  Counters& counters() const { return *counters_; }

 private:
  struct Ctx {
    c10::DataPtr inner;
    int64_t n;
    std::shared_ptr<Counters> counters;  // outlives the meter while tensors live
  };
  static void release(void* p) {
    auto* ctx = static_cast<Ctx*>(p);
    ctx->counters->live -= ctx->n;
    delete ctx;
  }
  c10::Allocator* base_;
  std::shared_ptr<Counters> counters_;
};

}  // namespace

struct MemoryMeter::Impl {
  // Allocators must outlive every tensor they produced; a meter's allocator is small, so it
  // is intentionally leaked rather than risk a dangling deleter in a late-freed tensor.
  CountingAllocator* alloc;
};

MemoryMeter::MemoryMeter() : impl_(new Impl{new CountingAllocator(c10::GetCPUAllocator())}) {
  c10::SetCPUAllocator(impl_->alloc, next_priority());
}

MemoryMeter::~MemoryMeter() { c10::SetCPUAllocator(impl_->alloc->base(), next_priority()); }

int64_t MemoryMeter::live_bytes() const { return impl_->alloc->counters().live; }
int64_t MemoryMeter::peak_bytes() const { return impl_->alloc->counters().peak; }
void MemoryMeter::reset_peak() {
  auto& c = impl_->alloc->counters();
  c.peak = c.live.load();
}

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

}  // namespace l4q
