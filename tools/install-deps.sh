#!/usr/bin/env bash
# Installs the Debian 12 packages l4q needs to build and test. Idempotent: when everything is
# present it returns at once without touching apt.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git
      libtorch-dev libopenblas0-openmp nlohmann-json3-dev libcli11-dev
      libgtest-dev libbenchmark-dev sentencepiece python3-venv python3-torch unzip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "l4q: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
