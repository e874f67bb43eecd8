"""l4q's GGUF reader/writer against gguf-py (gguf 0.10.0, llama.cpp's Python package).

  * stories260K.gguf: every metadata key, its type and value (arrays element by element) and
    every tensor (name, type, ne, absolute data offset, values) agree between l4q's GgufFile
    and gguf.GGUFReader;
  * a GGUF written by l4q's GgufWriter (every metadata type; F32, F16, BF16, Q4_0, Q4_1, Q8_0
    tensors) reads back in GGUFReader with the same metadata, and gguf.quants.dequantize of
    each tensor's bytes equals l4q's dequantization exactly; l4q's reference quantizer bytes
    are also compared with gguf.quants.quantize;
  * l4q-convert's HF directory holds q_proj/k_proj equal to the GGUF rows permuted with
    transformers' `permute` formula (numpy, independent of l4q).
Exits non-zero on any mismatch and prints what it compared.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize, quantize

SRC = os.environ.get("L4Q_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("L4Q_BUILD_DIR", os.path.join(SRC, "build"))
TOOL = os.path.join(BUILD, "tests", "l4q_interop_io")
CONVERT = os.path.join(BUILD, "tools", "l4q-convert")
GGUF = os.path.join(SRC, "assets", "stories260K", "stories260K.gguf")

failures = []
TEMP_DIRS = []
stats = {"keys": 0, "array_elements": 0, "tensors": 0, "values": 0}


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


def field_value(field):
    """A ReaderField's value as Python objects: (type name, element type name, value)."""
    t = field.types[0]
    if t == GGUFValueType.ARRAY:
        # GGUFReader records the element type in `types` only for non-empty arrays; parts[3]
        # is the raw element type field (after key length, key bytes and value type).
        et = field.types[1] if len(field.types) > 1 else GGUFValueType(int(field.parts[3][0]))
        vals = [field.parts[i] for i in field.data]
        if et == GGUFValueType.STRING:
            vals = [bytes(v).decode("utf-8") for v in vals]
        else:
            vals = [v.tolist()[0] for v in vals]
        return "ARRAY", et.name, vals
    part = field.parts[field.data[0]]
    if t == GGUFValueType.STRING:
        return t.name, None, bytes(part).decode("utf-8")
    return t.name, None, part.tolist()[0]


def same_number(a, b, type_name):
    if type_name in ("FLOAT32",):
        return np.float32(a) == np.float32(b)
    if type_name == "BOOL":
        return bool(a) == bool(b)
    return a == b


def compare_metadata(ours, reader, label):
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    check([m["key"] for m in ours["metadata"]] == list(fields),
          f"{label}: key order {[m['key'] for m in ours['metadata']]} vs {list(fields)}")
    for m in ours["metadata"]:
        f = fields.get(m["key"])
        if f is None:
            check(False, f"{label}: key {m['key']} missing in GGUFReader")
            continue
        stats["keys"] += 1
        t, et, val = field_value(f)
        check(t == m["type"], f"{label}: {m['key']} type {m['type']} vs {t}")
        if t == "ARRAY":
            check(et == m["element_type"], f"{label}: {m['key']} element type {m['element_type']} vs {et}")
            check(len(val) == len(m["value"]), f"{label}: {m['key']} length {len(m['value'])} vs {len(val)}")
            stats["array_elements"] += len(val)
            bad = [i for i, (a, b) in enumerate(zip(m["value"], val)) if not same_number(a, b, et)]
            check(not bad, f"{label}: {m['key']} differs at elements {bad[:5]}")
        else:
            check(same_number(m["value"], val, t), f"{label}: {m['key']} = {m['value']!r} vs {val!r}")


def reader_values(t):
    """GGUFReader tensor -> float32 values in ggml order (flattened)."""
    qt = GGMLQuantizationType(t.tensor_type)
    if qt == GGMLQuantizationType.F32:
        return np.asarray(t.data, dtype=np.float32).reshape(-1)
    if qt == GGMLQuantizationType.F16:
        return np.asarray(t.data).view(np.float16).astype(np.float32).reshape(-1)
    return dequantize(np.asarray(t.data), qt).astype(np.float32).reshape(-1)


