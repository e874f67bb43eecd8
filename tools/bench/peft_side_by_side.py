#!/usr/bin/env python3
"""Training-step time of l4q against what users would pick instead, on one machine, one model.

  l4q lora       l4q-train --method lora      vs  PEFT LoRA (PyTorch 2.x, HF LlamaForCausalLM)
  l4q qat-lora   l4q-train --method qat-lora  vs  torchao QAT (int4 weight fake-quant, prepare
                                                  step) under PEFT LoRA: torchtune's QAT-LoRA
  l4q l4q        l4q-train --method l4q       (reference, no PyTorch counterpart)

Both sides load the same synthetic LLaMA HF directory (random weights, written here by
transformers), train the same targets (q, k, v, o, gate, up, down) with the same rank, alpha,
sequence length, batch, threads and AdamW (lr, weight decay, grad-norm clipping at 1.0), in
fp32 on the CPU, with every position scored. A step is forward + loss + backward + clipping +
AdamW + zero_grad. The first --warmup steps of each are not timed; the median of the rest is
reported, and the ratio PyTorch / l4q (> 1: l4q faster).

l4q's step time is read from its metrics.jsonl (log_every 1: tokens / tokens_per_s per step).
Its tokens come from a text corpus through the bundled 512-piece tokenizer (ids < 512 are
valid ids of the 32000-word model; the step cost does not depend on which ids they are); the
PyTorch side uses random ids of the same shape.

Run through tools/bench/side-by-side.sh, which makes the pinned venv.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--l4q-train", required=True)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--inter", type=int, default=2048)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--workdir", default="/tmp/l4q-side-by-side")
    p.add_argument("--only", default="", help="comma list of: lora,qat-lora,l4q,peft,torchao")
    return p.parse_args()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def write_model(a, out):
    """A random LlamaForCausalLM in float32 safetensors, written once per shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    stamp = os.path.join(out, "shape.json")
    shape = dict(hidden=a.hidden, inter=a.inter, layers=a.layers, heads=a.heads, vocab=a.vocab)
    if os.path.exists(stamp) and json.load(open(stamp)) == shape:
        return
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.inter,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.heads, max_position_embeddings=max(2048, a.seq),
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out, safe_serialization=True)
    json.dump(shape, open(stamp, "w"))


def write_corpus(path, n_words):
    rnd = random.Random(0)
    words = ("the a little girl boy dog cat sun tree house went saw played happy sad big small "
             "ran jumped said to and with in on of was had they she he it friend mom dad park "
             "ball red blue day night time once upon there lived very").split()
    with open(path, "w") as f:
        for i in range(n_words):
            f.write(rnd.choice(words) + (".\n" if i % 12 == 11 else " "))


