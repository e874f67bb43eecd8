#!/usr/bin/env bash
# Creates ${L4Q_VENV:-.venv} with the pinned reference packages of tests/interop. Uses Debian's
# python3 so Debian's python3-torch (CPU, 1.13) is visible; no CUDA wheel is downloaded.
# Idempotent: does nothing when the requirements file has not changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${L4Q_VENV:-.venv}
req=tests/interop/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
