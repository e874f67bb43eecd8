"""l4q's byte-level BPE against HF `tokenizers` (the version transformers 4.46.3 pins).

The reference tokenizers are built from SmolLM2-135M-Instruct's GGUF vocabulary and merges
(tools/fetch-smollm2.sh): with SmolLM2's own pre-tokenizer (Digits + ByteLevel, as its
tokenizer.json), with plain GPT-2 ByteLevel, and with LLaMA-3's Split regex + ignore_merges.
l4q reads the vocabulary from the GGUF itself (tokenizer.ggml.*) and from each tokenizer.json
that `tokenizers` writes. Compared on every non-empty line of WikiText-2 test, every Alpaca
field (instruction, input, output) of ../shared/data, and on hand-written tricky strings:
identical ids and identical decoded text. Skips (exit 0) when the model is absent; the data
sets are used when present.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

SRC = os.environ.get("L4Q_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("L4Q_BUILD_DIR", os.path.join(SRC, "build"))
SHARED = os.environ.get("L4Q_SHARED_DATA", os.path.join(SRC, "..", "shared", "data"))
TOOL = os.path.join(BUILD, "tests", "l4q_interop_bpe")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| "
                r"?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TRICKY = [
    "", " ", "  ", "\n", " \n\n ", "\t\tx", "a  b", "a   b ", "trailing   ", "   leading",
    "Hello world", "Hello, world! How's it going? I'm fine, you'll see; we'd've", "'s 'S 'RE 'Ll",
    "don't DON'T O'Neil rock'n'roll ''quoted''", "'", "''s", "x'", "2024-01-01: 3.14159, 1,000,000",
    "12345678901 + 0.5e-10", "\u0661\u0662\u0663 \u00bd \u2160\u2161 \u2460", "caf\u00e9 na\u00efve",
    "e\u0301 a\u0308\u0301 \u0915\u093f \u0928\u092e\u0938\u094d\u0924\u0947", "\u4f60\u597d\uff0c\u4e16\u754c\u3002",
    "\u3053\u3093\u306b\u3061\u306f \u30ab\u30bf\u30ab\u30ca", "\U0001F600\U0001F680 \U0001F44D\U0001F3FD "
    "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u00a0\u00a0nbsp \u2003em\u3000ideo \u2028ls \u2029ps",
    "\x1c\x1d\x1e\x1f unit sep", "\x00\x01\x7f ctrl", "\r\n\r\nwindows\r\n", "tab\there\n\nnew",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|><|endoftext|>x",
    "<|im_start|", "def f(x):\n    return x**2  # square\n", "http://example.com/a?b=c&d=e#f",
    "\u00a9\u00ae\u2122 \u00b0C \u20ac100 \u00a3 \u00a5", "\u0394\u03b5\u03bb\u03c4\u03b1 \u041f\u0440\u0438\u0432\u0435\u0442 \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "ALLCAPS MiXeD camelCase snake_case kebab-case", "....!!!???", "a.b,c;d:e", "\u2019s \u201cquotes\u201d",
    "\ufeffbom", "\U00010400\U0001D400 math", "x\u0300\u0300\u0300", "...\n\n\n...",
]


def model_path():
    env = os.environ.get("L4Q_SMOLLM2_GGUF")
    if env:
        return env if os.path.isfile(env) else None
    p = os.path.expanduser("~/.cache/l4q-models/SmolLM2-135M-Instruct.Q4_1.gguf")
    return p if os.path.isfile(p) else None


def read_vocab(path):
    import gguf
    r = gguf.GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = r.fields[key]
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v.tolist()[0]

    tt = r.fields["tokenizer.ggml.token_type"]
    types = [int(tt.parts[i][0]) for i in tt.data]
    return (strings("tokenizer.ggml.tokens"), types, strings("tokenizer.ggml.merges"),
            scalar("tokenizer.ggml.pre"))


def hf_tokenizer(tokens, types, merges, kind):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                     merges=[tuple(m.split(" ", 1)) for m in merges],
                     ignore_merges=(kind == "llama3"))
    tok = Tokenizer(bpe)
    if kind == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok


def shared_texts():
    texts, sources = [], []
    wiki = os.path.join(SHARED, "wikitext2-test.raw")
    if os.path.isfile(wiki):
        with open(wiki, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
        texts += lines
        sources.append("WikiText-2 test: %d lines" % len(lines))
    alpaca = os.path.join(SHARED, "alpaca_en_demo.json")
    if os.path.isfile(alpaca):
        with open(alpaca, encoding="utf-8") as f:
            recs = json.load(f)
        fields = [r[k] for r in recs for k in ("instruction", "input", "output") if r.get(k)]
        texts += fields
        sources.append("Alpaca: %d records, %d non-empty fields" % (len(recs), len(fields)))
    return texts, sources


def frame(records):
    return b"".join(struct.pack("<I", len(r)) + r for r in records)


def unframe(data):
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("<I", data, i)
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


def run_l4q(tokenizer_file, texts, tmp):
    inp = os.path.join(tmp, "in.bin")
    with open(inp, "wb") as f:
        f.write(frame(t.encode("utf-8") for t in texts))
    ids_file, text_file = os.path.join(tmp, "ids.txt"), os.path.join(tmp, "text.bin")
    out = subprocess.run([TOOL, "encode", tokenizer_file, inp, ids_file, text_file],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("l4q_interop_bpe failed: " + out.stderr)
    print("   ", out.stdout.strip())
    with open(ids_file) as f:
        ids = [[int(x) for x in line.split()] for line in f.read().split("\n")[:len(texts)]]
    with open(text_file, "rb") as f:
        decoded = unframe(f.read())
    return ids, [d.decode("utf-8", errors="replace") for d in decoded]


def compare(name, hf, tokenizer_file, texts, tmp):
    import time
    t0 = time.perf_counter()
    ref = hf.encode_batch(texts, add_special_tokens=False)
    t_hf = time.perf_counter() - t0
    ref_ids = [e.ids for e in ref]
    ref_text = hf.decode_batch(ref_ids, skip_special_tokens=True)
    ids, decoded = run_l4q(tokenizer_file, texts, tmp)
    bad = [i for i in range(len(texts)) if ids[i] != ref_ids[i]]
    bad_text = [i for i in range(len(texts)) if decoded[i] != ref_text[i]]
    n_tok = sum(len(x) for x in ref_ids)
    print("  %-28s %d texts, %d tokens: ids differ in %d, decoded text differs in %d "
          "(HF encode_batch %.2f s)" % (name, len(texts), n_tok, len(bad), len(bad_text), t_hf))
    for i in (bad + bad_text)[:5]:
        print("    text %r\n      hf  %s\n      l4q %s\n      hf  text %r\n      l4q text %r" % (
            texts[i][:200], ref_ids[i][:40], ids[i][:40], ref_text[i][:200], decoded[i][:200]))
        pre = hf.pre_tokenizer.pre_tokenize_str(texts[i])
        print("      hf words %s" % [w for w, _ in pre][:40])
    return not bad and not bad_text


def ours_in_hf(path, ref, texts, tmp):
    """The tokenizer.json + tokenizer_config.json that l4q's exports write for a BPE run,
    loaded by HF `tokenizers` and transformers: same ids and text as the reference."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    d = os.path.join(tmp, "l4q-written")
    os.makedirs(d)
    subprocess.run([TOOL, "write-json", path, d], check=True)
    ours = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ref_ids = [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
    ids = [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)]
    bad = [i for i in range(len(texts)) if ids[i] != ref_ids[i]]
    bad_text = [i for i in range(len(texts)) if ours.decode(ids[i], skip_special_tokens=False)
                != ref.decode(ref_ids[i], skip_special_tokens=False)]
    fast = PreTrainedTokenizerFast.from_pretrained(d)
    eos_ok = fast.eos_token == "<|im_end|>" and fast.convert_tokens_to_ids("<|im_end|>") == 2
    print("  %-28s %d texts: ids differ in %d, decoded text differs in %d; transformers eos %r" % (
        "l4q-written tokenizer.json", len(texts), len(bad), len(bad_text), fast.eos_token))
    for i in (bad + bad_text)[:5]:
        print("    text %r\n      ref %s\n      ours %s" % (texts[i][:200], ref_ids[i][:40], ids[i][:40]))
    return not bad and not bad_text and eos_ok


