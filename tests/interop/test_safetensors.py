"""l4q's safetensors reader/writer against the reference Python `safetensors` (0.4.5).

  * a file written by l4q (every dtype l4q maps: F32 F16 BF16 F64 I8 U8 I16 I32 I64 BOOL, a
    0-d and an empty tensor) loads in safetensors.torch with the same dtypes, shapes, values
    and metadata, and its header follows the reference writer's rules byte by byte (8-byte
    little-endian length, JSON padded with spaces to 8, tensors sorted by descending dtype
    size then name, contiguous offsets, data ending the file);
  * files written by safetensors.torch.save_file (the same dtypes, with and without
    metadata) load in l4q with identical values;
  * an HF directory written by l4q-convert (stories260K.gguf) loads in transformers
    LlamaForCausalLM with no missing or unexpected keys, and its weights equal the file's.
Exits non-zero on any mismatch and prints what it compared.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

SRC = os.environ.get("L4Q_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("L4Q_BUILD_DIR", os.path.join(SRC, "build"))
TOOL = os.path.join(BUILD, "tests", "l4q_interop_io")
CONVERT = os.path.join(BUILD, "tools", "l4q-convert")
GGUF = os.path.join(SRC, "assets", "stories260K", "stories260K.gguf")

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
          "BOOL": torch.bool}
BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8, "BOOL": 1}

failures = []
TEMP_DIRS = []
compared = {"tensors": 0, "values": 0}


def check(cond, what):
    if not cond:
        failures.append(what)
        if len(failures) <= 20:
            print("MISMATCH:", what)


def run_tool(*args):
    r = subprocess.run([TOOL, *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"l4q_interop_io {args[0]} failed with {r.returncode}")
    return json.loads(r.stdout)


def as_list(t):
    t = t.reshape(-1)
    if t.dtype.is_floating_point:
        return [float(x) for x in t.double().tolist()]
    return [int(x) for x in t.long().tolist()]


def compare(name, ours, ref):
    """ours: {dtype, shape, values} from the tool; ref: a torch tensor."""
    compared["tensors"] += 1
    check(DTYPES[ours["dtype"]] == ref.dtype, f"{name}: dtype {ours['dtype']} vs {ref.dtype}")
    check(list(ref.shape) == ours["shape"], f"{name}: shape {ours['shape']} vs {list(ref.shape)}")
    vals = as_list(ref)
    compared["values"] += len(vals)
    check(vals == ours["values"], f"{name}: values differ")


def check_layout(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + n].decode("utf-8")
    check(n % 8 == 0, f"header length {n} not a multiple of 8")
    check(header.rstrip(" ").endswith("}") and set(header[len(header.rstrip(' ')):]) <= {" "},
          "header not padded with spaces")
    h = json.loads(header)
    check(h.get("__metadata__", {}).get("format") == "pt", "__metadata__.format != pt")
    entries = sorted(((v["data_offsets"], k, v) for k, v in h.items() if k != "__metadata__"))
    end = 0
    prev = None
    for (b, e), k, v in entries:
        check(b == end, f"{k}: begins at {b}, previous ended at {end}")
        key = (-BYTES[v["dtype"]], k)
        check(prev is None or prev < key, f"{k}: not sorted by descending dtype size then name")
        check((8 + n + b) % BYTES[v["dtype"]] == 0, f"{k}: misaligned")
        prev, end = key, e
    check(8 + n + end == len(data), "data does not end the file")


def main():
    tmp = tempfile.mkdtemp(prefix="l4q-interop-st-")
    TEMP_DIRS.append(tmp)

    # 1. l4q writes, safetensors reads.
    path = os.path.join(tmp, "ours.safetensors")
    ours = run_tool("st-write", path)["tensors"]
    ref = load_file(path)
    check(sorted(ref) == sorted(ours), f"tensor names {sorted(ref)} vs {sorted(ours)}")
    for name, t in ours.items():
        compare(f"l4q->safetensors {name}", t, ref[name])
    with safe_open(path, framework="pt") as f:
        check(f.metadata() == {"format": "pt", "source": "l4q"}, f"metadata {f.metadata()}")
    check_layout(path)
    print(f"l4q-written file: {len(ours)} tensors load in safetensors {len(ref)}; header layout checked")

    # 2. safetensors writes, l4q reads.
    torch.manual_seed(0)
    tensors = {
        "model.embed.weight": torch.randn(7, 5),
        "half": torch.randn(3, 4).half(),
        "brain": torch.randn(9).bfloat16(),
        "double": torch.randn(2, 3, 2, dtype=torch.float64),
        "int8": torch.randint(-128, 128, (6,), dtype=torch.int8),
        "uint8": torch.randint(0, 256, (4,), dtype=torch.uint8),
        "int16": torch.randint(-32768, 32768, (3,), dtype=torch.int16),
        "int32": torch.randint(-2**31, 2**31 - 1, (3,), dtype=torch.int32),
        "int64": torch.randint(-2**62, 2**62, (3,), dtype=torch.int64),
        "mask": torch.rand(5) > 0.5,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 2),
    }
    for meta in (None, {"format": "pt", "note": "x"}):
        p = os.path.join(tmp, "ref.safetensors")
        save_file(tensors, p, metadata=meta)
        dump = run_tool("st-dump", p)
        check(dump["metadata"] == (meta or {}), f"metadata {dump['metadata']} vs {meta}")
        check(sorted(dump["tensors"]) == sorted(tensors), "tensor names differ")
        for name, t in tensors.items():
            compare(f"safetensors->l4q {name}", dump["tensors"][name], t)
    print(f"safetensors-written files: {len(tensors)} tensors x 2 metadata variants read by l4q")

    # 3. An HF directory from l4q-convert loads in transformers.
    if os.path.exists(CONVERT):
        from transformers import LlamaConfig, LlamaForCausalLM
        out = os.path.join(tmp, "hf")
        r = subprocess.run([CONVERT, "--in", GGUF, "--out", out], capture_output=True, text=True)
        check(r.returncode == 0, f"l4q-convert failed: {r.stderr}")
        cfg = LlamaConfig.from_pretrained(out)
        check((cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads,
               cfg.num_key_value_heads, cfg.vocab_size, cfg.tie_word_embeddings)
              == (64, 172, 5, 8, 4, 512, True), f"config {cfg}")
        model, info = LlamaForCausalLM.from_pretrained(out, output_loading_info=True)
        check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
              f"transformers loading info {info}")
        sd = model.state_dict()
        weights = load_file(os.path.join(out, "model.safetensors"))
        for k, v in weights.items():
            check(torch.equal(sd[k], v), f"transformers weight {k} differs from the file")
        check(torch.equal(sd["lm_head.weight"], weights["model.embed_tokens.weight"]), "lm_head not tied")
        print(f"l4q-convert output: transformers LlamaForCausalLM loads {len(weights)} tensors, tied lm_head")
    else:
        print(f"skipped the transformers check: {CONVERT} not built")

    print(f"compared {compared['tensors']} tensors, {compared['values']} values")
    if failures:
        print(f"FAILED: {len(failures)} mismatches")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for d in TEMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
