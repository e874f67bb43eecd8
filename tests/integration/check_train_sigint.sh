#!/usr/bin/env bash
# SIGINT during l4q-train: a long run on the bundled stories260K gets SIGINT once its first
# training step is logged; it must save a checkpoint before max_steps, exit with 130 (the
# documented "interrupted" code) and mark summary.json interrupted; then --resume must carry
# on from that checkpoint's step and finish.
# Usage: check_train_sigint.sh L4Q_TRAIN SOURCE_DIR SCRATCH_DIR
set -uo pipefail
train=$1 src=$2 out=$3
run=$out/run
fail() { echo "check_train_sigint: $*" >&2; [ -f "$out/stderr" ] && tail -5 "$out/stderr" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
max_steps=5000
"$train" --config "$src/configs/stories260k-l4q-3bit.json" --output "$run" --steps $max_steps \
  --threads 1 --set data.max_records=60 --set data.max_length=160 --set eval_every=0 \
  --set log_every=1 --set save_every=0 --set "model=\"$src/assets/stories260K/stories260K.gguf\"" \
  --set "data.train=\"$src/assets/alpaca/alpaca_en_demo.json\"" --no-progress --quiet \
  >"$out/stdout" 2>"$out/stderr" &
pid=$!
# metrics.jsonl is flushed per event: wait for the first training step (at most 5 minutes).
for _ in $(seq 3000); do
  grep -qs '"event":"train"' "$run/metrics.jsonl" && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
grep -qs '"event":"train"' "$run/metrics.jsonl" || { kill $pid 2>/dev/null; fail "no training step logged"; }
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] || fail "interrupted run exited with $rc, expected 130"
# A process killed by the signal also reports 130 to the shell: the note, the summary and the
# checkpoint below are what show that l4q-train handled it.
grep -q 'interrupted: continue with --resume' "$out/stderr" || fail "no 'interrupted' note on stderr"

summary=$(cat "$run/summary.json") || fail "no summary.json"
echo "$summary" | grep -q '"interrupted": true' || fail "summary.json not marked interrupted: $summary"
ckpt=$(ls -d "$run"/checkpoints/step-* 2>/dev/null | sort -t- -k2 -n | tail -1)
[ -n "$ckpt" ] && [ -f "$ckpt/state.json" ] && [ -f "$ckpt/trainable.safetensors" ] ||
  fail "no complete checkpoint in $run/checkpoints"
ckpt_name=${ckpt##*/}
step=$((10#${ckpt_name#step-}))  # directory names are zero-padded
[ "$step" -ge 1 ] && [ "$step" -lt $max_steps ] || fail "checkpoint step $step not in [1, $max_steps)"
grep -q "\"step\": *$step" "$ckpt/state.json" || fail "$ckpt/state.json does not say step $step"
# The checkpoint is the last event before the end: nothing was trained after it.
last_train=$(grep '"event":"train"' "$run/metrics.jsonl" | tail -1 | sed 's/.*"step":\([0-9]*\).*/\1/')
[ "$last_train" = "$step" ] || fail "last logged step $last_train, checkpoint step $step"

# Resume: two more steps from the checkpoint.
target=$((step + 2))
"$train" --resume "$run" --steps $target --no-progress --quiet >"$out/stdout2" 2>"$out/stderr2"
rc=$?
[ $rc -eq 0 ] || { cat "$out/stderr2" >&2; fail "resume exited with $rc"; }
grep -q "\"resumed_from\":\"[^\"]*$ckpt_name\"" "$run/metrics.jsonl" || fail "metrics.jsonl lacks resumed_from $ckpt_name"
grep -q "\"steps\": $target" "$run/summary.json" || fail "resumed run did not end at step $target: $(cat "$run/summary.json")"
grep -q '"interrupted": false' "$run/summary.json" || fail "resumed run marked interrupted"
ls -d "$run"/checkpoints/step-* | grep -q "step-0*$target\$" || fail "no checkpoint for step $target after resume"
echo "check_train_sigint: SIGINT at step $step -> exit 130 with checkpoint; resumed to step $target"
