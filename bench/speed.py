"""kiln vs llama.cpp's own llama-bench: same GGUF files, same threads, same session, interleaved.

    python3 bench/speed.py                  # the full table (an hour or more on 2 cores)
    python3 bench/speed.py --quick          # SmolLM2 + TinyLlama Q4_0, 1 round
    python3 bench/speed.py --models tinyllama-q4_0 --tests tg64,pp512 --rounds 3
    python3 bench/speed.py --bake           # + bake of a 7B-shape HF folder: time, peak RSS
    python3 bench/speed.py --models smollm2 --tests tg64@d128x1,tg64@d128x4   # batched decode
(make, make pyenv first: it runs under .venv, for gguf-py; `--help` lists every option.)

What it does, every step cached under .cache/ (git-ignored) and redone only when missing:
  1. llama.cpp: the source vendored in the pinned llama-cpp-python sdist (the pin of
     scripts/make_llamacpp_fixtures.py), built with CMake, GGML_NATIVE=ON, into
     .cache/llamacpp-build/: llama-bench, llama-batched-bench, llama-quantize, llama-server. On
     a CPU with AMX the build leaves AMX out (its prefill faulted in this VM) unless --amx;
     with --amx a smoke run checks the AMX build and falls back, saying so.
  2. Models (scripts/make_bench_models.py): random-weight GGUFs of the TinyLlama-1.1B and
     Mistral-7B shapes, written as F16 by gguf-py and quantized by the freshly built
     llama-quantize (Q4_0 pure; Q4_K_M, llama.cpp's own mix), into .cache/bench-models/; plus the
     real SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M Q4_K_M (scripts/fetch_models.sh).
  3. For every row, ROUNDS times: llama-bench -o json, then `kiln bench --json --floor`, on the
     same file with the same test and threads (A B A B ...: drift hits both). kiln opens the
     GGUF directly with the contract W=--window, C=--chunk (llama-bench's n_ubatch is 512).
     The ratio is kiln / llama.cpp over all samples of the run. A test tgN@dDxP is batched
     decode instead: llama-batched-bench -npp D -ntg N -npl P against kiln bench -np P -d D.
  4. `kiln bench --floor` measures read bandwidth in the same process and reports the bytes of
     weights a decode step reads (the file's layer and output matrices); the floor is
     bandwidth / bytes, for both engines.
Prints the markdown table (machine, date, command) and writes it to --out.
"""
import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
SRC_DIR = CACHE / "llamacpp-src"
BUILD_ROOT = CACHE / "llamacpp-build"
MODELS = CACHE / "bench-models"
KILN = ROOT / "build" / "kiln"
sys.path.insert(0, str(ROOT / "scripts"))

PIN = "llama-cpp-python==0.3.36"   # the same pin as scripts/make_llamacpp_fixtures.py
TARGETS = ("llama-bench", "llama-batched-bench", "llama-quantize", "llama-server")
AMX_OFF = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- 1. llama.cpp from the pinned sdist ----

def llamacpp_source():
    """The vendored llama.cpp tree of the pinned sdist (downloaded and unpacked once)."""
    name, ver = PIN.split("==")
    tree = SRC_DIR / f"{name.replace('-', '_')}-{ver}" / "vendor" / "llama.cpp"
    if (tree / "CMakeLists.txt").exists():
        return tree
    SRC_DIR.mkdir(parents=True, exist_ok=True)
    sdist = SRC_DIR / f"{name.replace('-', '_')}-{ver}.tar.gz"
    if not sdist.exists():
        log(f"speed: downloading the {PIN} sdist (llama.cpp's source is vendored in it)")
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                               "--no-binary", ":all:", "--disable-pip-version-check",
                               "-d", str(SRC_DIR), PIN])
    with tarfile.open(sdist) as t:
        t.extractall(SRC_DIR, filter="data")
    if not (tree / "CMakeLists.txt").exists():
        sys.exit(f"speed: {sdist}: no vendor/llama.cpp inside")
    return tree


