"""l4q-eval's perplexity of stories260K against transformers 4.46.3 on the same text.

The model: stories260K.gguf converted by l4q-convert to an HF directory (with tok512.model as
tokenizer.model); transformers loads that directory (LlamaForCausalLM, eager attention, fp32)
and sentencepiece 0.2.0 tokenizes the text. The script computes both of l4q-eval's protocols
itself, window by window, straight from their definitions (docs/eval.md):
  * sliding window, context C, stride S: windows [b, b+C) at b = 0, S, 2S, ... until one
    reaches the end; each scores the targets after its first token that no earlier window
    scored; BOS is put before the text;
  * llama.cpp: floor(N/C) disjoint chunks (BOS first in the stream and in place of each
    chunk's first token), targets C/2+1 .. C-1 of each chunk scored.
It compares the token counts exactly and the perplexities to a relative 1e-5.
Texts: the bundled stories260K.greedy256.txt and the bundled head of WikiText-2's test split
(assets/wikitext2/wiki.test.head.raw, 40.5 kB).
Exits non-zero on any failure and prints what it compared.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

SRC = os.environ.get("L4Q_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("L4Q_BUILD_DIR", os.path.join(SRC, "build"))
CONVERT = os.path.join(BUILD, "tools", "l4q-convert")
EVAL = os.path.join(BUILD, "tools", "l4q-eval")
ASSETS = os.path.join(SRC, "assets", "stories260K")
WIKI = os.path.join(SRC, "assets", "wikitext2", "wiki.test.head.raw")
TOL = 1e-5


def windows(n, ctx, stride, llama_cpp):
    """(begin, end, first_target, replace_first_with_bos) per window."""
    out = []
    if llama_cpp:
        for b in range(0, n - ctx + 1, ctx):
            out.append((b, b + ctx, b + ctx // 2 + 1, True))
        return out
    scored_to = 1
    b = 0
    while b < n:
        e = min(b + ctx, n)
        first = max(b + 1, scored_to)
        if first < e:
            out.append((b, e, first, False))
        scored_to = max(scored_to, e)
        if e == n:
            break
        b += stride
    return out


def reference(model, ids, bos, ctx, stride, llama_cpp):
    stream = [bos] + ids
    nll, count = 0.0, 0
    with torch.no_grad():
        for b, e, first, rep in windows(len(stream), ctx, stride, llama_cpp):
            w = list(stream[b:e])
            if rep:
                w[0] = bos
            logits = model(torch.tensor([w])).logits[0].float()
            logp = torch.log_softmax(logits, -1).double()
            for t in range(first, e):
                nll -= float(logp[t - 1 - b, stream[t]])
                count += 1
    return nll, count, len(stream)


def main():
    for exe in (CONVERT, EVAL):
        if not os.path.exists(exe):
            raise SystemExit(f"missing {exe}: build l4q-convert and l4q-eval first")
    texts = {"stories260K.greedy256.txt": open(os.path.join(ASSETS, "stories260K.greedy256.txt"), encoding="utf-8").read()}
    texts["wikitext2-test (bundled head)"] = open(WIKI, encoding="utf-8").read()
    failures = []
    with tempfile.TemporaryDirectory(prefix="l4q_eval_ppl_") as tmp:
        hf = os.path.join(tmp, "hf")
        r = subprocess.run([CONVERT, "--in", os.path.join(ASSETS, "stories260K.gguf"), "--out", hf,
                            "--tokenizer", os.path.join(ASSETS, "tok512.model")], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"l4q-convert failed: {r.stderr}")
        model = LlamaForCausalLM.from_pretrained(hf, torch_dtype=torch.float32, attn_implementation="eager").eval()
        sp = spm.SentencePieceProcessor(model_file=os.path.join(hf, "tokenizer.model"))
        for tname, text in texts.items():
            path = os.path.join(tmp, "text.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            ids = sp.encode(text)
            for ctx, stride, llama_cpp in ((128, 64, False), (128, 128, False), (128, 0, True)):
                args = ["--ctx", str(ctx)] + (["--llama-cpp"] if llama_cpp else ["--stride", str(stride)])
                r = subprocess.run([EVAL, "--model", hf, "--threads", "2", "perplexity", "--text", path] + args,
                                   capture_output=True, text=True)
                label = f"{tname} ctx {ctx} " + ("llama.cpp" if llama_cpp else f"stride {stride}")
                if r.returncode != 0:
                    failures.append(f"{label}: l4q-eval exited with {r.returncode}: {r.stderr}")
                    continue
                ours = json.loads(r.stdout)["result"]
                nll, count, total = reference(model, ids, sp.bos_id(), ctx, stride, llama_cpp)
                ppl = math.exp(nll / count)
                rel = abs(ours["perplexity"] - ppl) / ppl
                ok = ours["tokens_scored"] == count and ours["tokens_total"] == total and rel < TOL
                print(f"{label:52s} tokens {total:6d} scored ours {ours['tokens_scored']:6d} ref {count:6d}  "
                      f"ppl ours {ours['perplexity']:.6f} transformers {ppl:.6f}  rel {rel:.1e}  {'ok' if ok else 'FAIL'}")
                if not ok:
                    failures.append(f"{label}: ours {ours}, reference ppl {ppl} over {count} of {total} tokens")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"l4q-eval perplexity agrees with transformers (relative difference < {TOL})")


if __name__ == "__main__":
    main()
