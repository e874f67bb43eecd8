// Shared by the kernel checkers in kernels/dev (llm.c dev/cuda style): every checker first
// verifies every output of every kernel against the CPU reference on several shapes, ragged
// ones included, and stops with exit code 1 on a mismatch; only then does it time the kernels
// against cuBLAS and the unfused path and print a table. Without a usable device it says why and
// exits with code 2.
#pragma once
#include <cublas_v2.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "harness/harness.h"

namespace l4q::kernels::dev {

namespace h = harness;

inline void require_device(const char* tool) {
  const auto reason = h::no_device_reason();
  if (!reason.empty()) {
    std::printf("%s: no usable CUDA device (%s); nothing to check or time.\n", tool,
                reason.c_str());
    std::exit(2);
  }
  cudaDeviceProp prop;
  h::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  int mem_khz = 0, bus_bits = 0, dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  std::printf("%s on %s (sm_%d%d, %d SMs, peak memory bandwidth %.0f GB/s)\n", tool, prop.name,
              prop.major, prop.minor, prop.multiProcessorCount,
              2.0 * mem_khz * 1e3 * bus_bits / 8 / 1e9);
}

// Peak DRAM bandwidth from the device attributes, bytes/s (0 if unknown).
inline double peak_bandwidth() {
  int mem_khz = 0, bus_bits = 0, dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  return 2.0 * mem_khz * 1e3 * bus_bits / 8;
}

inline void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s: cuBLAS status %d\n", what, static_cast<int>(s));
    std::exit(1);
  }
}

class Blas {
 public:
  Blas() { check_blas(cublasCreate(&h_), "cublasCreate"); }
  ~Blas() { cublasDestroy(h_); }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // Row-major C [m, n] = A [m, k] B^T where B is [n, k] (Y = X W^T).
  void abt(const void* A, const void* B, void* C, int m, int n, int k, cudaDataType ab,
           cudaDataType c, cublasComputeType_t compute) {
    const float one = 1.f, zero = 0.f;
    check_blas(cublasGemmEx(h_, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, B, ab, k, A, ab, k, &zero,
                            C, c, n, compute, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (A B^T)");
  }
  // Row-major C [m, n] = A [m, k] B where B is [k, n] (dX = dY W).
  void ab(const void* A, const void* B, void* C, int m, int n, int k, cudaDataType ab,
          cudaDataType c, cublasComputeType_t compute) {
    const float one = 1.f, zero = 0.f;
    check_blas(cublasGemmEx(h_, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, B, ab, n, A, ab, k, &zero,
                            C, c, n, compute, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (A B)");
  }
  // Row-major C [m, n] = A^T B where A is [k, m] and B is [k, n] (G = dY^T X).
  void atb(const void* A, const void* B, void* C, int m, int n, int k, cudaDataType ab,
           cudaDataType c, cublasComputeType_t compute) {
    const float one = 1.f, zero = 0.f;
    check_blas(cublasGemmEx(h_, CUBLAS_OP_N, CUBLAS_OP_T, n, m, k, &one, B, ab, n, A, ab, m, &zero,
                            C, c, n, compute, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (A^T B)");
  }

 private:
  cublasHandle_t h_;
};

inline cudaDataType blas_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Validation lines: "check  <what>  rel err 1.2e-04  tol 1.0e-02  ok".
struct Verifier {
  int failures = 0;
  void report(const std::string& what, double err, double tol) {
    const bool ok = err < tol;
    failures += !ok;
    std::printf("  check %-58s rel err %8.2e  tol %8.1e  %s\n", what.c_str(), err, tol,
                ok ? "ok" : "FAIL");
  }
  void finish(const char* tool) const {
    if (failures) {
      std::printf("%s: %d check(s) failed; not timing.\n", tool, failures);
      std::exit(1);
    }
    std::printf("all checks passed\n\n");
  }
};

struct Row {
  std::string name;
  double ms, flops, bytes;
};

// | variant | ms | TFLOP/s | GB/s | vs baseline |   (baseline = first row)
inline void print_table(const char* title, const std::vector<Row>& rows) {
  std::printf("%s\n", title);
  std::printf("  %-44s %10s %9s %9s %12s\n", "variant", "ms", "TFLOP/s", "GB/s", "vs row 1");
  for (const auto& r : rows)
    std::printf("  %-44s %10.4f %9.1f %9.1f %11.1f%%\n", r.name.c_str(), r.ms,
                r.flops / r.ms / 1e9, r.bytes / r.ms / 1e6, 100.0 * rows.front().ms / r.ms);
  std::printf("\n");
}

inline int arg_int(int argc, char** argv, const char* name, int def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  return def;
}

}  // namespace l4q::kernels::dev