# An AVX2-only CPU (AMD Zen 3 class: AVX2, FMA, F16C, BMI2; no AVX-512, no VNNI), as both
# engines see it: llama.cpp built for exactly that, kiln on its avx2 kernel table.
AVX2_ONLY = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
             "-DGGML_F16C=ON", "-DGGML_BMI2=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF"]


def build_llamacpp(amx, avx2_only=False):
    """Builds the targets once per variant; returns (bin dir, variant description)."""
    src = llamacpp_source()
    variant = "avx2-only" if avx2_only else "native" if amx else "native-noamx"
    build = BUILD_ROOT / variant
    args = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DGGML_CCACHE=OFF"]
    args += AVX2_ONLY if avx2_only else ["-DGGML_NATIVE=ON"]
    if not avx2_only and not amx:
        # -march=native turns AMX on where the CPU has it; leave just that out
        args += [f"-DCMAKE_C_FLAGS={AMX_OFF}", f"-DCMAKE_CXX_FLAGS={AMX_OFF}"]
    stamp = build / "kiln-build-args.json"
    bins = build / "bin"
    # the source named relative to .cache: every worktree shares one .cache (a symlink), and a
    # build from another worktree's path is the same build
    rel = str(src.relative_to(SRC_DIR))
    want = json.dumps({"src": rel, "args": args})

    def built():
        try:
            old = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return False
        return (old.get("args") == args and str(old.get("src", "")).endswith(rel) and
                all((bins / t).exists() for t in TARGETS))
    if not built():
        log(f"speed: building llama.cpp ({variant}) from {src} -> {build} (once; -j2)")
        build.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        subprocess.check_call(["cmake", "-S", str(src), "-B", str(build), *args],
                              stdout=subprocess.DEVNULL)
        subprocess.check_call(["cmake", "--build", str(build), "-j2", "--target", *TARGETS],
                              stdout=subprocess.DEVNULL)
        stamp.write_text(want)
    if avx2_only:
        return bins, "AVX2-only (" + " ".join(a[2:] for a in AVX2_ONLY) + ")"
    desc = "GGML_NATIVE=ON" + ("" if amx else f" minus AMX ({AMX_OFF})")
    return bins, desc


