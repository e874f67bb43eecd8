#!/usr/bin/env bash
# Checks l4q-export --format gptq against GPTQModel's own unpacking code (CPU, torch ops).
#
# GPTQModel needs torch >= 2.x and builds CUDA extensions, so it is not installed: this script
# downloads its source distribution once (pip download --no-deps, cached in
# ${L4Q_GPTQMODEL_CACHE:-~/.cache/l4q-gptqmodel}) and tools/check_gptq_gptqmodel.py runs the
# unchanged functions PackableQuantLinear.dequantize_weight / _dequantize_from_codes and the
# shift helpers taken from that source, on torch 1.13, against our exports.
# Usage: tools/check-gptq.sh [BUILD_DIR]   (needs l4q-train, l4q-export built; .venv from
# tools/setup-venv.sh). Result recorded in docs/formats.md ("GPTQ export").
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-${L4Q_BUILD_DIR:-build}}
version=7.7.0
cache=${L4Q_GPTQMODEL_CACHE:-$HOME/.cache/l4q-gptqmodel}
src="$cache/gptqmodel-$version"
if [ ! -f "$src/gptqmodel/nn_modules/qlinear/__init__.py" ]; then
  mkdir -p "$cache"
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$cache" \
    "gptqmodel==$version"
  tar -xzf "$cache/gptqmodel-$version.tar.gz" -C "$cache"
fi
L4Q_GPTQMODEL_SRC="$src" L4Q_BUILD_DIR="$(cd "$build" && pwd)" L4Q_SOURCE_DIR="$PWD" \
  .venv/bin/python tools/check_gptq_gptqmodel.py
