"""kiln vs llama.cpp on the same GGUF, same machine, same session.

llama.cpp runs through llama-cpp-python (the pin of scripts/make_llamacpp_fixtures.py, built here
for this CPU (-march=native; AMX off: its tile code faults in this VM), in
.cache/llamacpp-bench-venv, created on first use) with its low-level API: pp = one llama_decode of N
random tokens into an empty context, tg = N single-token llama_decode calls, timed around the
calls only. kiln runs `kiln bench --json` with the same N and threads. Each figure is the mean of
REPS runs after a warm-up. Prints a markdown table with the kiln / llama.cpp ratio, then kiln's
kv vs stateless modes for a 128-token answer.

usage: python3 bench/compare.py [--model GGUF] [--threads 1,2] [--reps 3] [--tests pp128,tg128]
                               [--llamacpp-venv DIR]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "llamacpp-bench-venv"
sys.path.insert(0, str(ROOT / "scripts"))


def llamacpp_child(model, threads, reps, tests):
    import llama_cpp as L
    import numpy as np
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    m = L.llama_model_load_from_file(model.encode(), mp)
    vocab = L.llama_model_get_vocab(m)
    nv = L.llama_vocab_n_tokens(vocab)
    rng = np.random.default_rng(0)
    out = []
    for kind, n in tests:
        cp = L.llama_context_default_params()
        cp.n_ctx = 1024
        cp.n_batch = 512
        cp.n_ubatch = 512
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.no_perf = True
        ctx = L.llama_init_from_model(m, cp)
        ids = (L.llama_token * n)(*[int(x) for x in rng.integers(0, nv, n)])
        times = []
        for r in range(reps + 1):
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            t0 = time.perf_counter()
            if kind == "pp":
                assert L.llama_decode(ctx, L.llama_batch_get_one(ids, n)) == 0
            else:
                one = (L.llama_token * 1)()
                for i in range(n):
                    one[0] = ids[i]
                    assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
            L.llama_synchronize(ctx)
            if r:  # the first run warms up
                times.append(time.perf_counter() - t0)
        L.llama_free(ctx)
        ts = [n / t for t in times]
        out.append({"test": f"{kind}{n}", "n_threads": threads, "avg_ts": float(np.mean(ts)),
                    "stddev_ts": float(np.std(ts, ddof=1)) if len(ts) > 1 else 0.0})
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--tests", default="pp128,pp512,tg128")
    ap.add_argument("--llamacpp-venv", help="a venv holding another llama-cpp-python build "
                    "(e.g. one built with GGML_NATIVE=ON, AMX included)")
    a = ap.parse_args()
    tests = [(t[:2], int(t[2:])) for t in a.tests.split(",")]
    if a.child:
        llamacpp_child(a.model, int(a.threads), a.reps, tests)
        return
    import make_llamacpp_fixtures as fx
    py = (Path(a.llamacpp_venv) if a.llamacpp_venv else VENV) / "bin" / "python"
    if not py.exists() and not a.llamacpp_venv:
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        # -march=native minus AMX, whose tile code faults in this VM
        flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        env = dict(os.environ, CMAKE_ARGS=f"-DGGML_NATIVE=ON -DLLAMA_CURL=OFF "
                   f"-DCMAKE_C_FLAGS='{flags}' -DCMAKE_CXX_FLAGS='{flags}'",
                   CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", fx.PIN,
                               "numpy==2.3.5"], env=env)
    model = a.model or subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh")],
                                               text=True).strip()
    kiln = ROOT / "build" / "kiln"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        off = Path(tmp) / "off"
        subprocess.check_call([str(kiln), "bake", model, "-o", str(off), "--quiet", "--window",
                               "1024", "--chunk", "512"])
        for th in a.threads.split(","):
            env = dict(os.environ, PYTHONPATH="")
            ref = json.loads(subprocess.check_output(
                [str(py), __file__, "--child", "--model", model, "--threads", th, "--reps",
                 str(a.reps), "--tests", a.tests], env=env, stderr=subprocess.DEVNULL))
            pp = ",".join(str(n) for k, n in tests if k == "pp") or "0"
            tg = ",".join(str(n) for k, n in tests if k == "tg") or "0"
            mine = json.loads(subprocess.check_output(
                [str(kiln), "bench", str(off), "-p", pp, "-n", tg, "-t", th, "-r", str(a.reps),
                 "--json", "--device", "cpu"]))
            for r in ref:
                n = int(r["test"][2:])
                k = next(x for x in mine if (x["n_prompt"] if r["test"].startswith("pp")
                                             else x["n_gen"]) == n and
                         (x["n_gen"] == 0) == r["test"].startswith("pp"))
                rows.append((r["test"], int(th), k["avg_ts"], k["stddev_ts"], r["avg_ts"],
                             r["stddev_ts"]))
        # kv vs stateless over a 128-token answer (decode steps only, window 1024)
        modes = json.loads(subprocess.check_output(
            [str(kiln), "bench", str(off), "-p", "0", "-n", "128", "-t", a.threads.split(",")[-1],
             "-r", "1", "--mode", "kv,stateless", "--json", "--device", "cpu"]))
    print(f"# kiln vs llama.cpp — {Path(model).name}, {platform.node()} "
          f"({os.cpu_count()} cpus), {time.strftime('%Y-%m-%d')}")
    print("| test | threads | kiln t/s | llama.cpp t/s | kiln / llama.cpp |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for t, th, k, ks, r, rs in rows:
        print(f"| {t} | {th} | {k:.1f} ± {ks:.1f} | {r:.1f} ± {rs:.1f} | {k / r:.2f} |")
    kv = next(m["avg_ts"] for m in modes if m["mode"] == "kv")
    st = next(m["avg_ts"] for m in modes if m["mode"] == "stateless")
    print(f"\nkv vs stateless, 128-token answer, {a.threads.split(',')[-1]} threads: "
          f"kv {kv:.1f} t/s, stateless {st:.1f} t/s, kv is {kv / st:.1f}x faster")


if __name__ == "__main__":
    main()