def llamacpp(amx_wanted, smoke_model):
    """The llama.cpp build to compare against. AMX only when asked for and when a smoke
    prefill survives it (in this VM the AMX build's prefill faulted)."""
    has_amx = "amx_int8" in cpu_flags()
    if amx_wanted and has_amx:
        bins, desc = build_llamacpp(True)
        r = subprocess.run([str(bins / "llama-bench"), "-m", str(smoke_model), "-p", "64",
                            "-n", "0", "-r", "1", "-t", "1", "-o", "json"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return bins, desc + " (AMX included)"
        log(f"speed: the AMX build of llama.cpp failed a pp64 smoke run (exit {r.returncode}"
            f"{', signal ' + str(-r.returncode) if r.returncode < 0 else ''}); "
            "falling back to the build without AMX")
        bins, desc = build_llamacpp(False)
        return bins, desc + f"; the AMX build crashed in pp64 (exit {r.returncode})"
    bins, desc = build_llamacpp(not has_amx)
    if has_amx:
        desc += "; AMX left out: its prefill faulted in this VM (--amx tries it)"
    return bins, desc


# ---- 2. the models ----

# name -> what the table calls it, where the file comes from, its tests and threads. Tests are
# llama-bench's: ppN (prefill N tokens), tgN (N decode steps), @dD after D tokens of context.
ROWS = {
    "smollm2": dict(title="SmolLM2-135M-Instruct Q4_1 (real)", shape=None, quant="q4_1",
                    tests=["pp512", "tg128", "tg64@d100", "tg64@d1000"], threads=[1, 2]),
    "gemma3": dict(title="Gemma 3 270M Q4_K_M (real, PyPI parts)", shape=None, fetch="gemma3",
                   quant="q4_k_m", tests=["pp512", "tg128", "tg64@d100", "tg64@d1000"],
                   threads=[1, 2]),
    "tinyllama-q4_0": dict(title="TinyLlama-1.1B shape Q4_0 (random)", shape="tinyllama",
                           quant="q4_0", tests=["pp512", "tg64", "tg32@d100", "tg32@d1000"],
                           threads=[1, 2]),
    "tinyllama-q4_k_m": dict(title="TinyLlama-1.1B shape Q4_K_M (random)", shape="tinyllama",
                             quant="q4_k_m", tests=["pp128", "tg32"], threads=[1, 2]),
    "mistral-q4_0": dict(title="Mistral-7B shape Q4_0 (random)", shape="mistral", quant="q4_0",
                         tests=["pp128", "tg32"], threads=[1, 2]),
    "mistral-q4_k_m": dict(title="Mistral-7B shape Q4_K_M (random)", shape="mistral",
                           quant="q4_k_m", tests=["pp128", "tg32"], threads=[2]),
}
QUICK = ["smollm2", "tinyllama-q4_0"]


def parse_test(t):
    """ppN, tgN, tgN@dD; tgN@dDxP: P sequences decoding together after D tokens of context
    each (kiln bench -np P against llama-batched-bench -npl P, S_TG)."""
    m = re.fullmatch(r"(pp|tg)(\d+)(?:@d(\d+))?(?:x(\d+))?", t)
    if not m or int(m.group(2)) < 1 or (m.group(4) and (m.group(1) != "tg" or
                                                         not m.group(3) or
                                                         not 1 <= int(m.group(4)) <= 8)):
        raise ValueError(f"test {t!r}: use ppN, tgN, tgN@dD or tgN@dDxP (P 1-8, D >= 1)")
    return m.group(1), int(m.group(2)), int(m.group(3) or 0), int(m.group(4) or 0)


def model_file(name, smollm2, quantize_bin):
    row = ROWS[name]
    if row.get("fetch"):
        return Path(subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh"),
                                             row["fetch"]], text=True).strip())
    if row["shape"] is None:
        return Path(smollm2)
    import make_bench_models as mbm
    path = mbm.ensure_gguf(row["shape"], row["quant"], MODELS, quantize_bin, log=log)
    # the F16 intermediate is needed only until both quantizations of the shape exist
    if all((MODELS / f"{row['shape']}-{q}.gguf").exists() for q in ("q4_0", "q4_k_m")):
        mbm.drop_f16(row["shape"], MODELS)
    return path


# ---- 3. running both engines ----

def mem_available():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 << 30


def run_json(cmd, limit_as=None, timeout=3600, lines=False):
    """Runs cmd, returns (parsed JSON stdout or None, error line); lines: stdout is JSON lines
    (llama-batched-bench), returned as a list."""
    def cap():
        if limit_as:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=cap if limit_as else None)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if r.returncode != 0:
        why = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
        err = [x for x in r.stderr.strip().splitlines() if x.strip()]
        return None, f"{why}: {err[-1] if err else ''}".strip()
    try:
        if lines:
            out = [json.loads(x) for x in r.stdout.splitlines() if x.strip().startswith("{")]
            if out:
                return out, ""
        else:
            return json.loads(r.stdout), ""
    except json.JSONDecodeError:
        pass
    return None, "unparsable output: " + r.stdout[:200]


def kv_args(kv):
    """llama.cpp's flags for a KV cache type; a quantized V needs its flash attention."""
    return [] if kv == "f16" else ["-ctk", kv, "-ctv", kv, "-fa", "on"]


def batched_cmd(bins, model, n, depth, par, threads, kv="f16"):
    """One llama-batched-bench run: par sequences, each its own depth-token prompt, then n
    decode steps of all of them (its S_TG is kiln bench -np's t/s)."""
    return [str(bins / "llama-batched-bench"), "-m", str(model), "-c",
            str(par * (depth + n) + 16), "-b", "2048", "-ub", "512", "-npp", str(depth),
            "-ntg", str(n), "-npl", str(par), "-t", str(threads), "-tb", str(threads),
            "--output-format", "jsonl"] + kv_args(kv)


