#!/usr/bin/env bash
# Fast check (no build) for the LibTorch 1.13 -> 2.x pitfalls met so far, so that code written
# against Debian's 1.13 keeps compiling against an official 2.x (tools/ci-torch2.sh builds it).
# Exits non-zero and names each offending file.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
files=$(git ls-files -co --exclude-standard -- src include tools tests kernels \
  | grep -E '\.(cpp|h|cc|cu|cuh)$' || true)
for f in $files; do
  [ -f "$f" ] || continue
  # 2.x's <ATen/ATen.h> no longer brings in at::NoGradGuard / at::AutoGradMode.
  if grep -qE '\bat::(NoGradGuard|AutoGradMode|GradMode)\b' "$f" \
     && ! grep -qE '#include <ATen/core/grad_mode.h>' "$f"; then
    echo "$f: uses at::NoGradGuard/AutoGradMode/GradMode without #include <ATen/core/grad_mode.h>"
    bad=1
  fi
  # 2.3 made c10::Allocator::allocate() non-const (and added the pure copy_data()).
  if grep -qE 'allocate\(size_t[^)]*\)\s*const\s*override' "$f" \
     && ! grep -q 'TORCH_VERSION_MAJOR' "$f"; then
    echo "$f: c10::Allocator::allocate() is non-const from LibTorch 2.3 (docs/build.md)"
    bad=1
  fi
done
if [ "$bad" = 0 ]; then
  echo "check-torch2-portability: ok"
fi
exit "$bad"
