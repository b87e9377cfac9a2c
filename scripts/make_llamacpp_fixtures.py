"""Reference logits of SmolLM2-135M-Instruct Q4_1 from llama.cpp, through its Python bindings
(llama-cpp-python, pinned below), for kiln's teacher-forced engine test
(tests/py/test_llamacpp_reference.py).

Run:  python3 scripts/make_llamacpp_fixtures.py        (creates .cache/llamacpp-venv on first use)

For each prompt, llama.cpp (low-level API: llama_tokenize with parse_special, one llama_decode of
the whole prompt, then single-token llama_decode steps) generates 32 tokens greedily. At each of
those 32 positions the fixture keeps llama.cpp's logits as its top-K ids and values (the logits
that predicted token j of the continuation, so a test can feed kiln the same sequence and compare
position by position) and the gap between its top two; the full logits of the first position
are kept too. Writes
  tests/data/smollm2_llamacpp.json         prompts, ids, 32 greedy ids, top-2 gaps, provenance
  tests/data/smollm2_llamacpp_topk.npz     ids int32 / vals float32 [n_prompts, 32, TOPK]
  tests/data/smollm2_llamacpp_logits.npy   float32 [n_prompts, n_vocab], the first position

llama.cpp is built for plain AVX2 + FMA + F16C (no AVX-512, no native tuning), the instruction
set every x86-64 CPU kiln supports has, so the fixtures are the same bits whichever CPU makes
them (ggml's matmuls split work by rows, never within a dot product, so the thread count does
not change them either).
"""
import datetime
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
CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
              "-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF "
              "-DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF")
N_GEN = 32
TOPK = 128

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
        env = dict(os.environ, CMAKE_ARGS=CMAKE_ARGS)
        subprocess.check_call([str(py), "-m", "pip", "install", "--no-cache-dir", PIN,
                               "numpy==2.3.5"], env=env)
    return py


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    if os.environ.get("KILN_IN_LLAMACPP_VENV") != "1":
        py = ensure_venv()
        os.execve(str(py), [str(py), __file__, *sys.argv[1:]],
                  dict(os.environ, KILN_IN_LLAMACPP_VENV="1"))
    import llama_cpp as L
    import numpy as np

    gguf = subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh")], text=True).strip()
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(gguf.encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    out, first_logits, top_ids, top_vals = [], [], [], []
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
        assert L.llama_decode(ctx, L.llama_batch_get_one(buf, n)) == 0
        greedy, gaps, tid, tval = [], [], [], []
        for step in range(N_GEN):
            lg = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1),
                                       shape=(n_vocab,)).astype(np.float32).copy()
            if step == 0:
                first_logits.append(lg)
            order = np.argsort(-lg, kind="stable")[:TOPK]
            tid.append(order.astype(np.int32))
            tval.append(lg[order])
            gaps.append(round(float(lg[order[0]] - lg[order[1]]), 5))
            tok = int(order[0])
            greedy.append(tok)
            if step + 1 < N_GEN:
                one = (L.llama_token * 1)(tok)
                assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
        L.llama_free(ctx)
        top_ids.append(np.stack(tid))
        top_vals.append(np.stack(tval))
        out.append({"text": text, "ids": ids, "greedy32": greedy, "gap32": gaps,
                    "top10": [int(i) for i in tid[0][:10]]})
    data = ROOT / "tests" / "data"
    np.save(data / "smollm2_llamacpp_logits.npy", np.stack(first_logits))
    np.savez_compressed(data / "smollm2_llamacpp_topk.npz", ids=np.stack(top_ids),
                        vals=np.stack(top_vals))
    info = L.llama_print_system_info()
    meta = {
        "provenance": {
            "generator": "scripts/make_llamacpp_fixtures.py",
            "command": "python3 scripts/make_llamacpp_fixtures.py",
            "date": datetime.date.today().isoformat(),
            "llama_cpp_python": PIN,
            "llama_cpp_build": f"the llama.cpp vendored in the {PIN} sdist, CMAKE_ARGS={CMAKE_ARGS}",
            "llama_cpp_system_info": info.decode() if isinstance(info, bytes) else str(info),
            "cpu": cpu_name(),
            "model": Path(gguf).name,
            "model_sha256": hashlib.sha256(Path(gguf).read_bytes()).hexdigest(),
            "machine": platform.machine(), "python": platform.python_version(),
            "method": "llama_tokenize(add_special=False, parse_special=True); one llama_decode "
                      f"of the prompt; {N_GEN} greedy llama_decode steps; at each of the {N_GEN} "
                      f"positions the top-{TOPK} logits (ids, values) and the top-2 gap; "
                      "n_ctx 512, f32 KV cache, flash attention off, 2 threads",
        },
        "n_vocab": n_vocab,
        "top_k": TOPK,
        "prompts": out,
    }
    (data / "smollm2_llamacpp.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(out)} prompts x {N_GEN} positions to tests/data/smollm2_llamacpp*.")


if __name__ == "__main__":
    main()