def llama_cmd(bins, model, kind, n, depth, threads, reps, kv="f16"):
    return [str(bins / "llama-bench"), "-m", str(model), "-p", str(n if kind == "pp" else 0),
            "-n", str(n if kind == "tg" else 0), "-d", str(depth), "-t", str(threads),
            "-r", str(reps), "-o", "json"] + kv_args(kv)


def kiln_cmd(model, kind, n, depth, threads, reps, window, chunk, par=0, kv="f16"):
    cmd = [str(KILN), "bench", str(model), "-p", str(n if kind == "pp" else 0),
           "-n", str(n if kind == "tg" else 0), "-d", str(depth), "-t", str(threads),
           "-r", str(reps), "--window", str(window), "--chunk", str(chunk), "--device", "cpu",
           "--kv", kv, "--json"]
    if par:
        # a batched step reads the weights once for all P tokens: no floor for it
        return cmd + ["-np", str(par)]
    return cmd + (["--floor"] if kind == "tg" else [])


def mean_sd(xs):
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def median_span(xs):
    """Median and (min, max) of the samples: on a shared machine a stolen core drags a mean
    and a standard deviation; the median is what a quiet moment gave, the span how noisy."""
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def run_row(name, model, test, threads, a, bins):
    """One table row: ROUNDS interleaved runs of each engine; all samples kept."""
    kind, n, depth, par = parse_test(test)
    # kiln's address space is capped so a model it would widen to F32 beyond this machine's
    # memory fails to load cleanly instead of dragging the machine into swap or the OOM killer
    cap = Path(model).stat().st_size + int(mem_available() * 0.75) + (2 << 30)
    res = dict(model=name, title=ROWS[name]["title"], file=Path(model).name, test=test,
               kind=kind, n=n, depth=depth, par=par, threads=threads, llama=[], kiln=[], bw=[],
               weight_bytes=None, resident_bytes=None, kv_bytes=0, llama_err="", kiln_err="", rounds=[],
               load=[])
    for r in range(a.rounds):
        order = ("llama", "kiln") if r % 2 == 0 else ("kiln", "llama")  # A B B A ...
        rnd = {}
        for eng in order:
            res["load"].append(os.getloadavg()[0])  # how busy the shared machine was
            if eng == "llama" and not res["llama_err"] and par:
                # llama-batched-bench runs each case once (after its own warm-up): REPS runs
                got = []
                for _ in range(a.reps):
                    out, e = run_json(batched_cmd(bins, model, n, depth, par, threads, a.kv),
                                      timeout=a.timeout, lines=True)
                    if not out:
                        res["llama_err"] = e
                        break
                    got.append(out[0]["speed_tg"])
                if got:
                    rnd["llama"] = statistics.fmean(got)
                    res["llama"] += got
            elif eng == "llama" and not res["llama_err"]:
                out, e = run_json(llama_cmd(bins, model, kind, n, depth, threads, a.reps, a.kv),
                                  timeout=a.timeout)
                if out:
                    rnd["llama"] = out[0]["avg_ts"]
                    res["llama"] += out[0].get("samples_ts") or [out[0]["avg_ts"]]
                    res["llama_build"] = out[0].get("build_commit", "")
                    res["llama_cpu"] = out[0].get("cpu_info", "")
                else:
                    res["llama_err"] = e
            elif eng == "kiln" and not res["kiln_err"]:
                out, e = run_json(kiln_cmd(model, kind, n, depth, threads, a.reps, a.window,
                                           a.chunk, par, a.kv), limit_as=cap, timeout=a.timeout)
                if out:
                    rnd["kiln"] = out[0]["avg_ts"]
                    res["kiln"] += out[0]["samples_ts"]
                    if "bw_gbs" in out[0]:
                        res["bw"].append(out[0]["bw_gbs"])
                        res["weight_bytes"] = out[0]["weight_bytes"]
                        res["resident_bytes"] = out[0]["resident_bytes"]
                        res["kv_bytes"] = out[0].get("kv_bytes", 0)
                else:
                    res["kiln_err"] = e + (f" (address space capped at {cap / 1e9:.0f} GB)"
                                           if "memory" in e else "")
        res["rounds"].append(rnd)
        log(f"speed: {name} {test} t{threads} round {r + 1}/{a.rounds}: "
            f"kiln {rnd.get('kiln', res['kiln_err'] or '-')}, "
            f"llama.cpp {rnd.get('llama', res['llama_err'] or '-')}")
    return res


