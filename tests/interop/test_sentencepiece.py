"""l4q's native SentencePiece tokenizer against the reference Python `sentencepiece` (0.2.0).

Compares, for tok512.model (bundled) and the LLaMA-2 tokenizer (when ../shared/data has it):
  * encode ids (plain and with BOS/EOS) and decode(ids) text, on every non-empty line of
    WikiText-2 test, every instruction/input/output of alpaca_en_demo.json (when present),
    and on texts generated here (always: awkward whitespace, emoji, CJK, malformed UTF-8,
    literal piece spellings, ...);
  * decode of random id sequences (control, byte and U+2581 pieces mixed);
  * `.model` files written by l4q: the GGUF vocabulary of stories260K.gguf turned into a
    model (sentencepiece_model_from_vocab), and each model read and written back; each must
    load in Python sentencepiece and encode every text exactly as the original.
Exits non-zero on any mismatch and prints what it compared.
"""
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

import sentencepiece as spm

SRC = os.environ.get("L4Q_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("L4Q_BUILD_DIR", os.path.join(SRC, "build"))
TOOL = os.path.join(BUILD, "tests", "l4q_interop_tokenize")
SHARED = os.environ.get("L4Q_SHARED_DATA", os.path.join(SRC, "..", "shared", "data"))
TOK512 = os.path.join(SRC, "assets", "stories260K", "tok512.model")
GGUF = os.path.join(SRC, "assets", "stories260K", "stories260K.gguf")
LLAMA2 = os.path.join(SHARED, "llama2_tokenizer.model")

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        if len(failures) <= 20:
            print("MISMATCH:", what)


def run_tool(*args):
    r = subprocess.run([TOOL, *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"l4q_interop_tokenize {args[0]} failed with {r.returncode}")
    return r.stdout


def as_bytes(t):
    return t if isinstance(t, bytes) else t.encode("utf-8")


def generated_texts(seed=1234, n=3000):
    rng = random.Random(seed)
    words = ["the", "The", "a", "cat", "sat", "on", "mat", "Lily", "once", "upon", "time",
             "don't", "it's", "hello", "world", "Hello", "HELLO", "123", "4567", "3.14",
             "naïve", "café", "Zürich", "straße", "Ελληνικά", "русский", "עברית", "العربية",
             "日本語", "中文字符", "한국어", "ไทย", "हिन्दी", "😀", "🦙", "👩‍👩‍👧", "🇩🇪", "∑", "√2",
             "e\u0301", "<s>", "</s>", "<unk>", "<0x41>", "<0xZZ>", "\u2581", "\u2581\u2581x",
             "tab\tbed", "new\nline", "cr\r\nlf", "\x00", "\x07", "\u00a0", "\u3000", "\ufeff",
             "\ufffd", "--", "...", "\"quoted\"", "(paren)", "#hash", "a_b", "x" * 40]
    seps = [" ", " ", " ", "  ", "   ", "\t", "\n", "", " \n ", "\u2581"]
    out = ["", " ", "  ", "\n", "\u2581", "\u2581\u2581", " leading", "trailing ", "  both  ",
           "Hello world", "Hello  world", " Hello world", "Hello world ", "😀", "日本語",
           b"ab\xffc\xe2\x96", b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
           b"\xe2\x96\x81", b"x\xe2\x96"]
    for _ in range(n):
        k = rng.randint(1, 25)
        parts = []
        for _ in range(k):
            parts.append(rng.choice(words))
            parts.append(rng.choice(seps))
        s = "".join(parts)
        if rng.random() < 0.2:
            s = " " * rng.randint(1, 3) + s
        if rng.random() < 0.1:  # malformed UTF-8 inside
            b = bytearray(s.encode("utf-8"))
            for _ in range(rng.randint(1, 3)):
                b.insert(rng.randint(0, len(b)), rng.randint(0x80, 0xff))
            out.append(bytes(b))
        else:
            out.append(s)
    strs = [t for t in out if isinstance(t, str)]
    out += ["\n".join(strs[:500]), " ".join(strs[500:1000]), "".join(strs[1000:1500])]
    return out


def shared_texts():
    texts, sources = [], []
    wiki = os.path.join(SHARED, "wikitext2-test.raw")
    if os.path.exists(wiki):
        with open(wiki, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f if l.strip("\n")]
        texts += lines
        with open(wiki, encoding="utf-8") as f:
            texts.append(f.read())  # and the whole file as one text (newlines -> <0x0A>)
        sources.append(f"{len(lines)} WikiText-2 lines + the whole file as one text")
    alpaca = os.path.join(SHARED, "alpaca_en_demo.json")
    if os.path.exists(alpaca):
        with open(alpaca, encoding="utf-8") as f:
            recs = json.load(f)
        fields = [r[k] for r in recs for k in ("instruction", "input", "output") if r.get(k)]
        texts += fields
        sources.append(f"{len(fields)} Alpaca fields")
    return texts, sources


def write_records(path, texts):
    with open(path, "wb") as f:
        for t in texts:
            b = as_bytes(t)
            f.write(struct.pack("<I", len(b)))
            f.write(b)


def read_encode_output(path, n):
    data = open(path, "rb").read()
    pos, out = 0, []

    def ids():
        nonlocal pos
        (k,) = struct.unpack_from("<I", data, pos)
        pos += 4
        v = list(struct.unpack_from(f"<{k}i", data, pos))
        pos += 4 * k
        return v

    for _ in range(n):
        a = ids()
        (k,) = struct.unpack_from("<I", data, pos)
        pos += 4
        text = data[pos:pos + k]
        pos += k
        out.append((a, text, ids()))
    assert pos == len(data), "trailing bytes in tool output"
    return out


def compare_model(name, model_path, texts, tmp):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    inp, outp = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
    write_records(inp, texts)
    run_tool("encode", model_path, inp, outp)
    ours = read_encode_output(outp, len(texts))
    ref_ids = [sp.encode(t) for t in texts]
    bos, eos = sp.bos_id(), sp.eos_id()
    n_ids = 0
    for t, ref, (ids, decoded, ids_be) in zip(texts, ref_ids, ours):
        n_ids += len(ref)
        check(ids == ref, f"{name}: encode {as_bytes(t)[:80]!r}: ours {ids[:20]} ref {ref[:20]}")
        ref_text = sp.decode(ref).encode("utf-8")
        check(decoded == ref_text, f"{name}: decode of {as_bytes(t)[:80]!r}: ours {decoded[:80]!r} ref {ref_text[:80]!r}")
        want_be = ([bos] if bos >= 0 else []) + ref + ([eos] if eos >= 0 else [])
        check(ids_be == want_be, f"{name}: encode+bos/eos {as_bytes(t)[:60]!r}")
    print(f"{name}: {len(texts)} texts ({n_ids} ids): encode, decode and BOS/EOS compared")

    # Random id sequences exercise decode's rules (dummy-prefix space, byte runs, controls).
    rng = random.Random(99)
    size = sp.get_piece_size()
    space_ids = [i for i in range(size) if sp.id_to_piece(i).startswith("\u2581")]
    byte_ids = [i for i in range(size) if sp.is_byte(i)]
    special = [i for i in range(size) if sp.is_control(i) or sp.is_unknown(i)]
    seqs = []
    for _ in range(3000):
        seq = []
        for _ in range(rng.randint(0, 12)):
            pool = rng.choice([p for p in (space_ids, byte_ids, special, range(size)) if p])
            seq.append(rng.choice(pool))
        seqs.append(seq)
    with open(inp, "wb") as f:
        for s in seqs:
            f.write(struct.pack(f"<I{len(s)}i", len(s), *s))
    run_tool("decode", model_path, inp, outp)
    data, pos = open(outp, "rb").read(), 0
    for s in seqs:
        (k,) = struct.unpack_from("<I", data, pos)
        pos += 4
        got = data[pos:pos + k]
        pos += k
        want = sp.decode(s).encode("utf-8")
        check(got == want, f"{name}: decode {s}: ours {got!r} ref {want!r}")
    print(f"{name}: {len(seqs)} random id sequences decoded")
    return sp, ref_ids


def check_same_model(name, written, reference_sp, texts, ref_ids):
    sp = spm.SentencePieceProcessor(model_file=written)
    check(sp.get_piece_size() == reference_sp.get_piece_size(), f"{name}: piece count")
    for i in range(reference_sp.get_piece_size()):
        same = (sp.id_to_piece(i) == reference_sp.id_to_piece(i)
                and sp.get_score(i) == reference_sp.get_score(i)
                and sp.is_control(i) == reference_sp.is_control(i)
                and sp.is_unknown(i) == reference_sp.is_unknown(i)
                and sp.is_byte(i) == reference_sp.is_byte(i)
                and sp.is_unused(i) == reference_sp.is_unused(i))
        check(same, f"{name}: piece {i} differs")
    for a, b in [(sp.bos_id(), reference_sp.bos_id()), (sp.eos_id(), reference_sp.eos_id()),
                 (sp.unk_id(), reference_sp.unk_id()), (sp.pad_id(), reference_sp.pad_id())]:
        check(a == b, f"{name}: special ids {a} vs {b}")
    bad = sum(sp.encode(t) != r for t, r in zip(texts, ref_ids))
    check(bad == 0, f"{name}: {bad} of {len(texts)} texts encode differently")
    print(f"{name}: loads in sentencepiece; {len(texts)} texts encode identically")


def write_vocab_file(out, tokens, scores, types, bos, eos, unk, pad, add_prefix):
    with open(out, "wb") as f:
        f.write(struct.pack("<I", len(tokens)))
        for t, s, ty in zip(tokens, scores, types):
            f.write(struct.pack("<I", len(t)) + t + struct.pack("<fi", s, ty))
        f.write(struct.pack("<iiiiB", bos, eos, unk, pad, add_prefix))


def sp_types(sp):
    def t(i):
        if sp.is_unknown(i): return 2
        if sp.is_control(i): return 3
        if sp.is_unused(i): return 5
        if sp.is_byte(i): return 6
        return 1
    return [t(i) for i in range(sp.get_piece_size())]


def gguf_vocab_file(path, out):
    import gguf
    r = gguf.GGUFReader(path)

    def arr(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    def u32(key, default):
        if key not in r.fields:
            return default
        v = int(r.fields[key].parts[-1][0])
        return -1 if v == 0xFFFFFFFF else v

    tokens = [bytes(p) for p in arr("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in arr("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in arr("tokenizer.ggml.token_type")]
    add_prefix = bool(r.fields["tokenizer.ggml.add_space_prefix"].parts[-1][0]) \
        if "tokenizer.ggml.add_space_prefix" in r.fields else True
    write_vocab_file(out, tokens, scores, types, u32("tokenizer.ggml.bos_token_id", 1),
                     u32("tokenizer.ggml.eos_token_id", 2),
                     u32("tokenizer.ggml.unknown_token_id", 0),
                     u32("tokenizer.ggml.padding_token_id", -1), add_prefix)
    return len(tokens)


def trained_models(tmp, texts, gen):
    """BPE models trained here by sentencepiece itself, covering options tok512 and LLaMA-2
    leave at one value: user-defined and control symbols, remove_extra_whitespaces, no byte
    fallback, whitespace as suffix, no dummy prefix; plus UNUSED/USER_DEFINED pieces set in a
    written vocabulary. Also checks that unigram and nmt_nfkc models are refused."""
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for t in texts:
            if isinstance(t, str):
                f.write(t.replace("\n", " ") + "\n")
    probe = ["<sep>", "a<sep>b", " New York ", "New York New York", "<ctl>", "x <ctl> y",
             "  many   spaces  here  ", "\t tab", "trailing\u2581", "\u2581lead"]
    configs = {
        "bpe+user-defined+squeeze": dict(user_defined_symbols=["<sep>", "New\u2581York"],
                                         control_symbols=["<ctl>"]),
        "bpe+bytes+suffix": dict(byte_fallback=True, treat_whitespace_as_suffix=True,
                                 remove_extra_whitespaces=False),
        "bpe+bytes+no-prefix+squeeze": dict(byte_fallback=True, add_dummy_prefix=False),
    }
    for name, extra in configs.items():
        prefix = os.path.join(tmp, name)
        spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=1000, hard_vocab_limit=False,
                                       model_type="bpe", normalization_rule_name="identity",
                                       minloglevel=2, **extra)
        compare_model(f"trained {name}", prefix + ".model", gen + probe, tmp)

    # UNUSED and USER_DEFINED pieces in a vocabulary written by l4q.
    sp = spm.SentencePieceProcessor(model_file=TOK512)
    n = sp.get_piece_size()
    types = sp_types(sp)
    rng = random.Random(7)
    multi = [i for i in range(n) if types[i] == 1 and len(sp.id_to_piece(i)) > 1]
    for i in rng.sample(multi, 40):
        types[i] = 5
    for i in rng.sample([i for i in multi if types[i] == 1], 5):
        types[i] = 4
    vocab, written = os.path.join(tmp, "unused.bin"), os.path.join(tmp, "unused.model")
    write_vocab_file(vocab, [sp.id_to_piece(i).encode() for i in range(n)],
                     [sp.get_score(i) for i in range(n)], types, 1, 2, 0, -1, True)
    run_tool("write-vocab", vocab, written)
    compare_model("tok512 with 40 UNUSED + 5 USER_DEFINED pieces", written, texts, tmp)

    for name, extra in {"unigram": dict(model_type="unigram"),
                        "nmt_nfkc": dict(model_type="bpe")}.items():
        prefix = os.path.join(tmp, "refused-" + name)
        spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=1000, hard_vocab_limit=False,
                                       minloglevel=2, **extra)
        r = subprocess.run([TOOL, "info", prefix + ".model"], capture_output=True, text=True)
        want = "UNIGRAM" if name == "unigram" else "precompiled_charsmap"
        check(r.returncode != 0 and want in r.stderr,
              f"{name} model: expected refusal mentioning {want}, got rc {r.returncode} {r.stderr!r}")
        print(f"{name} model refused: {r.stderr.strip()[:150]}")


def main():
    if not os.path.exists(TOOL):
        raise SystemExit(f"missing {TOOL}: build the target l4q_interop_tokenize")
    gen = generated_texts()
    extra, sources = shared_texts()
    texts = gen + extra
    if not extra:
        print("../shared/data absent: comparing generated texts only")
    print(f"texts: {len(gen)} generated" + "".join(", " + s for s in sources))

    models = [("tok512", TOK512)]
    if os.path.exists(LLAMA2):
        models.append(("llama2", LLAMA2))
    else:
        print("LLaMA-2 tokenizer absent: skipped")

    with tempfile.TemporaryDirectory() as tmp:
        refs = {}
        for name, path in models:
            refs[name] = (path,) + compare_model(name, path, texts, tmp)

        # GGUF vocabulary -> .model written by l4q.
        vocab = os.path.join(tmp, "vocab.bin")
        n = gguf_vocab_file(GGUF, vocab)
        written = os.path.join(tmp, "from_gguf.model")
        run_tool("write-vocab", vocab, written)
        _, sp512, ids512 = refs["tok512"]
        check_same_model(f"stories260K.gguf vocabulary ({n} pieces) written as .model", written,
                         sp512, texts, ids512)
        # The written file also runs in l4q itself, identically.
        compare_model("tok512 from GGUF (l4q)", written, gen, tmp)

        trained_models(tmp, texts, gen)

        # Read -> write round trip of each model.
        for name, (path, sp, ids) in refs.items():
            out = os.path.join(tmp, f"{name}.rewritten.model")
            run_tool("rewrite", path, out)
            check_same_model(f"{name} read and written back", out, sp, texts, ids)

    if failures:
        print(f"FAILED: {len(failures)} mismatches")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
