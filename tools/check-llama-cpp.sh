#!/usr/bin/env bash
# Loads our GGUF export in llama.cpp itself (through llama-cpp-python, which builds llama.cpp
# from source) and compares its logits and perplexity with l4q's fake-quant model of the run.
#
# llama-cpp-python goes into its own cached venv (${L4Q_LLAMA_CPP_VENV:-~/.cache/l4q-llama-cpp}),
# built once; the install time is printed (and recorded in docs/formats.md, "GGUF export").
# Not part of CI: building llama.cpp on CI's 2 cores takes longer than CI's budget allows
# for one check.
# Usage: tools/check-llama-cpp.sh [BUILD_DIR]   (needs l4q-train, l4q-export and
# tests/l4q_interop_export built).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-${L4Q_BUILD_DIR:-build}}
version=0.3.36
venv=${L4Q_LLAMA_CPP_VENV:-$HOME/.cache/l4q-llama-cpp}
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
  start=$(date +%s)
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "numpy<2" "llama-cpp-python==$version"
  echo "llama-cpp-python $version installed (llama.cpp built from source) in $(( $(date +%s) - start )) s"
fi
L4Q_BUILD_DIR="$(cd "$build" && pwd)" L4Q_SOURCE_DIR="$PWD" "$venv/bin/python" tools/check_llama_cpp.py