def compare_tensors(ours, reader, label):
    by_name = {t.name: t for t in reader.tensors}
    check([t["name"] for t in ours["tensors"]] == [t.name for t in reader.tensors], f"{label}: tensor order")
    for o in ours["tensors"]:
        t = by_name.get(o["name"])
        if t is None:
            check(False, f"{label}: tensor {o['name']} missing in GGUFReader")
            continue
        stats["tensors"] += 1
        check(GGMLQuantizationType(t.tensor_type).name == o["type"], f"{label}: {o['name']} type")
        check([int(x) for x in t.shape] == o["ne"], f"{label}: {o['name']} ne {o['ne']} vs {list(t.shape)}")
        check(int(t.data_offset) == o["offset"], f"{label}: {o['name']} offset {o['offset']} vs {t.data_offset}")
        check(int(t.n_bytes) == o["nbytes"], f"{label}: {o['name']} nbytes")
        ref = reader_values(t)
        mine = np.asarray(o["values"], dtype=np.float64).astype(np.float32)
        stats["values"] += ref.size
        check(ref.shape == mine.shape and np.array_equal(ref, mine), f"{label}: {o['name']} values differ")


def permute_to_hf(w, n_heads):
    """transformers convert_llama_weights_to_hf.py permute(), in numpy."""
    dim1, dim2 = w.shape
    return w.reshape(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(0, 2, 1, 3).reshape(dim1, dim2)


def main():
    tmp = tempfile.mkdtemp(prefix="l4q-interop-gguf-")
    TEMP_DIRS.append(tmp)

    # 1. stories260K.gguf
    ours = run_tool("gguf-dump", GGUF)
    reader = GGUFReader(GGUF)
    check(ours["version"] == 3, "version")
    compare_metadata(ours, reader, "stories260K")
    compare_tensors(ours, reader, "stories260K")
    print(f"stories260K.gguf: {len(ours['metadata'])} keys and {len(ours['tensors'])} tensors agree with GGUFReader")

    # 2. A file written by l4q.
    path = os.path.join(tmp, "ours.gguf")
    written = run_tool("gguf-write", path)
    reader = GGUFReader(path)
    compare_metadata(written, reader, "l4q-written")
    compare_tensors(written, reader, "l4q-written")
    types = sorted({t["type"] for t in written["tensors"]})
    print(f"l4q-written GGUF: {len(written['metadata'])} keys, tensors of types {types} read back identically")

    # l4q's reference quantizers against gguf-py's (a port of ggml's quantize_row_*_ref):
    # quantizing the same F32 source must give the same bytes.
    by_name = {t.name: t for t in reader.tensors}
    for name in ("t.q4_0", "t.q4_1", "t.q8_0"):
        t = by_name[name]
        qt = GGMLQuantizationType(t.tensor_type)
        src = np.asarray(by_name["src." + name].data, dtype=np.float32)
        ref = quantize(src, qt)
        mine = np.asarray(t.data)
        bs = 18 if qt == GGMLQuantizationType.Q4_0 else 20 if qt == GGMLQuantizationType.Q4_1 else 34
        blocks_differ = int((ref.reshape(-1, bs) != mine.reshape(-1, bs)).any(axis=1).sum())
        check(blocks_differ == 0, f"{name}: {blocks_differ} of {mine.size // bs} blocks differ from gguf.quants.quantize")
        stats["values"] += src.size
    print("l4q's Q4_0/Q4_1/Q8_0 bytes equal gguf.quants.quantize of the same F32 values")

    # 3. l4q-convert's q/k permutation against transformers' formula.
    if os.path.exists(CONVERT):
        from safetensors.numpy import load_file
        out = os.path.join(tmp, "hf")
        r = subprocess.run([CONVERT, "--in", GGUF, "--out", out], capture_output=True, text=True)
        check(r.returncode == 0, f"l4q-convert failed: {r.stderr}")
        hf = load_file(os.path.join(out, "model.safetensors"))
        raw = {t.name: np.asarray(t.data) for t in GGUFReader(GGUF).tensors}
        for layer in range(5):
            q = permute_to_hf(raw[f"blk.{layer}.attn_q.weight"], 8)
            k = permute_to_hf(raw[f"blk.{layer}.attn_k.weight"], 4)
            check(np.array_equal(hf[f"model.layers.{layer}.self_attn.q_proj.weight"], q), f"layer {layer} q_proj")
            check(np.array_equal(hf[f"model.layers.{layer}.self_attn.k_proj.weight"], k), f"layer {layer} k_proj")
            check(np.array_equal(hf[f"model.layers.{layer}.mlp.down_proj.weight"], raw[f"blk.{layer}.ffn_down.weight"]),
                  f"layer {layer} down_proj")
        check("lm_head.weight" not in hf, "lm_head stored although tied")
        print("l4q-convert: q_proj/k_proj of 5 layers equal transformers' permute() of the GGUF rows")
    else:
        print(f"skipped the l4q-convert check: {CONVERT} not built")

    print(f"compared {stats['keys']} keys ({stats['array_elements']} array elements), "
          f"{stats['tensors']} tensors ({stats['values']} values)")
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
