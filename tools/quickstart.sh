#!/usr/bin/env bash
# The main job on the bundled default: installs what is missing, builds, fine-tunes the bundled
# stories260K with L4Q (3-bit, group 32) on the bundled Alpaca sample, and prints what it did:
# validation loss before/after, the run directory, and a sample from the fine-tuned model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
build=${L4Q_BUILD_DIR:-build}
run=runs/quickstart-stories260k-l4q-3bit
"$build/tools/l4q-train" --config configs/stories260k-l4q-3bit.json --output "$run" --force --quiet
echo
echo "== run directory: $run (config.json, metrics.jsonl, summary.json, checkpoints/)"
cat "$run/summary.json"
echo
echo "== sample from the fine-tuned 3-bit model (fake-quantized weights of the run):"
"$build/tools/l4q-generate" --model "$run" --prompt "Once upon a time" --max-new-tokens 60