def bandwidth_probe(smollm2, threads):
    """Read bandwidth per thread count from kiln bench --floor (a tiny tg run carries it)."""
    out, e = run_json([str(KILN), "bench", str(smollm2), "-p", "0", "-n", "8", "-r", "1",
                       "-t", ",".join(map(str, threads)), "--floor", "--json", "--device", "cpu"])
    if not out:
        log(f"speed: bandwidth probe failed: {e}")
        return {}
    return {r["n_threads"]: r["bw_gbs"] for r in out}


# ---- 4. the table ----

def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def machine_line(bw):
    f = cpu_flags()
    isa = [x for x, flag in (("AVX2", "avx2"), ("FMA", "fma"), ("F16C", "f16c"),
                             ("AVX-512F", "avx512f"), ("AVX-512 VNNI", "avx512_vnni"),
                             ("AVX-512 BF16", "avx512_bf16"), ("AVX-VNNI", "avx_vnni"),
                             ("AMX-INT8", "amx_int8")) if flag in f]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    bws = ", ".join(f"{bw[t]:.1f} GB/s ({t} thread{'s' if t > 1 else ''})" for t in sorted(bw))
    forced = os.environ.get("KILN_KERNELS")
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, {mem:.0f} GiB; {' '.join(isa) or 'no AVX2'}; "
            f"read bandwidth {bws or 'not measured'}" +
            (f"; kiln's kernel table forced to {forced} (KILN_KERNELS)" if forced else ""))


def git_rev():
    try:
        rev = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                      text=True).strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"]).returncode
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def floor_ts(r, bw):
    """Decode's ceiling: a pass reads the weights once and each of its P sessions' KV cache
    (kiln bench --floor's kv_bytes: the mean over the steps at the row's depth)."""
    p = r.get("par") or 1
    return p * bw * 1e9 / (r["weight_bytes"] + p * r["kv_bytes"]) if bw else None


