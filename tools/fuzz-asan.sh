#!/usr/bin/env bash
# Builds the unit tests with AddressSanitizer + UndefinedBehaviorSanitizer in their own build
# directory and runs the checkpoint-reader corruption tests (random mutations of valid
# safetensors, GGUF, llama2.c and HF-directory files) plus the readers' bad-input tests.
#
#   bash tools/fuzz-asan.sh            # build dir: build-asan (L4Q_ASAN_BUILD_DIR), jobs: nproc (L4Q_JOBS)
#
# LibTorch itself is not instrumented; l4q's library and tests are. Leak detection is off
# (LibTorch keeps static allocations alive at exit).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${L4Q_ASAN_BUILD_DIR:-build-asan}
jobs=${L4Q_JOBS:-$(nproc)}
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
start=$(date +%s)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" \
  -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" \
  -DL4Q_BUILD_TOOLS=OFF -DL4Q_BUILD_BENCH=OFF -DL4Q_CUDA=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target l4q_unit_tests
built=$(date +%s)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$build/tests/l4q_unit_tests" --gtest_brief=1 \
  --gtest_filter='IoCorruption*:Safetensors*:Gguf*:GgmlBlocks*:Llama2c*:HfConfig*:QkLayout*:Checkpoint*'
done_=$(date +%s)
echo "fuzz-asan: build $((built - start)) s, tests $((done_ - built)) s"
