#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every ctest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/setup-venv.sh
bash tools/build.sh -DL4Q_VENV="$PWD/${L4Q_VENV:-.venv}"
cd "${L4Q_BUILD_DIR:-build}"
ctest --output-on-failure -j 2
