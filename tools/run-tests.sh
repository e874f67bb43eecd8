#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every ctest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
cd "${L4Q_BUILD_DIR:-build}"
ctest --output-on-failure -j 2
