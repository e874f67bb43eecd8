"""Our GPTQ v2 export, dequantized by GPTQModel's unpacking code (see tools/check-gptq.sh).

For 2, 3, 4 and 8 bits (group 32), with and without quant.integer_offset, trains a short L4Q
run of stories260K on the attention projections (its MLP, 172 wide, cannot be packed), exports
it as GPTQ and as a float HF directory (exactly the trained W_q), then runs GPTQModel's
PackableQuantLinear.dequantize_weight on the qweight/qzeros/scales/g_idx of every layer:
  * with fp32 scales, the result minus W_q has the max |.| that export_report.json reports
    (so the zero-point convention, the nibble/word order and the 3-bit packing agree);
  * with the stored fp16 scales (what GPTQModel computes), within that error plus one fp16
    rounding of the product;
  * with integer offsets, max_offset_error is 0.
Exits non-zero on any failure.
"""
import ast
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file

SRC = os.environ["L4Q_SOURCE_DIR"]
BUILD = os.environ["L4Q_BUILD_DIR"]
GPTQMODEL = os.environ["L4Q_GPTQMODEL_SRC"]
TRAIN = os.path.join(BUILD, "tools", "l4q-train")
EXPORT = os.path.join(BUILD, "tools", "l4q-export")
failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def gptqmodel_dequantizer():
    """A module class carrying GPTQModel's unpacking methods, unchanged, from its source."""
    path = os.path.join(GPTQMODEL, "gptqmodel", "nn_modules", "qlinear", "__init__.py")
    tree = ast.parse(open(path).read())
    wanted_funcs = {"_torch_shift_factor", "_torch_right_shift", "_torch_left_shift"}
    wanted_methods = {"_wf_device", "_init_wf_unsqueeze_buffers", "dequantize_weight", "_dequantize_from_codes"}
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted_funcs]
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PackableQuantLinear")
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in wanted_methods]
    found = {n.name for n in body} | {n.name for n in methods}
    if found != wanted_funcs | wanted_methods:
        sys.exit(f"{path}: missing {sorted((wanted_funcs | wanted_methods) - found)}")
    cls.body, cls.bases, cls.decorator_list = methods, [ast.Name("Module", ast.Load())], []
    mod = ast.Module(body=body + [cls], type_ignores=[])
    ns = {"t": torch, "torch": torch, "nn": torch.nn, "Module": torch.nn.Module}
    exec(compile(ast.fix_missing_locations(mod), path, "exec"), ns)
    return ns["PackableQuantLinear"]


def dequantize(Cls, bits, qweight, qzeros, scales, g_idx):
    m = Cls()
    # The attributes GPTQQuantLinear.__init__ / TorchQuantLinear set for a gptq layer.
    m.bits, m.pack_dtype_bits, m.maxq = bits, 32, 2 ** bits - 1
    m.pack_factor = 32 // bits
    m.planar, m.enable_wf_unsqueeze = False, True
    m.dequant_dtype = torch.int16 if bits == 8 else torch.int8
    m.in_features = g_idx.shape[0]
    m.qweight, m.qzeros, m.scales, m.g_idx = qweight, qzeros, scales, g_idx
    with torch.no_grad():
        return m.dequantize_weight().t()  # [out, in]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def main():
    Cls = gptqmodel_dequantizer()
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (2, 3, 4, 8):
            for integer in (False, True):
                label = f"{bits}-bit g32{' integer offset' if integer else ''}"
                rd = os.path.join(tmp, f"run{bits}{integer}")
                run([TRAIN, "--config", os.path.join(SRC, "configs", "stories260k-l4q-3bit.json"),
                     "--output", rd, "--steps", "6", "--threads", "2", "--set", f"quant.bits={bits}",
                     "--set", f"quant.integer_offset={'true' if integer else 'false'}",
                     "--set", 'target_modules=["q_proj","k_proj","v_proj","o_proj"]',
                     "--set", "data.max_records=60", "--set", "data.max_length=160", "--set", "eval_every=0",
                     "--set", 'model="%s"' % os.path.join(SRC, "assets", "stories260K", "stories260K.gguf"),
                     "--set", 'data.train="%s"' % os.path.join(SRC, "assets", "alpaca", "alpaca_en_demo.json"),
                     "--no-progress", "--quiet"])
                gd, hd = os.path.join(tmp, f"g{bits}{integer}"), os.path.join(tmp, f"h{bits}{integer}")
                rep = json.loads(run([EXPORT, "--from", rd, "--format", "gptq", "--out", gd, "--json"]))
                run([EXPORT, "--from", rd, "--format", "hf", "--out", hd, "--json"])
                g, h = load_file(os.path.join(gd, "model.safetensors")), load_file(os.path.join(hd, "model.safetensors"))
                qc = json.load(open(os.path.join(gd, "config.json")))["quantization_config"]
                worst32 = worst16 = 0.0
                bound16 = 0.0
                layers = 0
                for name in h:
                    if not name.endswith("proj.weight") or name[:-len("weight")] + "qweight" not in g:
                        continue
                    p = name[:-len("weight")]
                    qw, qz = torch.from_numpy(g[p + "qweight"]), torch.from_numpy(g[p + "qzeros"])
                    sc, gi = torch.from_numpy(g[p + "scales"]), torch.from_numpy(g[p + "g_idx"])
                    W = torch.from_numpy(h[name]).double()
                    w32 = dequantize(Cls, bits, qw, qz, sc.float(), gi).double()
                    w16 = dequantize(Cls, bits, qw, qz, sc, gi)
                    check(w16.dtype == torch.float16, f"{label} {p}: GPTQModel dequantizes to fp16") if layers == 0 else None
                    worst32 = max(worst32, float((w32 - W).abs().max()))
                    worst16 = max(worst16, float((w16.double() - W).abs().max()))
                    bound16 = max(bound16, float(W.abs().max()) * 2.0 ** -11)
                    layers += 1
                print(f"      {label}: {layers} layers; reported weight {rep['max_weight_error']:.3e}, "
                      f"step {rep['max_scale_error']:.3e}, offset {rep['max_offset_error']:.3e}")
                check(qc["bits"] == bits and qc["checkpoint_format"] == "gptq_v2" and layers == rep["quantized_layers"] == 20,
                      f"{label}: quantization_config bits {qc['bits']}, {qc['checkpoint_format']}, {layers} layers")
                check(abs(worst32 - rep["max_weight_error"]) <= 1e-9,
                      f"{label}: GPTQModel (fp32 scales) max |W - W_q| {worst32:.3e} == reported {rep['max_weight_error']:.3e}")
                check(worst16 <= rep["max_weight_error"] + bound16,
                      f"{label}: GPTQModel (fp16) max |W - W_q| {worst16:.3e} <= reported + fp16 rounding {bound16:.1e}")
                if integer:
                    check(rep["max_offset_error"] == 0.0, f"{label}: integer offsets: max_offset_error 0")
                else:
                    check(rep["max_offset_error"] > 0, f"{label}: float offsets: max_offset_error reported")
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all GPTQ checks against GPTQModel passed")


if __name__ == "__main__":
    main()
