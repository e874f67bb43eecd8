// Emulator stand-in for <cuda_pipeline_primitives.h> (cp.async): see simt.h for the model.
#pragma once
#include <cstddef>

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t size_and_align,
                                    size_t zfill = 0) {
  l4q_emu::async_copy(dst, src, size_and_align, zfill);
}
inline void __pipeline_commit() { l4q_emu::async_commit(); }
inline void __pipeline_wait_prior(size_t prior) { l4q_emu::async_wait_prior(prior); }
