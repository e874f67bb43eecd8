"""l4q-export --format gguf, checked by the engines that read GGUF.

Trains two short L4Q runs of the bundled stories260K (4-bit and 3-bit, group 32; down_proj,
in_features 172, falls back to one group per row) with l4q-train, exports each as GGUF (and as
a float HF directory, exactly the trained W_q) and checks:
  * gguf-py 0.10.0 reads every tensor; its dequantization of each Q4_1 / F16 / F32 tensor
    equals the trained W_q (q/k rows permuted back from llama.cpp's interleaved order) within
    the max_weight_error of export_report.json, and the largest difference is that error;
    attn_* / ffn_gate / ffn_up are Q4_1, ffn_down and the norms are float;
  * transformers 4.46.3 loads the GGUF (AutoModelForCausalLM.from_pretrained(dir,
    gguf_file=...), dequantized by gguf-py, q/k un-permuted by transformers): its logits match
    our fake-quant model's logits on the same ids within a tolerance scaled by the fp16 error
    of the steps and offsets, and so does the perplexity of the sequence; the HF export loaded
    by transformers matches our logits to 1e-5 (so the remaining difference is the fp16 one);
  * l4q-export's bad-input errors: an existing output without --force, a run directory
    without a finished checkpoint, GPTQ of a layer it cannot pack.
Exits non-zero on any failure and prints what it compared.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

SRC = os.environ.get("L4Q_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("L4Q_BUILD_DIR", os.path.join(SRC, "build"))
TRAIN = os.path.join(BUILD, "tools", "l4q-train")
EXPORT = os.path.join(BUILD, "tools", "l4q-export")
TOOL = os.path.join(BUILD, "tests", "l4q_interop_export")
# BOS + the first 47 tokens of the base model's greedy story (assets/): text the model has a
# low perplexity on, so that the perplexity comparison is meaningful.
IDS = [1] + [int(x) for x in open(os.path.join(SRC, "assets", "stories260K", "stories260K.greedy256.ids"))
             .read().split()[:47]]

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return r


def train(out, bits, extra=()):
    cmd = [TRAIN, "--config", os.path.join(SRC, "configs", "stories260k-l4q-3bit.json"),
           "--output", out, "--steps", "6", "--threads", "2",
           "--set", f"quant.bits={bits}", "--set", "data.max_records=60",
           "--set", "data.max_length=160", "--set", "eval_every=0",
           "--set", 'model="%s"' % os.path.join(SRC, "assets", "stories260K", "stories260K.gguf"),
           "--set", 'data.train="%s"' % os.path.join(SRC, "assets", "alpaca", "alpaca_en_demo.json"),
           "--no-progress", "--quiet", *extra]
    r = run(cmd)
    if r.returncode != 0:
        sys.exit(f"l4q-train failed ({r.returncode}): {r.stderr}")


def export(run_dir, fmt, out, *extra):
    r = run([EXPORT, "--from", run_dir, "--format", fmt, "--out", out, "--json", *extra])
    if r.returncode != 0:
        sys.exit(f"l4q-export {fmt} failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def our_logits(path):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        r = run([TOOL, "logits", path, ",".join(map(str, IDS)), f.name])
        if r.returncode != 0:
            sys.exit(f"l4q_interop_export failed: {r.stderr}")
        t, v = map(int, r.stdout.split())
        return np.fromfile(f.name, dtype=np.float32).reshape(t, v)


def hf_logits(model):
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].float().numpy()


def rel_err(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() / np.abs(b).max())


def perplexity(logits):
    x = logits[:-1].astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return float(np.exp(-np.mean(logp[np.arange(len(IDS) - 1), IDS[1:]])))


def to_interleaved(w, n_heads):
    # HF rotate-half rows -> Meta / llama.cpp interleaved rows (inverse of transformers'
    # convert_llama_weights_to_hf permute).
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, -1).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
              "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")  # model.layers.N.<module...>.weight
    return f"blk.{parts[2]}.{GGUF_NAMES['.'.join(parts[3:-1])]}.weight"


def check_gguf_py(gguf_path, hf_dir, report, label):
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    trained = load_file(os.path.join(hf_dir, "model.safetensors"))
    reader = GGUFReader(gguf_path)
    tensors = {t.name: t for t in reader.tensors}
    if "lm_head.weight" not in trained:  # tied: the export writes the embedding as output.weight too
        trained["lm_head.weight"] = trained["model.embed_tokens.weight"]
    worst, n = 0.0, 0
    for name, w in trained.items():
        t = tensors[gguf_name(name)]
        got = dequantize(t.data, t.tensor_type).reshape(w.shape).astype(np.float32)
        if name.endswith("q_proj.weight"):
            w = to_interleaved(w, cfg["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = to_interleaved(w, cfg["num_key_value_heads"])
        worst = max(worst, float(np.abs(got.astype(np.float64) - w).max()))
        n += 1
    types = {k: t.tensor_type.name for k, t in tensors.items()}
    check(types["blk.0.attn_q.weight"] == "Q4_1" and types["blk.2.ffn_up.weight"] == "Q4_1" and
          types["blk.0.ffn_down.weight"] in ("F32", "F16") and types["blk.0.attn_norm.weight"] == "F32",
          f"{label}: gguf-py tensor types (attn_q {types['blk.0.attn_q.weight']}, ffn_down "
          f"{types['blk.0.ffn_down.weight']}, attn_norm {types['blk.0.attn_norm.weight']})")
    check(n == len(tensors), f"{label}: gguf-py read {len(tensors)} tensors, {n} compared")
    check(abs(worst - report["max_weight_error"]) <= 1e-9,
          f"{label}: gguf-py dequantized max |W - W_q| {worst:.3e} == reported {report['max_weight_error']:.3e}")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    check(len(tokens.data) == cfg["vocab_size"], f"{label}: {len(tokens.data)} vocabulary tokens")


def main():
    for path in (TRAIN, EXPORT, TOOL):
        if not os.path.exists(path):
            sys.exit(f"missing {path}: build l4q-train, l4q-export and l4q_interop_export first")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (4, 3):
            label = f"{bits}-bit g32"
            run_dir = os.path.join(tmp, f"run{bits}")
            train(run_dir, bits)
            gdir = os.path.join(tmp, f"gguf{bits}")
            os.makedirs(gdir)
            gguf_path = os.path.join(gdir, "model.gguf")
            rep = export(run_dir, "gguf", gguf_path)
            hf_dir = os.path.join(tmp, f"hf{bits}")
            export(run_dir, "hf", hf_dir)
            check(os.path.exists(gguf_path + ".export_report.json") and
                  os.path.exists(os.path.join(hf_dir, "export_report.json")), f"{label}: export_report.json written")
            print(f"      {label}: {rep['quantized_layers']} Q4_1 layers, {rep['float_layers']} float; "
                  f"max errors: weight {rep['max_weight_error']:.3e}, step {rep['max_scale_error']:.3e}, "
                  f"offset {rep['max_offset_error']:.3e}")
            check_gguf_py(gguf_path, hf_dir, rep, label)

            ours = our_logits(run_dir)
            hf_exact = hf_logits(LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval())
            e_hf = rel_err(hf_exact, ours)
            check(e_hf < 1e-5, f"{label}: transformers on the HF export vs our fake-quant logits: rel err {e_hf:.2e} < 1e-5")
            model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file="model.gguf", torch_dtype=torch.float32).eval()
            got = hf_logits(model)
            # Tolerance from the fp16 rounding: relative weight error, amplified by depth.
            w_scale = max(float(np.abs(w).max()) for k, w in load_file(os.path.join(hf_dir, "model.safetensors")).items()
                          if k.endswith("proj.weight"))
            tol = max(1e-5, 10 * rep["max_weight_error"] / w_scale)
            e = rel_err(got, ours)
            check(e < tol, f"{label}: transformers(gguf_file) vs our fake-quant logits: rel err {e:.2e} < {tol:.2e}")
            p_ours, p_gguf = perplexity(ours), perplexity(got)
            check(abs(p_gguf - p_ours) / p_ours < tol,
                  f"{label}: perplexity of {len(IDS)} ids: ours {p_ours:.4f}, transformers(gguf) {p_gguf:.4f}")
            ours_reader = our_logits(gguf_path)
            e_r = rel_err(ours_reader, got)
            check(e_r < 1e-5, f"{label}: our GGUF reader vs transformers on the same GGUF: rel err {e_r:.2e}")

        # Bad input, as a user meets it.
        run4 = os.path.join(tmp, "run4")
        out = os.path.join(tmp, "gguf4", "model.gguf")
        r = run([EXPORT, "--from", run4, "--format", "gguf", "--out", out])
        check(r.returncode != 0 and "exists" in r.stderr and "--force" in r.stderr,
              f"existing output refused: {r.stderr.strip()}")
        r = run([EXPORT, "--from", run4, "--format", "gguf", "--out", out, "--force"])
        check(r.returncode == 0, "existing output replaced with --force")
        empty = os.path.join(tmp, "empty-run")
        os.makedirs(os.path.join(empty, "checkpoints"))
        r = run([EXPORT, "--from", empty, "--format", "hf", "--out", os.path.join(tmp, "x")])
        check(r.returncode != 0 and "no finished checkpoint" in r.stderr,
              f"run without a checkpoint refused: {r.stderr.strip()}")
        r = run([EXPORT, "--from", run4, "--format", "gptq", "--out", os.path.join(tmp, "g")])
        check(r.returncode != 0 and "down_proj" in r.stderr and not os.path.exists(os.path.join(tmp, "g")),
              "GPTQ of an unpackable layer refused: " + r.stderr.strip().splitlines()[0])

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all GGUF export checks passed")


if __name__ == "__main__":
    main()
