#!/usr/bin/env python3
"""Encode throughput: kiln vs Hugging Face `tokenizers`, single-threaded, same text, same run.

    .venv/bin/python bench/tokenizer_bench.py [--gguf PATH] [--mb 8] [--kiln build/kiln]

Builds a multi-MB text from the committed corpus and llama.cpp's vocab test inputs (several
scripts, code, numbers, whitespace runs), tokenizes it with SmolLM2-135M-Instruct's tokenizer
in both, checks the ids are equal, and prints MB/s and the ratio kiln / HF. kiln's time is the
`kiln tokenize --file` wall time minus that of a one-byte file (load and process start-up), best
of --repeat runs; HF's is Tokenizer.encode on the same string, best of --repeat, with
RAYON_NUM_THREADS=1.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "py"))
from smollm2_hf import hf_tokenizer  # noqa: E402  (the tests' oracle)

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = pathlib.Path(__file__).resolve().parents[1]


def build_text(mb):
    parts = json.loads((ROOT / "tests/data/tokenizer_corpus.json").read_text(encoding="utf-8"))
    vec = ROOT.parent / "shared" / "tokenizer-vectors"
    for f in sorted(vec.glob("*.inp")):
        parts += f.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    for f in sorted((ROOT / "src").rglob("*.c"))[:40]:
        parts.append(f.read_text(encoding="utf-8", errors="replace"))
    parts.append((ROOT.parent / "shared" / "DESIGN.md").read_text(encoding="utf-8"))
    block = "\n".join(p for p in parts if "\x00" not in p)
    n = max(1, int(mb * 1024 * 1024 / len(block.encode("utf-8"))) + 1)
    text = (block + "\n") * n
    return text[: int(mb * 1024 * 1024)]


def kiln_time(kiln, gguf_path, path, repeat):
    best, out = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run([kiln, "tokenize", str(gguf_path), "--file", str(path), "--special"],
                           capture_output=True, check=True)
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
        out = r.stdout
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=str(ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--kiln", default=str(pathlib.Path(os.environ.get("KILN_BUILD", ROOT / "build")) / "kiln"))
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    text = build_text(a.mb)
    data = text.encode("utf-8")
    mb = len(data) / (1024 * 1024)
    tok = hf_tokenizer(a.gguf)
    hf_best, hf_ids = None, None
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        hf_ids = tok.encode(text, add_special_tokens=False).ids
        dt = time.perf_counter() - t0
        hf_best = dt if hf_best is None or dt < hf_best else hf_best
    with tempfile.TemporaryDirectory() as d:
        big = pathlib.Path(d) / "big.txt"
        big.write_bytes(data)
        tiny = pathlib.Path(d) / "tiny.txt"
        tiny.write_bytes(b"x")
        t_tiny, _ = kiln_time(a.kiln, a.gguf, tiny, a.repeat)
        t_big, out = kiln_time(a.kiln, a.gguf, big, a.repeat)
    kiln_ids = [int(x) for x in out.split()]
    same = kiln_ids == hf_ids
    k = max(t_big - t_tiny, 1e-9)
    print(f"text: {mb:.2f} MB, {len(hf_ids)} tokens, ids equal: {same}")
    print(f"HF tokenizers {getattr(sys.modules.get('tokenizers'), '__version__', '?')}: "
          f"{mb / hf_best:.2f} MB/s ({hf_best:.3f} s)")
    print(f"kiln:          {mb / k:.2f} MB/s ({k:.3f} s encode; {t_tiny:.3f} s start-up and load)")
    print(f"ratio kiln/HF: {hf_best / k:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