def run_l4q(a, method, model_dir, corpus, src):
    out = os.path.join(a.workdir, "run-" + method)
    n = a.warmup + a.steps
    sets = {
        "model": json.dumps(model_dir), "tokenizer": json.dumps(os.path.join(src, "assets/stories260K/tok512.model")),
        "method": json.dumps(method), "target_modules": json.dumps(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        "lora.rank": a.rank, "lora.alpha": a.alpha, "lora.dropout": 0.0,
        "quant.bits": a.bits, "quant.group_size": a.group,
        "data.format": '"text"', "data.train": json.dumps(corpus), "data.max_length": a.seq,
        "data.val_fraction": 0.0,
        "optim.lr": a.lr, "optim.weight_decay": 0.01, "optim.max_grad_norm": 1.0,
        "optim.warmup_steps": 0, "batch_size": a.batch, "grad_accum": 1, "max_steps": n,
        "log_every": 1, "eval_every": 0, "save_every": 0, "threads": a.threads,
        "output_dir": json.dumps(out),
    }
    cmd = [a.l4q_train, "--force", "--no-progress", "--quiet"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"l4q-train {method} failed ({r.returncode}): {r.stderr[-2000:]}")
    times = []
    for line in open(os.path.join(out, "metrics.jsonl")):
        e = json.loads(line)
        if e.get("event") == "train" and e["step"] > a.warmup:
            times.append(a.batch * a.seq / e["tokens_per_s"])
    if len(times) != a.steps:
        raise RuntimeError(f"l4q-train {method}: expected {a.steps} timed steps, got {len(times)}")
    log(f"  l4q {method}: {time.time() - t0:.0f} s wall, steps {['%.2f' % t for t in times]}")
    return times


def run_torch(a, model_dir, qat):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if qat:
        # torchao QAT "prepare": every nn.Linear of the blocks becomes a FakeQuantizedLinear
        # (int4, asymmetric, group-wise weight fake-quant, scales from the weight each
        # forward); PEFT then puts LoRA on top of the fake-quantized base, as torchtune's
        # QAT-LoRA recipe does. lm_head stays float, as in l4q.
        from torchao.quantization import quantize_
        from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

        wcfg = IntxFakeQuantizeConfig(torch.int4, group_size=a.group, is_symmetric=False)
        quantize_(model.model.layers, QATConfig(weight_config=wcfg, step="prepare"))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                                             target_modules=targets, bias="none"))
    if qat:
        n_fq = sum(1 for m in model.modules() if type(m).__name__ == "FakeQuantizedLinear")
        assert n_fq == 7 * a.layers, f"expected {7 * a.layers} FakeQuantizedLinear, got {n_fq}"
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    times = []
    for step in range(a.warmup + a.steps):
        ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(dt)
    name = "torchao QAT + PEFT LoRA" if qat else "PEFT LoRA"
    log(f"  {name}: steps {['%.2f' % t for t in times]} (attn {model.config._attn_implementation})")
    return times


def main():
    a = parse()
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.makedirs(a.workdir, exist_ok=True)
    model_dir = os.path.join(a.workdir, "model")
    corpus = os.path.join(a.workdir, "corpus.txt")
    import torch, peft, torchao, transformers  # noqa: E401 (versions for the report)

    log(f"side-by-side: torch {torch.__version__}, peft {peft.__version__}, torchao "
        f"{torchao.__version__}, transformers {transformers.__version__}; threads {a.threads}")
    write_model(a, model_dir)
    # ~2 tokens per word with the 512-piece tokenizer: plenty for (warmup + steps) batches.
    write_corpus(corpus, (a.warmup + a.steps + 2) * a.batch * a.seq)
    only = set(a.only.split(",")) if a.only else {"lora", "qat-lora", "l4q", "peft", "torchao"}
    med = {}
    for key in ["peft", "lora", "torchao", "qat-lora", "l4q"]:
        if key not in only:
            continue
        if key == "peft":
            t = run_torch(a, model_dir, qat=False)
        elif key == "torchao":
            try:
                t = run_torch(a, model_dir, qat=True)
            except Exception as e:  # report, keep the rest of the comparison
                log(f"  torchao QAT-LoRA did not run on CPU: {type(e).__name__}: {e}")
                continue
        else:
            t = run_l4q(a, key, model_dir, corpus, src)
        med[key] = statistics.median(t)

    print(f"shape: hidden {a.hidden}, inter {a.inter}, {a.layers} layers, {a.heads} heads, vocab "
          f"{a.vocab}; batch {a.batch} x seq {a.seq}; LoRA r{a.rank} alpha {a.alpha:g} on q,k,v,o,"
          f"gate,up,down; {a.bits}-bit g{a.group}; {a.threads} threads; median of {a.steps} steps "
          f"after {a.warmup}")
    names = {"peft": "PEFT LoRA (torch %s)" % torch.__version__, "lora": "l4q lora",
             "torchao": "torchao QAT + PEFT LoRA", "qat-lora": "l4q qat-lora", "l4q": "l4q l4q"}
    for k, v in med.items():
        print(f"  {names[k]:<28} {v:7.3f} s/step  {a.batch * a.seq / v:8.0f} tok/s")
    for ours, theirs in [("lora", "peft"), ("qat-lora", "torchao"), ("l4q", "peft"), ("l4q", "torchao")]:
        if ours in med and theirs in med:
            print(f"  {names[theirs]} / {names[ours]}: x{med[theirs] / med[ours]:.2f}"
                  f"  ({'l4q faster' if med[theirs] > med[ours] else 'l4q slower'})")


if __name__ == "__main__":
    main()
