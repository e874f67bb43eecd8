#!/usr/bin/env python3
"""Reproduce the L4Q paper's claim on the bundled stories260K (issue #7).

Trains every method x bits x group size with the quick-start budget, evaluates each run
(instruction validation loss, retention perplexity, perplexity of the exported packed model)
and writes docs/results.md, docs/results-stories260k.jsonl and docs/results-stories260k.png.

    python3 tools/results-stories260k.py              # train what is missing, then tables + plot
    python3 tools/results-stories260k.py --tables-only  # tables + plot from the JSONL only

Resumable: a run whose summary.json and results.json exist is not redone, so an interrupted
grid continues where it stopped and a partial grid still gives (partial) tables.
Runs go sequentially (the numbers include wall time and peak memory, which two concurrent
trainings would distort).
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "tools")
CONFIG = "configs/stories260k-l4q-3bit.json"
RUNS = "runs/results-stories260k"
DATA = "assets/alpaca/alpaca_en_demo.json"
WIKI = "assets/wikitext2/wiki.test.head.raw"
GREEDY = "assets/stories260K/stories260K.greedy256.txt"
DOC = "docs/results.md"
JSONL = "docs/results-stories260k.jsonl"
PNG = "docs/results-stories260k.png"
DATE = "2026-12-02"
MACHINE = "2-core VM (no GPU), Debian libtorch 1.13.1 CPU, Release build, --threads 2"
COMMAND = "python3 tools/results-stories260k.py"

QUANT_METHODS = ["rtn", "lora-rtn", "qat-lora", "qa-lora", "lsq", "l4q"]
ALL_METHODS = ["float", "lora"] + QUANT_METHODS
BITS = [4, 3, 2]
GROUPS = [32, 64]
SEEDS = [0, 1, 2]
REL_TOL = 1e-4  # export must reproduce the fake-quant perplexity (same integers, same scales)
# Methods whose training-time model is not the exported one, by design (include/l4q/nn/
# baselines.h): lora-rtn trains float LoRA and is rounded at export; qat-lora trains a float
# LoRA branch beside the fake-quantized base, and the export rounds the merged W0 + BA (PTQ).
REQUANTIZED_AT_EXPORT = ("lora-rtn", "qat-lora")
# Other models reuse this driver (tools/results-smollm2.py sets these before running):
# arguments naming the model, `--set` overrides of the config for every run (training and the
# deployed-model scoring alike, so both see the same validation examples), and the texts
# whose perplexity is measured (key, path).
MODEL_ARGS = []
TRAIN_SETS = []
PPL_TEXTS = [("wiki", WIKI), ("greedy", GREEDY)]
# Blocks of docs/results.md that write_tables keeps as they are: hand-written notes, and the
# sections other models' drivers write there.
KEPT_BLOCKS = ("notes", "smollm2", "smollm2-notes")  # in nesting order

# ---------------------------------------------------------------------------------------------
# Fixed validation split.
#
# The trainer derives the Alpaca split from the run seed (data.seed = seed), so `--seed 1`
# would also change the validation set and the seed spread would mix data variance into
# training variance. We write the seed-0 split (val_fraction 0.1) to files once and give every
# run the same files; the split is reproduced bit for bit from src/data/split.cpp (mt19937_64,
# SplitMix64 stream "split", rejection-sampled Fisher-Yates), and checked below by comparing
# the float model's validation loss against the trainer's own split.

M64 = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


class _MT19937_64:
    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & M64
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & M64
        self.i = 312

    def __call__(self):
        if self.i >= 312:
            mt = self.mt
            for k in range(312):
                y = (mt[k] & 0xFFFFFFFF80000000) | (mt[(k + 1) % 312] & 0x7FFFFFFF)
                v = mt[(k + 156) % 312] ^ (y >> 1)
                if y & 1:
                    v ^= 0xB5026F5AA96619E9
                mt[k] = v
            self.i = 0
        y = self.mt[self.i]
        self.i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & M64


def _split_indices(n, fraction, seed):
    n_val = max(1, int(math.floor(fraction * n + 0.5)))
    rng = _MT19937_64(_splitmix64(seed ^ _splitmix64(0x73706C6974)))
    p = list(range(n))
    for i in range(n, 1, -1):
        threshold = ((1 << 64) - i) % i
        while True:
            x = rng()
            if x >= threshold:
                break
        j = x % i
        p[i - 1], p[j] = p[j], p[i - 1]
    return sorted(p[n_val:]), sorted(p[:n_val])


def fixed_split():
    d = os.path.join(RUNS, "data")
    train_p, val_p = os.path.join(d, "alpaca-train.json"), os.path.join(d, "alpaca-val.json")
    if not (os.path.exists(train_p) and os.path.exists(val_p)):
        os.makedirs(d, exist_ok=True)
        with open(DATA) as f:
            records = json.load(f)
        tr, va = _split_indices(len(records), 0.1, 0)
        for path, idx in ((train_p, tr), (val_p, va)):
            with open(path, "w") as f:
                json.dump([records[i] for i in idx], f, ensure_ascii=False, indent=1)
    return train_p, val_p


# ---------------------------------------------------------------------------------------------
# The grid, in priority order: a partial grid should already answer the main question (group
# 32, every method, every bit width), then the seed spread, the ablations, then group 64.


def run_specs():
    specs = []

    def add(name, method, bits=3, group=32, seed=0, args=(), sets=(), kind="grid", label=""):
        specs.append(dict(name=name, method=method, bits=bits, group=group, seed=seed,
                          args=list(args), sets=list(sets), kind=kind, label=label))

    add("float-s0", "float", bits=None, group=None)
    add("lora-s0", "lora", bits=None, group=None)
    for bits in (3, 2, 4):
        for m in QUANT_METHODS:
            add(f"{m}-b{bits}-g32-s0", m, bits, 32)
    for seed in (1, 2):
        for m in QUANT_METHODS:
            add(f"{m}-b3-g32-s{seed}", m, 3, 32, seed, kind="seed")
    for init in ("minmax", "absmax", "lsq+"):
        add(f"l4q-b3-g32-s0-init-{init}", "l4q", args=["--init", init], kind="ablation",
            label=f"init {init}")
    add("l4q-b3-g32-s0-gradscale-1", "l4q", sets=["quant.grad_scale=1.0"], kind="ablation",
        label="grad_scale 1.0")
    add("l4q-b3-g32-s0-warmup-20", "l4q", sets=["quant.warmup_steps=20"], kind="ablation",
        label="quant warm-up 20 steps")
    for qlr in ("2e-5", "2e-3"):
        add(f"l4q-b3-g32-s0-qlr-{qlr}", "l4q", args=["--quant-lr", qlr], kind="ablation",
            label=f"quant lr {qlr}")
    for bits in (3, 2, 4):
        for m in QUANT_METHODS:
            add(f"{m}-b{bits}-g64-s0", m, bits, 64)
        if bits == 3:
            # float LoRA's own seed spread: a reference for the quantized spreads, least urgent
            for seed in (1, 2):
                add(f"lora-s{seed}", "lora", None, None, seed, kind="seed")
    return specs


def snapshot_tools():
    # The grid takes about an hour; a rebuild of build/ in the meantime (a shared checkout)
    # would swap the binaries under it mid-grid (and fails exec while the linker writes them).
    # So every session runs a private copy of the three CLIs and libl4q, taken at its start.
    global BUILD
    snap = os.path.join(ROOT, RUNS, "bin")
    os.makedirs(snap, exist_ok=True)
    for tool in ("l4q-train", "l4q-eval", "l4q-export"):
        shutil.copy2(os.path.join(BUILD, tool), os.path.join(snap, tool))
    shutil.copy2(os.path.realpath(os.path.join(ROOT, "build", "libl4q.so.0")),
                 os.path.join(snap, "libl4q.so.0"))
    # the binaries' RUNPATH is build/; LD_LIBRARY_PATH takes precedence over RUNPATH
    os.environ["LD_LIBRARY_PATH"] = snap + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")
    BUILD = snap


def sh(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode


def perplexity(model, text, out, threads):
    # greedy256.txt is only ~258 tokens: llama.cpp's protocol would score one half-chunk, so a
    # sliding window (ctx 128, stride 64) scores every token instead.
    proto = ["--ctx", "256", "--llama-cpp"] if text == WIKI else ["--ctx", "128", "--stride", "64"]
    cmd = [os.path.join(BUILD, "l4q-eval"), "--model", model, "--threads", str(threads),
           "--out", out, "perplexity", "--text", text] + proto
    rc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True)
    if rc.returncode != 0:
        return None, rc.stderr.strip()[-500:]
    with open(out) as f:
        return json.load(f)["result"]["perplexity"], None


def clipped_trace(run_dir):
    trace = []
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return trace
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            cf = e.get("clipped_fraction")
            if e.get("event") == "eval" and cf:
                trace.append([e.get("step"), sum(cf.values()) / len(cf)])
    return trace


def mismatch_flag(r, rel):
    # lora-rtn / qat-lora are rounded at export: the trainer's training-time loss differs.
    if rel <= REL_TOL:
        return ""
    return " (by design: rounded at export)" if r["method"] in REQUANTIZED_AT_EXPORT else " MISMATCH"


def do_run(spec, threads, train_p, val_p):
    d = os.path.join(RUNS, spec["name"])
    res_path = os.path.join(d, "results.json")
    summ = os.path.join(d, "summary.json")
    if os.path.exists(res_path) and os.path.exists(summ):
        with open(res_path) as f:
            return json.load(f)
    log = os.path.join(RUNS, "logs", spec["name"] + ".log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    if not os.path.exists(summ):
        cmd = [os.path.join(BUILD, "l4q-train"), "--config", CONFIG, "--method", spec["method"],
               "--seed", str(spec["seed"]), "--threads", str(threads), "--quiet", "--no-progress",
               "-o", d, "--force", "--set", f"data.train={train_p}",
               "--set", f"data.validation={val_p}", "--set", "data.val_fraction=0"]
        cmd += MODEL_ARGS + [a for kv in TRAIN_SETS for a in ("--set", kv)]
        if spec["bits"] is not None:
            cmd += ["--bits", str(spec["bits"]), "--group-size", str(spec["group"])]
        cmd += spec["args"]
        for s in spec["sets"]:
            cmd += ["--set", s]
        t0 = time.time()
        rc = sh(cmd, log)
        print(f"  trained {spec['name']} rc={rc} in {time.time() - t0:.0f} s", flush=True)
        if rc != 0 or not os.path.exists(summ):
            return dict(spec, error=f"l4q-train failed (rc {rc}), see {log}")
    with open(summ) as f:
        s = json.load(f)
    r = dict(spec)
    for k in ("val_loss_before", "val_loss_after", "wall_seconds", "peak_tensor_bytes",
              "peak_rss_bytes", "steps", "tokens", "train_loss"):
        r[k] = s.get(k)
    r["val_ppl_after"] = math.exp(s["val_loss_after"])
    r["clipped_fraction"] = clipped_trace(d)
    for key, text in PPL_TEXTS:
        r[f"ppl_{key}"], err = perplexity(d, text, os.path.join(d, f"eval-{key}.json"), threads)
        if err:
            r[f"error_{key}"] = err
    if spec["method"] in QUANT_METHODS:
        exp = os.path.join(d, "export-l4q")
        rc = sh([os.path.join(BUILD, "l4q-export"), "--from", d, "--format", "l4q", "--out", exp,
                 "--force"], log)
        if rc != 0:
            r["export_error"] = f"l4q-export failed (rc {rc}), see {log}"
        else:
            for key, text in PPL_TEXTS:
                p, err = perplexity(exp, text, os.path.join(d, f"eval-export-{key}.json"), threads)
                r[f"export_ppl_{key}"] = p
                if err:
                    r["export_error"] = err
                fq = r.get(f"ppl_{key}")
                if p is not None and fq is not None:
                    rel = abs(p - fq) / fq
                    r[f"export_rel_diff_{key}"] = rel
                    print(f"    {key}: fake-quant {fq:.6f} packed {p:.6f} rel {rel:.2e}"
                          f"{mismatch_flag(r, rel) or ' ok'}", flush=True)
    with open(res_path, "w") as f:
        json.dump(r, f, indent=1)
    return r


def export_val_loss(r, threads, train_p, val_p):
    """Validation loss of the exported (deployable) model.

    lora-rtn trains float LoRA and applies RTN only when exporting, so its summary.json
    `val_loss_after` and an l4q-eval of its run directory measure the float model, not the
    quantized one. To get every quantized method's loss on the model that is actually
    deployed, the run is exported dequantized (`--format hf`, F32 W_q: exact) and scored by a
    0-step `--method float` training run on the same validation file.
    """
    d = os.path.join(RUNS, r["name"])
    log = os.path.join(RUNS, "logs", r["name"] + ".log")
    hf, out = os.path.join(d, "export-hf"), os.path.join(d, "val-export")
    rc = sh([os.path.join(BUILD, "l4q-export"), "--from", d, "--format", "hf", "--out", hf,
             "--force"], log)
    if rc != 0:
        r["export_val_error"] = f"l4q-export --format hf failed (rc {rc}), see {log}"
        return r
    rc = sh([os.path.join(BUILD, "l4q-train"), "--config", CONFIG, "--model", hf, "--method",
             "float", "--threads", str(threads), "--quiet", "--no-progress", "-o", out, "--force",
             "--set", f"data.train={train_p}", "--set", f"data.validation={val_p}",
             "--set", "data.val_fraction=0"] + [a for kv in TRAIN_SETS for a in ("--set", kv)], log)
    if rc != 0:
        r["export_val_error"] = f"0-step evaluation of the HF export failed (rc {rc}), see {log}"
        return r
    with open(os.path.join(out, "summary.json")) as f:
        r["val_loss_export"] = json.load(f)["val_loss_after"]
    r["val_loss_trainer"] = r["val_loss_after"]
    rel = abs(r["val_loss_export"] - r["val_loss_trainer"]) / r["val_loss_trainer"]
    r["val_rel_diff"] = rel
    # The tables report the deployable model's loss; the trainer's number stays in the JSONL.
    r["val_loss_after"] = r["val_loss_export"]
    r["val_ppl_after"] = math.exp(r["val_loss_export"])
    print(f"    val loss: trainer {r['val_loss_trainer']:.6f} exported {r['val_loss_export']:.6f}"
          f" rel {rel:.2e}{mismatch_flag(r, rel)}", flush=True)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(r, f, indent=1)
    return r


# ---------------------------------------------------------------------------------------------
# Tables


def load_jsonl():
    with open(os.path.join(ROOT, JSONL)) as f:
        return [json.loads(l) for l in f if l.strip()]


def fmt(x, d=4):
    return "–" if x is None else f"{x:.{d}f}"


def mib(x):
    return "–" if x is None else f"{x / 2**20:.1f}"


def index(rows):
    return {r["name"]: r for r in rows if "error" not in r}


def cell(idx, name, key, d=4):
    r = idx.get(name)
    return fmt(r.get(key) if r else None, d)


def grid_name(m, bits, group, seed=0):
    if m in ("float", "lora"):
        return f"{m}-s{seed}"
    return f"{m}-b{bits}-g{group}-s{seed}"


def metric_table(idx, group, key, d=4, ppl_of_loss=False):
    out = ["| method | 4-bit | 3-bit | 2-bit |", "|---|---|---|---|"]
    for m in ALL_METHODS:
        cells = []
        for b in BITS:
            r = idx.get(grid_name(m, b, group))
            v = r.get(key) if r else None
            # Quantized methods are scored as deployed: the packed export (lora-rtn and
            # qat-lora only become low-bit models at export; see the export section).
            if r and m in QUANT_METHODS and r.get("export_" + key) is not None:
                v = r["export_" + key]
            if v is None:
                cells.append("–")
            elif ppl_of_loss:
                cells.append(f"{v:.4f} ({math.exp(v):.2f})")
            else:
                cells.append(fmt(v, d))
        note = " (no quantization: same value in every column)" if m in ("float", "lora") else ""
        out.append(f"| {m}{note} | " + " | ".join(cells) + " |")
    return out


def claim_check(idx, group):
    # The paper compares L4Q with the parameter-efficient quantized baselines; full LSQ is in
    # its memory/time tables only. So the check is stated against both separately.
    lines = []
    for b in BITS:
        q = {m: idx.get(grid_name(m, b, group)) for m in QUANT_METHODS}
        q = {m: r["val_loss_after"] for m, r in q.items() if r}
        if "l4q" not in q or len(q) < 2:
            lines.append(f"- {b}-bit, group {group}: incomplete")
            continue
        peft = {m: v for m, v in q.items() if m not in ("l4q", "lsq")}
        txt = f"- {b}-bit, group {group}: L4Q {q['l4q']:.4f}"
        if peft:
            best_m = min(peft, key=peft.get)
            ok = q["l4q"] <= peft[best_m]
            txt += (f"; best parameter-efficient baseline {best_m} {peft[best_m]:.4f} → L4Q "
                    f"{'at or below all of them' if ok else 'is NOT the best of them'} "
                    f"({q['l4q'] - peft[best_m]:+.4f})")
        if "lsq" in q:
            txt += (f"; full LSQ {q['lsq']:.4f} → L4Q {'at or below' if q['l4q'] <= q['lsq'] else 'above'}"
                    f" ({q['l4q'] - q['lsq']:+.4f})")
        lora = idx.get("lora-s0")
        if lora:
            txt += f"; L4Q − float LoRA = {q['l4q'] - lora['val_loss_after']:+.4f}"
        lines.append(txt)
    return lines


def write_tables(rows):
    idx = index(rows)
    L = []
    L.append("# Results: L4Q vs baselines on stories260K (issue #7)")
    L.append("")
    L.append(f"Date {DATE}; machine: {MACHINE}. Reproduce everything (training, evaluation, "
             f"export, this file, the JSONL and the plot) with")
    L.append("")
    L.append(f"    {COMMAND}")
    L.append("")
    L.append(f"and regenerate only the tables and plot from `{JSONL}` with "
             f"`{COMMAND} --tables-only`. The plot needs matplotlib in `.venv` "
             f"(`.venv/bin/pip install -r tools/results-requirements.txt`).")
    L.append("")
    L.append("Setup: model `assets/stories260K/stories260K.gguf` (260K parameters, 5 layers); "
             "data: the bundled Alpaca sample (999 records) split once with the quick-start "
             "config's val_fraction 0.1, seed 0 (899 train / 100 validation records, 862 / 98 examples after tokenisation at max_length 256; the same files "
             "for every run, so that `--seed` changes only initialisation and data order). "
             "Every trained run uses the quick-start budget of "
             f"`{CONFIG}`: 120 steps, batch 8, max_length 256, LoRA rank 4 / alpha 16, lr 2e-3, "
             "quantizer lr 2e-4, cosine schedule with 10% warm-up, `quant.indivisible: per-channel` "
             "(down_proj has 172 inputs, which neither 32 nor 64 divides: it gets one group per "
             "row). `float` is the base model untouched; `rtn` is 0 training steps (the trainer "
             "skips training for it). Retention perplexity: WikiText-2 head "
             f"(`{WIKI}`, llama.cpp protocol, ctx 256) and the model's own greedy text "
             f"(`{GREEDY}`, ~258 tokens, sliding window ctx 128 stride 64).")
    L.append("")
    L.append(f"Runs: {len(idx)} completed of {len(run_specs())} planned.")
    failed = [r for r in rows if "error" in r]
    if failed:
        L.append("")
        L.append("Failed runs: " + ", ".join(f"`{r['name']}` ({r['error']})" for r in failed))
    L.append("")
    L.append(kept_block("notes"))
    for g in GROUPS:
        L.append("")
        L.append(f"## Validation loss (ppl) on the Alpaca validation split, group {g}, seed 0")
        L.append("")
        L += metric_table(idx, g, "val_loss_after", ppl_of_loss=True)
        L.append("")
        L.append("Claim check:")
        L.append("")
        L += claim_check(idx, g)
    for g in GROUPS:
        for key, title in (("ppl_wiki", "WikiText-2 head perplexity (retention)"),
                           ("ppl_greedy", "stories260K greedy-text perplexity (retention)")):
            L.append("")
            L.append(f"## {title}, group {g}, seed 0")
            L.append("")
            L += metric_table(idx, g, key, d=3)
    # seeds
    L.append("")
    L.append("## Seed spread: 3-bit, group 32, seeds 0, 1, 2")
    L.append("")
    L.append("| method | seed 0 | seed 1 | seed 2 | mean ± std (val loss) | mean WikiText-2 ppl |")
    L.append("|---|---|---|---|---|---|")
    for m in ["lora"] + QUANT_METHODS:
        rs = [idx.get(grid_name(m, 3, 32, s)) for s in SEEDS]
        vals = [r["val_loss_after"] if r else None for r in rs]
        got = [v for v in vals if v is not None]
        wk = [r.get("export_ppl_wiki", r.get("ppl_wiki")) for r in rs if r]
        wk = [v for v in wk if v is not None]
        ms = "–"
        if len(got) >= 2:
            ms = f"{statistics.mean(got):.4f} ± {statistics.stdev(got):.4f}"
        elif got:
            ms = f"{got[0]:.4f}"
        L.append(f"| {m}{' (float)' if m == 'lora' else ''} | " +
                 " | ".join(fmt(v) for v in vals) + f" | {ms} | "
                 f"{fmt(statistics.mean(wk), 3) if wk else '–'} |")
    # cost
    L.append("")
    L.append("## Training cost, 3-bit, group 32, seed 0")
    L.append("")
    L.append("Wall time and peak memory from each run's `summary.json` (peak tensor bytes: "
             "the largest live libtorch allocation total; RSS includes libtorch itself).")
    L.append("")
    L.append("| method | steps | wall s | tokens/s | peak tensors MiB | peak RSS MiB |")
    L.append("|---|---|---|---|---|---|")
    for m in ALL_METHODS:
        r = idx.get(grid_name(m, 3, 32))
        if not r:
            L.append(f"| {m} | – | – | – | – | – |")
            continue
        tps = r["tokens"] / r["wall_seconds"] if r.get("tokens") and r.get("wall_seconds") else 0
        L.append(f"| {m} | {r['steps']} | {fmt(r['wall_seconds'], 1)} | {tps:.0f} | "
                 f"{mib(r['peak_tensor_bytes'])} | {mib(r['peak_rss_bytes'])} |")
    # ablations
    L.append("")
    L.append("## L4Q ablations: 3-bit, group 32, seed 0")
    L.append("")
    L.append("Baseline row: `init l4q`, `grad_scale` LSQ default (1/sqrt(group·Qp), set by "
             "`quant.grad_scale <= 0`), no quantization warm-up, quantizer lr 2e-4. "
             "Clipped fraction: mean over layers of the fraction of weights outside the "
             "quantization range, at each eval (steps 0, 40, 80, 120).")
    L.append("")
    L.append("| variant | val loss (ppl) | WikiText-2 ppl | greedy ppl | clipped fraction over training |")
    L.append("|---|---|---|---|---|")
    abl = [("default (init l4q)", idx.get("l4q-b3-g32-s0"))]
    abl += [(r["label"], r) for r in rows if r.get("kind") == "ablation" and "error" not in r]
    for label, r in abl:
        if not r:
            L.append(f"| {label} | – | – | – | – |")
            continue
        cf = ", ".join(f"{v:.3f}" for _, v in r.get("clipped_fraction", []))
        L.append(f"| {label} | {r['val_loss_after']:.4f} ({math.exp(r['val_loss_after']):.2f}) | "
                 f"{fmt(r.get('ppl_wiki'), 3)} | {fmt(r.get('ppl_greedy'), 3)} | {cf or '–'} |")
    # export
    L.append("")
    L.append("## Exported packed model vs fake-quant")
    L.append("")
    L.append("Every quantized run is exported with `l4q-export --format l4q` and evaluated again "
             f"from the packed directory; a relative difference above {REL_TOL:g} is flagged.")
    L.append("")
    L.append("| run | WikiText-2 fake-quant | packed | rel diff | greedy fake-quant | packed | rel diff | status |")
    L.append("|---|---|---|---|---|---|---|---|")
    n_ok = n_bad = n_fail = n_design = 0
    for r in rows:
        if r.get("method") not in QUANT_METHODS or "error" in r:
            continue
        if r.get("export_error"):
            n_fail += 1
            L.append(f"| {r['name']} | {fmt(r.get('ppl_wiki'), 6)} | – | – | "
                     f"{fmt(r.get('ppl_greedy'), 6)} | – | – | export failed: {r['export_error']} |")
            continue
        rels = [r.get("export_rel_diff_wiki"), r.get("export_rel_diff_greedy")]
        bad = any(x is None or x > REL_TOL for x in rels)
        if bad and r["method"] in REQUANTIZED_AT_EXPORT:
            n_design += 1
            status = "differs by design (export rounds the merged weight)"
        else:
            n_bad += bad
            n_ok += not bad
            status = "MISMATCH" if bad else "ok"
        L.append(f"| {r['name']} | {fmt(r.get('ppl_wiki'), 6)} | {fmt(r.get('export_ppl_wiki'), 6)}"
                 f" | {fmt(rels[0], 1) if rels[0] is None else f'{rels[0]:.1e}'} | "
                 f"{fmt(r.get('ppl_greedy'), 6)} | {fmt(r.get('export_ppl_greedy'), 6)} | "
                 f"{fmt(rels[1], 1) if rels[1] is None else f'{rels[1]:.1e}'} | "
                 f"{status} |")
    L.append("")
    L.append(f"Summary: {n_ok} agree, {n_bad} mismatch, {n_design} differ by design "
             f"({', '.join(REQUANTIZED_AT_EXPORT)}), {n_fail} could not be exported.")
    L.append("")
    L.append("### Validation loss: training-time model vs deployed model")
    L.append("")
    L.append("`val_loss_after` from the trainer scores the model as trained; the deployed "
             "model's loss is measured by exporting dequantized (`l4q-export --format hf`: the "
             "F32 W_q, exact) and scoring that with a 0-step `--method float` run on the same "
             "validation file. The tables above use the deployed number.")
    L.append("")
    L.append("| run | trainer val loss | deployed val loss | rel diff | status |")
    L.append("|---|---|---|---|---|")
    for r in rows:
        if r.get("method") not in QUANT_METHODS or "error" in r:
            continue
        if "val_loss_export" not in r:
            L.append(f"| {r['name']} | {fmt(r.get('val_loss_after'))} | – | – | "
                     f"{r.get('export_val_error', 'not measured')} |")
            continue
        rel = r["val_rel_diff"]
        st = "ok" if rel <= REL_TOL else (
            "differs by design" if r["method"] in REQUANTIZED_AT_EXPORT else "MISMATCH")
        L.append(f"| {r['name']} | {r['val_loss_trainer']:.6f} | {r['val_loss_export']:.6f} | "
                 f"{rel:.1e} | {st} |")
    L.append("")
    L.append(f"Raw per-run records: `{JSONL}`. Plot: `{PNG}`.")
    L.append("")
    L.append(f"![validation loss vs bits]({os.path.basename(PNG)})")
    L.append("")
    L.append(kept_block("smollm2"))
    write_keeping_blocks(os.path.join(ROOT, DOC), "\n".join(L) + "\n")
    print(f"wrote {DOC}")


KEPT_DEFAULT = {"notes": "(analysis: see below the tables once the grid is complete)",
                "smollm2": "(SmolLM2-135M results: `python3 tools/results-smollm2.py`)",
                "smollm2-notes": "(analysis of the SmolLM2 runs)"}


def kept_block(name):
    return f"<!-- {name}:begin -->\n\x00{name}\x00\n<!-- {name}:end -->"


def block_text(text, name):
    a, b = text.find(f"<!-- {name}:begin -->"), text.find(f"<!-- {name}:end -->")
    if a < 0 or b <= a:
        return None
    return text[a + len(f"<!-- {name}:begin -->"):b].strip("\n")


def write_keeping_blocks(path, text, replace=None):
    """Writes `text` to `path` (via a temporary file), filling each kept block with what the
    current file has there (hand-written notes survive a regeneration), or with `replace`'s
    text for the blocks it names."""
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    for name in KEPT_BLOCKS:
        body = (replace or {}).get(name)
        if body is None:
            body = block_text(old, name) or KEPT_DEFAULT[name]
        text = text.replace(f"\x00{name}\x00", body)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def plot(rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        venv_py = os.path.join(ROOT, ".venv", "bin", "python")
        if os.path.realpath(sys.executable) != os.path.realpath(venv_py) and os.path.exists(venv_py):
            rc = subprocess.run([venv_py, __file__, "--plot-only"], cwd=ROOT).returncode
            if rc == 0:
                return
        print("matplotlib is missing: no plot written. Install the pinned version with\n"
              "    .venv/bin/pip install -r tools/results-requirements.txt\n"
              f"then rerun {COMMAND} --tables-only", file=sys.stderr)
        return
    idx = index(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = {"rtn": "tab:gray", "lora-rtn": "tab:orange", "qat-lora": "tab:green",
              "qa-lora": "tab:purple", "lsq": "tab:brown", "l4q": "tab:red"}
    for m in QUANT_METHODS:
        for g, style in ((32, "-o"), (64, "--s")):
            pts = [(b, idx[grid_name(m, b, g)]["val_loss_after"]) for b in BITS
                   if grid_name(m, b, g) in idx]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colors[m],
                        label=f"{m} g{g}", alpha=1.0 if g == 32 else 0.55,
                        lw=2.2 if m == "l4q" else 1.2)
        # seed spread at 3 bits, group 32: the individual seeds as small dots
        ys = [idx[grid_name(m, 3, 32, s)]["val_loss_after"] for s in SEEDS
              if grid_name(m, 3, 32, s) in idx]
        if len(ys) > 1:
            ax.scatter([3] * len(ys), ys, s=10, color=colors[m], zorder=3)
    for m, ls in (("float", ":"), ("lora", "-.")):
        r = idx.get(f"{m}-s0")
        if r:
            ax.axhline(r["val_loss_after"], ls=ls, color="black",
                       label=f"{m} (16/32-bit) {r['val_loss_after']:.3f}")
    ax.set_xticks(BITS)
    ax.invert_xaxis()
    ax.set_xlabel("weight bits")
    ax.set_ylabel("validation loss (Alpaca split)")
    ax.set_title("stories260K, 120 steps, rank 4: validation loss vs bits")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, PNG), dpi=110)
    print(f"wrote {PNG}")


def write_jsonl(rows):
    with open(JSONL, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables-only", action="store_true",
                    help=f"no training: regenerate {DOC} and {PNG} from {JSONL}")
    ap.add_argument("--plot-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.plot_only:
        plot(load_jsonl())
        return
    if not args.tables_only:
        for tool in ("l4q-train", "l4q-eval", "l4q-export"):
            if not os.path.exists(os.path.join(BUILD, tool)):
                sys.exit(f"missing {BUILD}/{tool}: build first (ninja -C build)")
        snapshot_tools()
        train_p, val_p = fixed_split()
        specs = run_specs()
        want = set(args.only.split(",")) if args.only else None
        rows = []
        for i, spec in enumerate(specs):
            if want is not None and spec["name"] not in want:
                # not selected: keep its finished result in the JSONL, run nothing
                done = os.path.join(RUNS, spec["name"], "results.json")
                if os.path.exists(done):
                    with open(done) as f:
                        rows.append(json.load(f))
                continue
            print(f"[{i + 1}/{len(specs)}] {spec['name']}", flush=True)
            r = do_run(spec, args.threads, train_p, val_p)
            if (r.get("method") in QUANT_METHODS and "error" not in r
                    and "val_loss_export" not in r and "export_val_error" not in r):
                r = export_val_loss(r, args.threads, train_p, val_p)
            rows.append(r)
            # Rewritten after every run so an interrupted grid still leaves usable tables.
            write_jsonl(rows)
        # again at the end: finished runs after the last selected one (--only) come in here
        write_jsonl(rows)
        if not args.only:
            fl = next((r for r in rows if r["name"] == "float-s0" and "error" not in r), None)
            if fl:
                print(f"float val loss on the fixed split: {fl['val_loss_after']:.6f}")
    rows = load_jsonl()
    write_tables(rows)
    plot(rows)


if __name__ == "__main__":
    main()