def table(results, bw_probe):
    lines = ["| model | test | threads | kiln t/s | llama.cpp t/s | kiln / llama.cpp "
             "| weights MB/token | KV MB/token | floor t/s | kiln % of floor | llama.cpp % of floor "
             "| load |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        k, k0, k1 = median_span(r["kiln"])
        l, l0, l1 = median_span(r["llama"])
        kt = f"{k:.1f} [{k0:.1f}–{k1:.1f}]" if k else f"failed ({r['kiln_err']})"
        lt = f"{l:.1f} [{l0:.1f}–{l1:.1f}]" if l else f"failed ({r['llama_err']})"
        # the ratio of medians, and its span over the rounds (each round's own ratio)
        rr = [x["kiln"] / x["llama"] for x in r["rounds"] if x.get("kiln") and x.get("llama")]
        ratio = (f"**{k / l:.2f}**" + (f" [{min(rr):.2f}–{max(rr):.2f}]" if len(rr) > 1 else "")
                 if k and l else "—")
        wb = kvb = floor = kp = lp = None
        if r["kind"] == "tg" and r["weight_bytes"]:
            bw = statistics.median(r["bw"]) if r["bw"] else bw_probe.get(r["threads"])
            wb, kvb = r["weight_bytes"] / 1e6, r["kv_bytes"] / 1e6
            floor = floor_ts(r, bw)
            kp = 100 * k / floor if floor and k else None
            lp = 100 * l / floor if floor and l else None
        test = re.sub(r"x(\d+)$", r" x\1", r["test"].replace("@", " @ "))
        lines.append(f"| {r['title']} | {test} | {r['threads']} | {kt} | {lt} | {ratio} | "
                     f"{fmt(wb)} | {fmt(kvb)} | {fmt(floor)} | {fmt(kp, 0)} | {fmt(lp, 0)} | "
                     f"{fmt(statistics.median(r['load']) if r['load'] else None)} |")
    return "\n".join(lines)


def long_context(results):
    out = []
    by = {(r["model"], r["threads"], r["kind"], r["n"], r["depth"]): r for r in results
          if not r.get("par")}
    for (m, th, kind, n, d), r in by.items():
        if kind != "tg" or d < 1000:
            continue
        near = [x for (m2, th2, k2, n2, d2), x in by.items()
                if (m2, th2, k2, n2) == (m, th, kind, n) and 0 < d2 <= 100]
        if not near:
            continue
        b = near[0]
        parts = []
        for eng, lab in (("kiln", "kiln"), ("llama", "llama.cpp")):
            hi, lo = median_span(r[eng])[0], median_span(b[eng])[0]
            if hi and lo:
                parts.append(f"{lab} {hi / lo:.2f}")
        if r["weight_bytes"] and b["weight_bytes"]:
            # what streaming the bytes alone allows: the floor's own ratio (in this --kv type)
            parts.append(f"bytes alone {floor_ts(r, 1) / floor_ts(b, 1):.2f}")
        out.append(f"Long context, {r['title']}, tg{n} at {d} tokens of context / at "
                   f"{b['depth']} ({th} thread{'s' if th > 1 else ''}): {', '.join(parts) or '—'} "
                   "(goal ≥ 0.9).")
    return out


def bake_rss(a):
    """kiln bake of a bf16 7B-shape Hugging Face folder: wall time, peak RSS, what kind."""
    import make_bench_models as mbm
    hf = mbm.ensure_hf(a.bake_shape, MODELS, log=log)
    src_bytes = sum(p.stat().st_size for p in hf.glob("*.safetensors"))
    out = Path(tempfile.mkdtemp(prefix="kiln-bake-", dir=MODELS)) / "offering"
    cmd = ["/usr/bin/time", "-v", str(KILN), "bake", str(hf), "-o", str(out), "--quiet"]
    peak = {"anon": 0, "file": 0, "rss": 0}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def sample():
        # /usr/bin/time's child is kiln: sample its RssAnon / RssFile from /proc
        while proc.poll() is None:
            try:
                kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                for k in kids:
                    for line in Path(f"/proc/{k}/status").read_text().splitlines():
                        key, _, v = line.partition(":")
                        name = {"RssAnon": "anon", "RssFile": "file", "VmRSS": "rss"}.get(key)
                        if name:
                            peak[name] = max(peak[name], int(v.split()[0]) * 1024)
            except (OSError, ValueError):
                pass
            time.sleep(0.1)

    th = threading.Thread(target=sample)
    th.start()
    _, err = proc.communicate()
    th.join()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", err)
    maxrss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    out_bytes = sum(p.stat().st_size for p in out.glob("*")) if out.exists() else 0
    shutil.rmtree(out.parent, ignore_errors=True)
    if proc.returncode != 0:
        why = [x for x in err.splitlines() if x.startswith("kiln")] or [""]
        return [f"Bake of {hf.name}: kiln bake failed (exit {proc.returncode}): {why[0]}"]
    w = wall.group(1).strip() if wall else "?"
    mr = int(maxrss.group(1)) * 1024 if maxrss else peak["rss"]
    above = mr - src_bytes
    return [f"Bake, `kiln bake {hf.name} --quiet` (bf16 safetensors, {src_bytes / 1e9:.2f} GB in "
            f"{len(list(hf.glob('*.safetensors')))} shards -> q4_0 offering "
            f"{out_bytes / 1e9:.2f} GB): wall {w}; peak RSS {mr / 1e9:.2f} GB "
            f"(`/usr/bin/time -v`) = the mapped source + {above / 1e9:.2f} GB "
            f"({'within' if above < 2e9 else 'OVER'} the goal of < 2 GB above it); sampled every "
            f"0.1 s, at most {peak['anon'] / 1e9:.2f} GB of it anonymous (kiln's own memory), "
            f"{peak['file'] / 1e9:.2f} GB file pages (the mapped source, then the offering "
            "read back)."]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="rows: " + ", ".join(ROWS))
    ap.add_argument("--models", help=f"comma list of rows (default: all; --quick: "
                    f"{','.join(QUICK)})")
    ap.add_argument("--tests", help="comma list overriding every row's tests (pp512,tg64,"
                    "tg64@d1000; tg64@d128x4: 4 sequences decoding together after 128 tokens "
                    "of context each, kiln bench -np against llama-batched-bench)")
    ap.add_argument("--threads", help="comma list overriding every row's threads")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per run (default 3)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved runs of each engine per row (default 2: A B B A)")
    ap.add_argument("--timeout", type=int, default=3600,
                    help="seconds one engine's run of a row may take before it is reported as "
                    "timed out (default 3600; on a busy machine llama.cpp's spinning thread "
                    "barrier can slow 2-thread decode a hundredfold)")
    ap.add_argument("--quick", action="store_true", help=f"{', '.join(QUICK)}; 1 round")
    ap.add_argument("--window", type=int, default=2048, help="kiln's W (default 2048)")
    ap.add_argument("--kv", default="f16", choices=("f16", "q8_0"),
                    help="KV cache type of both engines (q8_0: llama.cpp's -ctk/-ctv q8_0 with "
                         "its flash attention on, which a quantized V needs)")
    ap.add_argument("--chunk", type=int, default=512,
                    help="kiln's C (default 512, llama-bench's n_ubatch)")
    ap.add_argument("--bake", action="store_true",
                    help="also bake a bf16 HF folder of --bake-shape: wall time and peak RSS")
    ap.add_argument("--bake-only", action="store_true")
    ap.add_argument("--bake-shape", default="mistral")
    ap.add_argument("--avx2-only", action="store_true",
                    help="both engines as on an AVX2-only CPU (Zen 3 class): llama.cpp built "
                    "with AVX2/FMA/F16C/BMI2 only, kiln with KILN_KERNELS=avx2")
    ap.add_argument("--amx", action="store_true",
                    help="try llama.cpp with AMX (falls back when its smoke run crashes)")
    ap.add_argument("--build-only", action="store_true", help="build llama.cpp and stop")
    ap.add_argument("--out", help="markdown output (default .cache/bench-results/speed-DATE.md)")
    a = ap.parse_args()
    try:
        import gguf  # noqa: F401  (the generator's writer)
    except ImportError:
        venv = ROOT / ".venv" / "bin" / "python"
        if not venv.exists() or os.environ.get("KILN_SPEED_IN_VENV") == "1":
            sys.exit("speed: needs gguf-py: run `make pyenv` (creates .venv)")
        os.execve(str(venv), [str(venv), __file__, *sys.argv[1:]],
                  dict(os.environ, KILN_SPEED_IN_VENV="1"))
    if a.quick and a.rounds == 2:
        a.rounds = 1
    names = a.models.split(",") if a.models else (QUICK if a.quick else list(ROWS))
    for n in names:
        if n not in ROWS:
            ap.error(f"--models: {n!r} is not one of {', '.join(ROWS)}")
    tests_override = a.tests.split(",") if a.tests else None
    for t in tests_override or []:
        try:
            parse_test(t)
        except ValueError as e:
            ap.error(f"--tests: {e}")
    threads_override = [int(t) for t in a.threads.split(",")] if a.threads else None
    if not KILN.exists():
        sys.exit(f"speed: {KILN} not built (run make)")

    smol = subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh")], text=True).strip()
    if a.avx2_only:
        os.environ["KILN_KERNELS"] = "avx2"   # every kiln the script starts
        bins, desc = build_llamacpp(False, avx2_only=True)
    else:
        bins, desc = llamacpp(a.amx, smol)
    log(f"speed: llama.cpp {desc}: {bins}")
    if a.build_only:
        return
    notes = []
    results = []
    partial = (Path(a.out) if a.out else CACHE / "bench-results" / "speed").with_suffix(
        ".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    bw_probe = {}
    if not a.bake_only:
        files = {n: model_file(n, smol, bins / "llama-quantize") for n in names}
        all_threads = sorted({t for n in names for t in (threads_override or ROWS[n]["threads"])}
                             | {1, 2})
        bw_probe = bandwidth_probe(smol, all_threads)
        for n in names:
            for th in threads_override or ROWS[n]["threads"]:
                for t in tests_override or ROWS[n]["tests"]:
                    results.append(run_row(n, files[n], t, th, a, bins))
                    # every finished row kept at once: a long run stopped half way still counts
                    partial.write_text(json.dumps(results, indent=1) + "\n")
        # the run's own bandwidth: every tg row measured it; the probe fills in the rest
        for t in all_threads:
            seen = [b for r in results if r["threads"] == t for b in r["bw"]]
            if seen:
                bw_probe[t] = statistics.median(seen)
        notes += long_context(results)
    if a.bake or a.bake_only:
        notes += bake_rss(a)

    cmd = "python3 bench/speed.py" + "".join(f" {shlex.quote(x)}" for x in sys.argv[1:])
    build = next((r.get("llama_build") for r in results if r.get("llama_build")), "")
    md = [f"### kiln vs llama.cpp (llama-bench), {time.strftime('%Y-%m-%d %H:%M')}", "",
          f"Machine: {machine_line(bw_probe)}. Shared with other work: absolute figures are "
          "noisy; each ratio comes from one interleaved run.", "",
          f"Command: `{cmd}` (kiln {git_rev()}; llama.cpp vendored in {PIN}, build "
          f"{build or 'unknown'}, {desc}).", "",
          f"Method: same GGUF files, same threads; per row {a.rounds} interleaved rounds "
          f"(A B B A ...) of llama-bench `-r {a.reps}` and `kiln bench -r {a.reps}` (each after "
          f"one warm-up run); median [min–max] over all samples; the ratio is kiln's median over "
          f"llama.cpp's, [its span over the rounds' own ratios]. kiln opens the GGUF directly with "
          f"the contract W={a.window}, C={a.chunk} (llama-bench: n_batch 2048, n_ubatch 512, "
          + ("its default KV cache)" if a.kv == "f16" else
             f"KV cache {a.kv} in both: kiln `--kv {a.kv}`, llama.cpp `{' '.join(kv_args(a.kv))}`)")
          + ". Floor = read bandwidth (measured by `kiln bench --floor` in "
          "the same runs) / bytes a decode step reads: weights (every layer matrix and the "
          "output matrix as the file stores them) plus the KV cache at the row's depth (every "
          "layer's keys and values, a sliding layer's over its window; mean over the steps). "
          "Load: the 1-minute load average when the row's "
          f"runs started ({os.cpu_count()} CPUs; above that, the engines shared their cores). "
          "Models: random weights (scripts/make_bench_models.py, quantized by llama-quantize) "
          "except SmolLM2." + (
              f" Rows `x P`: P sequences, each after its own D-token prompt, decode together: "
              f"`kiln bench -np P -d D` against `llama-batched-bench -npp D -ntg N -npl P` "
              f"(its S_TG; {a.reps} runs a round, each after its own warm-up), tokens of all "
              f"P sequences over the decode's time." if any(r.get("par") for r in results)
              else ""), ""]
    if results:
        md += [table(results, bw_probe), ""]
    md += [x + "\n" for x in notes]
    text = "\n".join(md).rstrip() + "\n"
    print(text)
    out = Path(a.out) if a.out else (CACHE / "bench-results" /
                                     f"speed-{time.strftime('%Y%m%d-%H%M%S')}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"command": cmd, "machine": machine_line(bw_probe), "llamacpp": desc,
         "results": results, "notes": notes}, indent=1) + "\n")
    log(f"speed: wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
