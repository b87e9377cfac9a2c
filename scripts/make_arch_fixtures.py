"""Reference logits of llama.cpp on small random-weight models of each architecture family kiln
runs (tests/py/families.py, one row per family), for tests/py/test_families.py.

Run:  .venv/bin/python scripts/make_arch_fixtures.py [FAMILY...]
      (llama.cpp runs in .cache/llamacpp-venv, made by scripts/make_llamacpp_fixtures.py: the
      llama-cpp-python==0.3.36 build for plain AVX2, so the numbers are the same on any x86-64)

For each family: the GGUF is written with gguf-py exactly as llama.cpp's converter lays it out
(tests/py/families.py, deterministic from the seed: the test regenerates it and checks its
sha256), then llama.cpp (low-level API: one llama_decode of the prompt, then single-token
llama_decode steps) continues the prompt greedily for 32 tokens and the fixture keeps its full
logits at each of the 32 positions (the vocabulary is 512, so no top-k cut is needed). Writes
  tests/data/families_llamacpp.json   per family: prompt, greedy ids, GGUF sha256, provenance
  tests/data/families_llamacpp.npz    FAMILY -> float32 [32, 512]
Families not named keep the entries they have (another family's row can be added alone).

llama.cpp context: n_ctx 512, 2 threads, f32 KV cache, flash attention off. F32 weights and an
f32 cache, so neither engine rounds anything below float: what is left is summation order, and
a kiln that differs from llama.cpp by more than float noise computes another function.
"""
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "py"))
sys.path.insert(0, str(ROOT / "scripts"))

PIN = "llama-cpp-python==0.3.36"
N_CTX = 512


def run_llamacpp(gguf_path, out, ids, n_gen):
    """Inside the llama.cpp venv: greedy continuation and the logits at each step."""
    import llama_cpp as L
    import numpy as np
    L.llama_backend_init()
    model = L.llama_model_load_from_file(str(gguf_path).encode(), L.llama_model_default_params())
    assert model, f"llama.cpp could not load {gguf_path}"
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    cp = L.llama_context_default_params()
    cp.n_ctx = N_CTX
    cp.n_batch = N_CTX
    cp.n_threads = 2
    cp.n_threads_batch = 2
    # f32 KV cache: with f16 (the default) llama.cpp also rounds Q and the attention weights to
    # f16 in its products, noise 100x larger than what is left here (float summation order)
    cp.type_k = 0
    cp.type_v = 0
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = L.llama_init_from_model(model, cp)
    buf = (L.llama_token * len(ids))(*ids)
    assert L.llama_decode(ctx, L.llama_batch_get_one(buf, len(ids))) == 0
    logits, greedy = [], []
    for step in range(n_gen):
        lg = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1),
                                   shape=(n_vocab,)).astype(np.float32).copy()
        logits.append(lg)
        tok = int(np.argmax(lg))
        greedy.append(tok)
        if step + 1 < n_gen:
            one = (L.llama_token * 1)(tok)
            assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
    info = L.llama_print_system_info()
    np.save(out, np.stack(logits))
    Path(str(out) + ".json").write_text(json.dumps({
        "greedy": greedy,
        "system_info": info.decode() if isinstance(info, bytes) else str(info)}))
    L.llama_free(ctx)
    L.llama_model_free(model)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--inside-llamacpp":
        gguf_path, out, n_gen = sys.argv[2], sys.argv[3], int(sys.argv[4])
        run_llamacpp(gguf_path, out, [int(x) for x in sys.argv[5:]], n_gen)
        return
    import numpy as np
    import families as F
    from make_llamacpp_fixtures import CMAKE_ARGS, cpu_name, ensure_venv

    shared = Path(os.environ.get("KILN_SHARED", ROOT.parent / "shared"))
    names = sys.argv[1:] or list(F.FAMILIES)
    for n in names:
        if n not in F.FAMILIES:
            sys.exit(f"make_arch_fixtures: unknown family {n} (known: {', '.join(F.FAMILIES)})")
    py = ensure_venv()
    data = ROOT / "tests" / "data"
    jpath, npath = data / "families_llamacpp.json", data / "families_llamacpp.npz"
    meta = json.loads(jpath.read_text()) if jpath.exists() else {"families": {}}
    arrays = dict(np.load(npath)) if npath.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in names:
            g = F.write_gguf(fam, Path(tmp) / f"{fam}.gguf", shared)
            ids = F.prompt_ids(fam)
            out = Path(tmp) / f"{fam}.npy"
            subprocess.check_call([str(py), __file__, "--inside-llamacpp", str(g), str(out),
                                   str(F.N_GEN), *map(str, ids)])
            side = json.loads(Path(str(out) + ".json").read_text())
            arrays[fam] = np.load(out)
            meta["families"][fam] = {
                "arch": F.FAMILIES[fam]["arch"],
                "hf_class": F.config(fam)["architectures"][0],
                "seed": 0,
                "gguf_sha256": F.sha256(g),
                "prompt": ids,
                "greedy": side["greedy"],
                "llama_cpp_system_info": side["system_info"],
            }
            print(f"{fam}: {len(side['greedy'])} positions, greedy {side['greedy'][:8]}...")
    meta["provenance"] = {
        "generator": "scripts/make_arch_fixtures.py",
        "command": ".venv/bin/python scripts/make_arch_fixtures.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "llama_cpp_python": PIN,
        "llama_cpp_build": f"the llama.cpp vendored in the {PIN} sdist, CMAKE_ARGS={CMAKE_ARGS}",
        "cpu": cpu_name(),
        "models": "tests/py/families.py, written with gguf-py "
                  + importlib.metadata.version("gguf"),
        "method": f"F32 GGUF as llama.cpp's converter writes it; one llama_decode of the prompt, "
                  f"then {F.N_GEN} greedy single-token llama_decode steps; full logits at each "
                  f"of the {F.N_GEN} positions; n_ctx {N_CTX}, f32 KV cache, flash attention "
                  "off, 2 threads",
    }
    jpath.write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(npath, **arrays)
    print(f"wrote {jpath.relative_to(ROOT)} and {npath.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
