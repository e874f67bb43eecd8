"""Greedy generation of SmolLM2-135M-Instruct (Q4_1 GGUF): l4q-generate against transformers.

transformers 4.46.3 reads the same GGUF (modeling_gguf_pytorch_utils.load_gguf_checkpoint:
gguf-py dequantizes Q4_1/Q8_0 to fp32 and undoes llama.cpp's Q/K row permutation) into a
LlamaForCausalLM with tied embeddings (the file has no output.weight). Its greedy loop runs
here by hand with the KV cache, because generate() imports torch.distributed.fsdp, which
Debian's torch 1.13 cannot import under Python 3.11. l4q-generate gets the prompt as text, so
its byte-level BPE is checked too: the prompt ids must equal HF's, then 32 new tokens
(--ignore-eos) must match token for token. Skips (exit 0) when the GGUF is absent.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_bpe_tokenizer as bpe  # noqa: E402

BUILD = bpe.BUILD
GENERATE = os.path.join(BUILD, "tools", "l4q-generate")
N_NEW = 32
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]


def hf_model(path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    parsed = load_gguf_checkpoint(path, return_tensors=True)
    cfg = LlamaConfig(**parsed["config"])
    cfg.tie_word_embeddings = "lm_head.weight" not in parsed["tensors"]
    model = LlamaForCausalLM(cfg).eval()
    state = {k: v if torch.is_tensor(v) else torch.from_numpy(v.copy()) for k, v in parsed["tensors"].items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise SystemExit("transformers: missing %s, unexpected %s" % (missing, result.unexpected_keys))
    model.tie_weights()
    return model, cfg


def hf_greedy(model, ids, n):
    import torch
    seq = list(ids)
    with torch.no_grad():
        out = model(torch.tensor([seq]), use_cache=True)
        for _ in range(n):
            nxt = int(out.logits[0, -1].argmax())
            seq.append(nxt)
            out = model(torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
    return seq[len(ids):]


def main():
    os.environ.setdefault("TQDM_DISABLE", "1")
    path = bpe.model_path()
    if path is None:
        print("skipped: SmolLM2 GGUF absent (run tools/fetch-smollm2.sh or set L4Q_SMOLLM2_GGUF)")
        return 77  # ctest SKIP_RETURN_CODE: shown as skipped, not passed
    if not os.path.isfile(GENERATE):
        print("l4q-generate not built: %s" % GENERATE)
        return 1
    tokens, types, merges, _ = bpe.read_vocab(path)
    tok = bpe.hf_tokenizer(tokens, types, merges, "smollm")
    t0 = time.perf_counter()
    model, cfg = hf_model(path)
    print("transformers: %d layers, hidden %d, heads %d/%d, vocab %d, tied %s (load %.1f s)" % (
        cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
        cfg.vocab_size, cfg.tie_word_embeddings, time.perf_counter() - t0))
    ok = True
    for prompt in PROMPTS:
        ids = tok.encode(prompt, add_special_tokens=False).ids
        t0 = time.perf_counter()
        ref = hf_greedy(model, ids, N_NEW)
        t_hf = time.perf_counter() - t0
        out = subprocess.run([GENERATE, "--model", path, "--prompt", prompt, "-n", str(N_NEW),
                              "--print-ids", "--ignore-eos", "--threads", "1"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print("l4q-generate failed:\n" + out.stderr)
            return 1
        got = [int(x) for x in out.stdout.split()]
        same = got == ref
        ok &= same
        print("prompt %r (%d tokens): %s; HF %.1f s" % (prompt[:40], len(ids), "identical" if same else "DIFFERENT", t_hf))
        print("  hf  %s\n  l4q %s\n  text %r" % (ref, got, tok.decode(ref, skip_special_tokens=False)))
        print("  " + out.stderr.strip().splitlines()[-1])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