def main():
    path = model_path()
    if path is None:
        print("skipped: SmolLM2 GGUF absent (run tools/fetch-smollm2.sh or set L4Q_SMOLLM2_GGUF)")
        return 77  # ctest SKIP_RETURN_CODE: shown as skipped, not passed
    if not os.path.isfile(TOOL):
        print("l4q_interop_bpe not built: %s" % TOOL)
        return 1
    tokens, types, merges, pre = read_vocab(path)
    print("%s: %d tokens (%d control), %d merges, pre-tokenizer %s" % (
        path, len(tokens), types.count(3), len(merges), pre))
    if pre != "smollm":
        print("unexpected tokenizer.ggml.pre %r" % pre)
        return 1
    extra, sources = shared_texts()
    for s in sources:
        print("  data:", s)
    if not sources:
        print("  ../shared/data absent: comparing the hand-written strings only")
    texts = TRICKY + extra
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ok &= compare("gguf (smollm)", hf_tokenizer(tokens, types, merges, "smollm"), path, texts, tmp)
        for kind in ("smollm", "gpt2", "llama3"):
            hf = hf_tokenizer(tokens, types, merges, kind)
            d = os.path.join(tmp, kind)
            os.makedirs(d)
            hf.save(os.path.join(d, "tokenizer.json"))
            ok &= compare("tokenizer.json (%s)" % kind, hf, os.path.join(d, "tokenizer.json"), texts, tmp)
        ok &= ours_in_hf(path, hf_tokenizer(tokens, types, merges, "smollm"), texts, tmp)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
