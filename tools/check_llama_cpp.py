"""Our GGUF export in llama.cpp (llama-cpp-python), see tools/check-llama-cpp.sh.

Trains short 4-bit and 3-bit L4Q runs of stories260K (group 32), exports GGUF, evaluates the
base model's greedy story (assets/) in llama.cpp with logits for every position and compares:
  * llama.cpp logits vs our fake-quant model of the run, and vs our float forward pass on the
    same GGUF (dequantized weights): llama.cpp's Q4_1 matmul also rounds the activations to
    Q8_1, so this is looser than the fp16 weight error alone;
  * the perplexity of the sequence.
Exits non-zero when the relative logit error exceeds 5e-2 or the perplexities differ by more
than 2%.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from llama_cpp import Llama

SRC = os.environ["L4Q_SOURCE_DIR"]
BUILD = os.environ["L4Q_BUILD_DIR"]
TRAIN = os.path.join(BUILD, "tools", "l4q-train")
EXPORT = os.path.join(BUILD, "tools", "l4q-export")
TOOL = os.path.join(BUILD, "tests", "l4q_interop_export")
IDS = [1] + [int(x) for x in open(os.path.join(SRC, "assets", "stories260K", "stories260K.greedy256.ids"))
             .read().split()[:127]]
failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def ours(path):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        t, v = map(int, run([TOOL, "logits", path, ",".join(map(str, IDS)), f.name]).split())
        return np.fromfile(f.name, dtype=np.float32).reshape(t, v)


def rel_err(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() / np.abs(b).max())


def perplexity(logits):
    x = logits[:-1].astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return float(np.exp(-np.mean(logp[np.arange(len(IDS) - 1), IDS[1:]])))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (4, 3):
            label = f"{bits}-bit g32"
            rd, gg = os.path.join(tmp, f"run{bits}"), os.path.join(tmp, f"m{bits}.gguf")
            run([TRAIN, "--config", os.path.join(SRC, "configs", "stories260k-l4q-3bit.json"),
                 "--output", rd, "--steps", "6", "--threads", "2", "--set", f"quant.bits={bits}",
                 "--set", "data.max_records=60", "--set", "data.max_length=160", "--set", "eval_every=0",
                 "--set", 'model="%s"' % os.path.join(SRC, "assets", "stories260K", "stories260K.gguf"),
                 "--set", 'data.train="%s"' % os.path.join(SRC, "assets", "alpaca", "alpaca_en_demo.json"),
                 "--no-progress", "--quiet"])
            rep = json.loads(run([EXPORT, "--from", rd, "--format", "gguf", "--out", gg, "--json"]))
            t0 = time.time()
            llm = Llama(model_path=gg, n_ctx=256, logits_all=True, verbose=False, n_threads=2, n_batch=256)
            llm.eval(IDS)
            cpp = np.array(llm.scores[: len(IDS)], dtype=np.float32)
            secs = time.time() - t0
            fq, fl = ours(rd), ours(gg)
            e_fq, e_fl = rel_err(cpp, fq), rel_err(cpp, fl)
            p_cpp, p_fq, p_fl = perplexity(cpp), perplexity(fq), perplexity(fl)
            print(f"      {label}: GGUF max weight error {rep['max_weight_error']:.3e}; llama.cpp load+eval "
                  f"{len(IDS)} tokens {secs:.2f} s")
            check(e_fq < 5e-2, f"{label}: llama.cpp vs our fake-quant logits: rel err {e_fq:.2e}")
            check(e_fl < 5e-2, f"{label}: llama.cpp vs our float forward on the same GGUF: rel err {e_fl:.2e}")
            check(abs(p_cpp - p_fq) / p_fq < 0.02,
                  f"{label}: perplexity of {len(IDS)} tokens: llama.cpp {p_cpp:.4f}, ours (fake-quant) {p_fq:.4f}, "
                  f"ours (GGUF weights) {p_fl:.4f}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("llama.cpp checks passed")


if __name__ == "__main__":
    main()
