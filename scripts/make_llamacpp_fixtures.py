"""Reference next-token logits and greedy continuations of SmolLM2-135M-Instruct Q4_1 from
llama.cpp, through its Python bindings (llama-cpp-python, pinned below), for kiln's engine tests.

Run:  python3 scripts/make_llamacpp_fixtures.py        (creates .cache/llamacpp-venv on first use)
Writes tests/data/smollm2_llamacpp.json (prompts, llama.cpp's token ids, top-10, 32 greedy ids)
and tests/data/smollm2_llamacpp_logits.npy (float32 [n_prompts, n_vocab], the logits after the
last prompt token). Everything is driven through llama.cpp's low-level API: tokenize with
parse_special, one llama_decode of the whole prompt, then greedy single-token decodes.
"""
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = "llama-cpp-python==0.3.36"
VENV = ROOT / ".cache" / "llamacpp-venv"

PROMPTS = [
    # ChatML as SmolLM2's template renders it (the system line is the template's default)
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nList the planets.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. The dog",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived",
]


def ensure_venv():
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    try:
        subprocess.check_call([str(py), "-c", "import llama_cpp, numpy"], stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        env = dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON "
                   "-DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF")
        subprocess.check_call([str(py), "-m", "pip", "install", "--no-cache-dir", PIN,
                               "numpy==2.3.5"], env=env)
    return py


def main():
    if os.environ.get("KILN_IN_LLAMACPP_VENV") != "1":
        py = ensure_venv()
        os.execve(str(py), [str(py), __file__, *sys.argv[1:]],
                  dict(os.environ, KILN_IN_LLAMACPP_VENV="1"))
    import ctypes

    import llama_cpp as L
    import numpy as np

    gguf = subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh")], text=True).strip()
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(gguf.encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    out, all_logits = [], []
    for text in PROMPTS:
        cp = L.llama_context_default_params()
        cp.n_ctx = 512
        cp.n_batch = 512
        cp.n_threads = 2
        cp.n_threads_batch = 2
        # f32 KV cache, no flash attention: keep llama.cpp's own rounding to what its matmuls
        # do (8-bit activations against the stored int4 weights), the part kiln mirrors
        cp.type_k = 0
        cp.type_v = 0
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = L.llama_init_from_model(model, cp)
        buf = (L.llama_token * 512)()
        b = text.encode()
        # add_special=False: the ChatML text carries its own markers (as HF apply_chat_template)
        n = L.llama_tokenize(vocab, b, len(b), buf, 512, False, True)
        ids = [buf[i] for i in range(n)]
        batch = L.llama_batch_get_one(buf, n)
        assert L.llama_decode(ctx, batch) == 0
        ptr = L.llama_get_logits_ith(ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32).copy()
        all_logits.append(logits)
        top10 = [int(i) for i in np.argsort(-logits, kind="stable")[:10]]
        greedy, gaps, pos = [], [], n
        tok = int(np.argmax(logits))
        lg = logits
        for _ in range(32):
            top2 = np.sort(lg)[-2:]
            gaps.append(round(float(top2[1] - top2[0]), 5))  # how close llama.cpp's own call was
            greedy.append(tok)
            one = (L.llama_token * 1)(tok)
            assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
            pos += 1
            lg = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(lg))
        L.llama_free(ctx)
        out.append({"text": text, "ids": ids, "top10": top10, "greedy32": greedy,
                    "gap32": gaps})
    data = ROOT / "tests" / "data"
    np.save(data / "smollm2_llamacpp_logits.npy", np.stack(all_logits))
    meta = {
        "provenance": {
            "generator": "scripts/make_llamacpp_fixtures.py",
            "llama_cpp_python": PIN,
            "model": Path(gguf).name,
            "model_sha256": hashlib.sha256(Path(gguf).read_bytes()).hexdigest(),
            "machine": platform.machine(), "python": platform.python_version(),
            "method": "llama_tokenize(add_special=False, parse_special=True); one llama_decode "
                      "of the prompt; logits of its last token; 32 greedy llama_decode steps; "
                      "n_ctx 512, f32 KV cache, flash attention off, 2 threads",
        },
        "n_vocab": n_vocab,
        "prompts": out,
    }
    (data / "smollm2_llamacpp.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(out)} prompts to tests/data/smollm2_llamacpp.json")


if __name__ == "__main__":
    main()
