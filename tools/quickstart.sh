#!/usr/bin/env bash
# The main job on the bundled default: installs what is missing, builds, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
build=${L4Q_BUILD_DIR:-build}
"$build/tools/l4q-demo"
