// Counts the bytes of CPU tensor storage allocated while a MemoryMeter is alive: current and
// peak. Used by the trainer's summary and the benchmarks; exact (allocator level), unlike RSS.
#pragma once
#include <cstdint>
#include <memory>

namespace l4q {

class MemoryMeter {
 public:
  MemoryMeter();   // installs a counting CPU allocator in front of the current one
  ~MemoryMeter();  // restores the previous allocator; counts stay valid for live tensors
  MemoryMeter(const MemoryMeter&) = delete;
  MemoryMeter& operator=(const MemoryMeter&) = delete;

  int64_t live_bytes() const;  // bytes allocated through the meter and not yet freed
  int64_t peak_bytes() const;  // high-water mark of live_bytes since start or reset_peak()
  void reset_peak();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Peak resident set size of this process in bytes (getrusage).
int64_t peak_rss_bytes();

}  // namespace l4q
