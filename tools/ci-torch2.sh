#!/usr/bin/env bash
# Builds l4q (library, tools, tests) against an official LibTorch 2.x and runs the unit tests.
#
# The LibTorch is the one inside the PyPI `torch` wheel (a CUDA 13.0 build; the only official
# LibTorch reachable from here). Only its headers, CMake files and shared libraries are
# unpacked, into a cache outside the repo, so a second run skips the download. The libraries
# that libtorch_cuda.so needs and the CUDA toolkit in /usr/local/cuda lacks come from their
# nvidia-* wheels, laid out where the wheel's RUNPATH ($ORIGIN/../../nvidia/*/lib) looks.
# No GPU is needed to run the unit tests: CUDA is only initialised on first use.
#
# Environment: L4Q_TORCH2_VERSION (default below), L4Q_TORCH2_CACHE (~/.cache/l4q-torch2),
# L4Q_TORCH2_BUILD_DIR (build-torch2), L4Q_TORCH2_CUDA (the L4Q_CUDA value, default AUTO),
# TORCH_CUDA_ARCH_LIST (default "8.0;9.0", as kernels/), L4Q_TORCH2_JOBS (nproc),
# L4Q_TORCH2_TESTS=0 to build only. Timings and sizes: docs/build.md.
# Needs: what tools/install-deps.sh installs, python3 with pip, unzip, and the CUDA toolkit
# (nvcc): the wheel's TorchConfig.cmake enables the CUDA language even when l4q's kernels are off.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${L4Q_TORCH2_VERSION:-2.12.1}
# Libraries libtorch_cuda.so links against that /usr/local/cuda (13.0) lacks (cuFile,
# cuSPARSELt, NVSHMEM) or has too old (its NCCL 2.28 misses symbols of 2.29): the versions
# torch ${version} requires.
extra_wheels=(nvidia-cufile==1.15.1.6 nvidia-cusparselt-cu13==0.8.1 nvidia-nvshmem-cu13==3.4.5
              nvidia-nccl-cu13==2.29.7)
cache=${L4Q_TORCH2_CACHE:-$HOME/.cache/l4q-torch2}
build=${L4Q_TORCH2_BUILD_DIR:-build-torch2}
root="$cache/torch-$version"   # root/torch/{include,lib,share}, root/nvidia/*/lib

t0=$(date +%s)
if [ ! -f "$root/.complete" ]; then
  command -v unzip >/dev/null || { echo "ci-torch2: unzip is required" >&2; exit 1; }
  echo "ci-torch2: fetching torch==$version into $cache" >&2
  wheels="$cache/wheels-$version"
  rm -rf "$wheels" "$root.partial"
  mkdir -p "$wheels" "$root.partial"
  # Explicit tags: the same wheels whatever python3 runs pip (glibc 2.17 to 2.28 builds).
  platforms=(--platform manylinux2014_x86_64)
  for minor in $(seq 17 28); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
    -d "$wheels" "torch==$version" "${extra_wheels[@]}"
  unzip -q "$wheels"/torch-"$version"-*.whl 'torch/include/*' 'torch/share/*' 'torch/lib/*' \
    -x 'torch/lib/libtorch_python.so' -d "$root.partial"
  unzip -q "$wheels"/nvidia_cufile-*.whl 'nvidia/cu13/lib/libcufile.so.0' -d "$root.partial"
  unzip -q "$wheels"/nvidia_cusparselt_cu13-*.whl 'nvidia/cusparselt/lib/*' -d "$root.partial"
  unzip -q "$wheels"/nvidia_nvshmem_cu13-*.whl 'nvidia/nvshmem/lib/*.so*' -d "$root.partial"
  unzip -q "$wheels"/nvidia_nccl_cu13-*.whl 'nvidia/nccl/lib/*' -d "$root.partial"
  rm -rf "$wheels" "$root"
  touch "$root.partial/.complete"
  mv "$root.partial" "$root"
fi
t1=$(date +%s)

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  # Relative paths in the cache keys: a fresh clone elsewhere still hits.
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
fi
# CMAKE_PREFIX_PATH is the torch prefix (not share/cmake) so that TorchConfig's find_library
# calls find the wheel's libc10/libtorch rather than Debian's in /usr/lib.
# TORCH_CUDA_ARCH_LIST: with no GPU to detect, Torch's CMake would add sm_50, which nvcc 13
# no longer supports, to CMAKE_CUDA_FLAGS; it also sets CMAKE_CUDA_ARCHITECTURES to OFF, so
# these -gencode flags are the only architectures kernels/ is compiled for.
torch_dir="$root/torch/share/cmake/Torch"
# A build dir configured against another LibTorch keeps its cached find results: start over.
if [ -f "$build/CMakeCache.txt" ] \
   && ! grep -qx "Torch_DIR:PATH=$torch_dir" "$build/CMakeCache.txt"; then
  rm -f "$build/CMakeCache.txt"
fi
# Link time: CUDA's imported targets put /usr/local/cuda/lib64 on the executables' -rpath, where
# ld would find the toolkit's older libnccl for libtorch_cuda.so; -rpath-link comes first.
rpath_link=$(printf -- '-Wl,-rpath-link,%s ' "$root"/nvidia/*/lib)
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" \
  -DCMAKE_PREFIX_PATH="$root/torch" -DTorch_DIR:PATH="$torch_dir" \
  -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" \
  -DL4Q_CUDA="${L4Q_TORCH2_CUDA:-AUTO}" -DCMAKE_EXE_LINKER_FLAGS="$rpath_link" \
  -DL4Q_VENV="$PWD/${L4Q_VENV:-.venv}" >"$build/ci-torch2-configure.log" 2>&1 \
  || { cat "$build/ci-torch2-configure.log" >&2; exit 1; }
cmake --build "$build" -j "${L4Q_TORCH2_JOBS:-$(nproc)}"
t2=$(date +%s)

rc=0
if [ "${L4Q_TORCH2_TESTS:-1}" != 0 ]; then
  ctest --test-dir "$build" -L unit --output-on-failure -j "${L4Q_TORCH2_JOBS:-$(nproc)}" || rc=$?
fi
t3=$(date +%s)
echo "ci-torch2: torch $version: fetch $((t1 - t0)) s, configure+build $((t2 - t1)) s," \
  "tests $((t3 - t2)) s" >&2
exit "$rc"
