"""l4q's LlamaModel against transformers 4.46.3 `LlamaForCausalLM` (eager attention, fp32).

For each random small config (MHA, GQA and MQA; tied and untied embeddings; rope_theta other
than 10000; linear and llama3 RoPE scaling; head_dim != hidden_size / heads) the script
  * builds LlamaForCausalLM with seeded random weights (norm weights away from 1, projections
    large enough that every part of the block matters) and writes it with
    save_pretrained(safe_serialization=True);
  * runs l4q_interop_llama on that directory: logits of one forward pass, the same logits
    through the KV cache (half the sequence, then one token per call), and greedy tokens;
  * compares with transformers' logits on the same ids: relative error
    max|ours - hf| / max|hf| < 1e-5, cached logits against full logits likewise, and the greedy
    tokens against an argmax loop over transformers' full forward passes.
Exits non-zero on any failure and prints what it compared.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

SRC = os.environ.get("L4Q_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("L4Q_BUILD_DIR", os.path.join(SRC, "build"))
TOOL = os.path.join(BUILD, "tests", "l4q_interop_llama")
TOL = 1e-5

CONFIGS = [
    dict(name="gqa-untied", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
         num_attention_heads=8, num_key_value_heads=2, vocab_size=97, tie_word_embeddings=False),
    dict(name="mha-tied-theta5e5", hidden_size=48, intermediate_size=80, num_hidden_layers=3,
         num_attention_heads=4, num_key_value_heads=4, vocab_size=101, tie_word_embeddings=True,
         rope_theta=500000.0),
    dict(name="mqa-llama3-scaling", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
         num_attention_heads=4, num_key_value_heads=1, vocab_size=89, tie_word_embeddings=False,
         rope_theta=10000.0, max_position_embeddings=64,
         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    dict(name="head_dim16-linear-scaling", hidden_size=48, intermediate_size=64,
         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
         vocab_size=67, tie_word_embeddings=True, rope_theta=20000.0,
         rope_scaling={"rope_type": "linear", "factor": 2.0}),
]

B, T, PROMPT, N_NEW = 2, 29, 5, 12


def rel_err(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() / np.abs(b).max())


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def main():
    if not os.path.exists(TOOL):
        raise SystemExit(f"missing {TOOL}: build the l4q_interop_llama target first")
    failures = []
    for i, spec in enumerate(CONFIGS):
        spec = dict(spec)
        name = spec.pop("name")
        torch.manual_seed(100 + i)
        config = LlamaConfig(**spec, attn_implementation="eager", bos_token_id=1, eos_token_id=2)
        model = LlamaForCausalLM(config).eval()
        randomize(model, 1000 + i)
        rng = np.random.default_rng(i)
        ids = rng.integers(0, config.vocab_size, size=(B, T), dtype=np.int64)
        ids[:, 0] = 1
        with torch.no_grad():
            hf = model(torch.from_numpy(ids)).logits.float().numpy()
            seq = torch.from_numpy(ids[:1, :PROMPT].copy())
            hf_greedy = []
            for _ in range(N_NEW):
                nxt = int(model(seq).logits[0, -1].argmax())
                hf_greedy.append(nxt)
                seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)

        with tempfile.TemporaryDirectory(prefix="l4q_hf_llama_") as tmp:
            mdir = os.path.join(tmp, "model")
            model.save_pretrained(mdir, safe_serialization=True)
            files = sorted(os.listdir(mdir))
            ids_path = os.path.join(tmp, "ids.i64")
            ids.astype("<i8").tofile(ids_path)
            r = subprocess.run([TOOL, mdir, ids_path, str(B), str(T), str(PROMPT), str(N_NEW), tmp],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stdout, r.stderr)
                failures.append(f"{name}: l4q_interop_llama exited with {r.returncode}")
                continue
            V = config.vocab_size
            full = np.fromfile(os.path.join(tmp, "full.f32"), dtype="<f4").reshape(B, T, V)
            inc = np.fromfile(os.path.join(tmp, "inc.f32"), dtype="<f4").reshape(B, T, V)
            with open(os.path.join(tmp, "greedy.txt")) as f:
                ours_greedy = [int(x) for x in f.read().split()]

        e_full, e_inc, e_cache = rel_err(full, hf), rel_err(inc, hf), rel_err(inc, full)
        ok = e_full < TOL and e_inc < TOL and e_cache < TOL and ours_greedy == hf_greedy
        print(f"{name:28s} files {files}  |logits| max {np.abs(hf).max():.2f}  "
              f"rel err full {e_full:.2e}, cached {e_inc:.2e}, cached vs full {e_cache:.2e}  "
              f"greedy {'same' if ours_greedy == hf_greedy else 'DIFFERENT'} ({N_NEW} tokens)  "
              f"{'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{name}: full {e_full:.2e}, cached {e_inc:.2e}, cache vs full "
                            f"{e_cache:.2e}, greedy ours {ours_greedy} hf {hf_greedy}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"all {len(CONFIGS)} configs match transformers (relative error < {TOL})")


if __name__ == "__main__":
    main()
