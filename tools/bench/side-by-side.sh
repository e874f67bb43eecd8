#!/usr/bin/env bash
# Side-by-side training-step benchmark: l4q's `lora` and `qat-lora` (l4q-train) against PEFT
# LoRA and torchao QAT-LoRA in PyTorch 2.x from PyPI, on one synthetic LLaMA checkpoint, same
# rank / alpha / targets / sequence / batch / threads. Prints ratios; docs/benchmarks.md has
# the recorded numbers.
#
# Makes (once) a venv with pinned torch/peft/torchao/transformers in $L4Q_BENCH_VENV
# (~/.cache/l4q-bench-venv) and reports how long the install took. The PyPI torch wheel is a
# CUDA build; it runs on CPU here (no GPU needed).
#
# Usage: tools/bench/side-by-side.sh [--build-dir DIR] [peft_side_by_side.py options...]
#   (docs/benchmarks.md: --hidden 768 --inter 2048 --layers 4 --heads 12 --seq 256 --batch 4
#    --steps 8 --warmup 2 --threads 2)
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${L4Q_BENCH_VENV:-$HOME/.cache/l4q-bench-venv}
# Pins: torch as tools/ci-torch2.sh; peft/torchao/transformers releases that support it.
pins=(torch==2.12.1 peft==0.21.2 torchao==0.18.0 transformers==4.57.6 accelerate==1.13.0
      safetensors==0.7.0 numpy==2.3.5)

if [ ! -f "$venv/.complete" ]; then
  echo "side-by-side: creating $venv (${pins[*]})" >&2
  t0=$(date +%s.%N)
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}"
  t1=$(date +%s.%N)
  printf '%s\n' "${pins[@]}" > "$venv/.complete"
  echo "side-by-side: venv installed in $(python3 -c "print(round($t1 - $t0))") s," \
       "$(du -sh "$venv" | cut -f1)" >&2
fi

build=build
if [ "${1:-}" = "--build-dir" ]; then build=$2; shift 2; fi
[ -x "$build/tools/l4q-train" ] || { echo "side-by-side: $build/tools/l4q-train missing (build it first)" >&2; exit 1; }
exec "$venv/bin/python" tools/bench/peft_side_by_side.py --l4q-train "$build/tools/l4q-train" "$@"
