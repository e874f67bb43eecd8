#!/usr/bin/env bash
# The main job on the bundled default: installs what is missing, builds, fine-tunes the bundled
# stories260K with L4Q (3-bit, group 32) on the bundled Alpaca sample, and prints what it did:
# validation loss before/after, the run directory, a sample from the fine-tuned model; then exports
# it (packed l4q format and a llama.cpp GGUF) and compares perplexities on the bundled WikiText-2
# head: float base model, the run's fake-quantized model, and the packed export.
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
echo
echo "== export: packed 3-bit codes + trained step/offset (l4q), and GGUF for llama.cpp"
"$build/tools/l4q-export" --from "$run" --format l4q --out "$run/export-l4q" --force
"$build/tools/l4q-export" --from "$run" --format gguf --out "$run/stories260k-l4q-3bit.gguf" --force
echo
echo "== perplexity on assets/wikitext2/wiki.test.head.raw (ctx 256, llama.cpp protocol)"
text=assets/wikitext2/wiki.test.head.raw
while IFS='|' read -r label m; do
  ppl=$("$build/tools/l4q-eval" --model "$m" perplexity --text "$text" --ctx 256 --llama-cpp \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print("%.3f over %d tokens" % (r["perplexity"], r["tokens_scored"]))')
  printf '  %-44s %s\n' "$label" "$ppl"
done <<EOF
float base model (stories260K.gguf)|assets/stories260K/stories260K.gguf
L4Q 3-bit, fake-quantized (the run)|$run
L4Q 3-bit, packed export (export-l4q)|$run/export-l4q
L4Q 3-bit, GGUF export (fp16 steps)|$run/stories260k-l4q-3bit.gguf
EOF
