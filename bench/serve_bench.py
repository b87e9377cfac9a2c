"""kiln serve vs llama-server: the same GGUF, the same threads, --parallel 1 and 4, 1/2/4/8
concurrent clients, in one run; and the time to first token of a resent ~1,000-token chat
history against a cold one.

    .venv/bin/python bench/serve_bench.py                 # the whole table (a few minutes)
    .venv/bin/python bench/serve_bench.py --clients 1,4 --requests 2 --engines kiln

(make first: it runs build/kiln.) What it does:
  1. SmolLM2-135M-Instruct Q4_1 (scripts/fetch_models.sh), or --model GGUF (e.g. bench/speed.py's
     random-weight TinyLlama-1.1B shape, whose weights stream from memory as a 1B-7B model's
     do where SmolLM2's mostly sit in cache). kiln serves an offering baked from
     it with its weights kept (--quant keep) and a 2,048-token window; llama-server serves the
     GGUF itself with 2,048 tokens of context per slot (-c 2048 x parallel).
  2. llama-server from the llama.cpp vendored in the pinned llama-cpp-python sdist, built with
     CMake into .cache/llamacpp-build/ by bench/speed.py's builder (one build for both
     benchmarks; AMX left out where the CPU has it).
  3. For each engine and --parallel, a server on a loopback port; for each client count C, C
     threads each send --requests streamed chat requests (greedy, --max-tokens, varied
     prompts) one after another, after one unmeasured warm-up. Requests/s and generated
     tokens/s are over the wall time of the C clients; TTFT is request sent -> first content.
  4. Resent history: a ~1,000-token conversation with a unique first line (cold: nothing of it
     cached), then the same conversation with the answer and one more user turn (warm: the
     slot holds the prefix). TTFT of each, --history-reps times.
Prints a markdown table with the machine line and writes it to --out. Numbers on a shared
2-core VM are noisy: only ratios from one run mean anything."""
import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
KILN = ROOT / "build" / "kiln"
PIN = "llama-cpp-python==0.3.36"

PROMPTS = ["Write a story about a lighthouse keeper.", "Explain how a bicycle works.",
           "Describe the water cycle in detail.", "Write a letter to a friend about a trip.",
           "List ten animals and describe each one.", "Explain why the sky is blue.",
           "Write a poem about the ocean.", "Describe how bread is made, step by step."]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- llama-server ----

def llamacpp_bins():
    """bench/speed.py's build of llama.cpp (one build for both benchmarks: the pinned sdist's
    vendored tree, GGML_NATIVE=ON, AMX left out where the CPU has it)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import speed
    return speed.build_llamacpp("amx_int8" not in speed.cpu_flags())


# ---- servers ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    def __init__(self, name, cmd, port, logfile):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.logf = open(logfile, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        end = time.time() + 300
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve_bench: {name} exited; see {logfile}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"serve_bench: {name} never became ready; see {logfile}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def stream_chat(url, messages, max_tokens, client=None):
    """One streamed chat request: (TTFT s, completion tokens, total s). client: an httpx.Client
    to reuse, as an application reuses its OpenAI client: the clients share the servers' cores,
    and a fresh httpx client per request spends milliseconds of CPU building TLS state that a
    loopback request never uses (a new connection per request all the same: llama-server
    closes streamed connections, and a stale kept-alive one fails the next request)."""
    body = {"model": "m", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, n_chunks, usage = None, 0, None
    send = client.stream if client else httpx.stream
    with send("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError(str(ev["error"]))
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                if (ch.get("delta") or {}).get("content"):
                    n_chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    n = usage["completion_tokens"] if usage else n_chunks
    return (ttft if ttft is not None else total), n, total


def pct(xs, q):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, -(-int(q * 100) * len(xs) // 100) - 1))]


def run_clients(url, clients, requests, max_tokens):
    ttfts, tokens, errors = [], [], []
    lock = threading.Lock()

    def client(i):
        with httpx.Client(timeout=600, limits=httpx.Limits(max_keepalive_connections=0)) as c:
            for k in range(requests):
                p = PROMPTS[(i * requests + k) % len(PROMPTS)]
                try:
                    t, n, _ = stream_chat(url, [{"role": "user", "content": p}], max_tokens, c)
                    with lock:
                        ttfts.append(t)
                        tokens.append(n)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(str(e))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"serve_bench: {len(errors)} requests failed: {errors[0]}")
    return {"requests": len(tokens), "wall": wall, "rps": len(tokens) / wall,
            "tps": sum(tokens) / wall, "tokens": sum(tokens),
            "ttft_p50": statistics.median(ttfts) * 1e3, "ttft_p95": pct(ttfts, 0.95) * 1e3}


FILLER = ("The committee met on a grey morning to review the plans for the new harbour, "
          "the budget for the year, the state of the old bridge, and the schedule of repairs "
          "that the engineers had proposed after the winter storms. ")


def history(tag, approx_tokens=1000):
    """A conversation of about approx_tokens tokens (SmolLM2 averages ~1.2 tokens per word of
    this text), whose first line is unique to tag so that no cache holds any of it."""
    turns = [{"role": "system", "content": f"Session {tag}. You are a careful assistant."}]
    words_per_turn = 110
    n_turns = max(1, approx_tokens // int(words_per_turn * 1.25))
    for i in range(n_turns):
        turns.append({"role": "user", "content": f"Part {i + 1}: " + FILLER * 3})
        turns.append({"role": "assistant", "content": f"Noted part {i + 1}."})
    turns.append({"role": "user", "content": "Summarize the meeting in one sentence."})
    return turns


def resent_history(url, reps, max_tokens=8):
    cold, warm = [], []
    for r in range(reps):
        h = history(f"{os.getpid()}-{time.time_ns()}-{r}")
        t, _, _ = stream_chat(url, h, max_tokens)
        cold.append(t)
        h2 = h + [{"role": "assistant", "content": "The committee reviewed the harbour plans."},
                  {"role": "user", "content": "And the bridge?"}]
        t, _, _ = stream_chat(url, h2, max_tokens)
        warm.append(t)
    return {"cold_p50": statistics.median(cold) * 1e3, "cold_p95": pct(cold, 0.95) * 1e3,
            "warm_p50": statistics.median(warm) * 1e3, "warm_p95": pct(warm, 0.95) * 1e3}


def prompt_tokens_of(url):
    """The prompt size of one history, as the kiln server counts it."""
    r = httpx.post(url + "/v1/chat/completions", timeout=600, json={
        "messages": history("count"), "max_tokens": 1})
    return r.json()["usage"]["prompt_tokens"]


def machine_line(threads, llama_desc):
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    kern = subprocess.run([str(KILN), "--version"], capture_output=True, text=True).stdout
    kern = next((l for l in kern.splitlines() if l.startswith("cpu kernels")), "")
    load = " / ".join(f"{x:.1f}" for x in LOADS)
    return (f"{model}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, kiln {rev} "
            f"({kern}), llama.cpp from {PIN} built {llama_desc}; {threads} threads per server; "
            f"1-minute load average at the start / end of the run {load} (other work shares "
            "this machine: numbers are noisy, ratios from one run only)")


LOADS = []


def loadavg():
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", default="1,4")
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--requests", type=int, default=3, help="per client, after a warm-up")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--history-reps", type=int, default=5)
    ap.add_argument("--engines", default="kiln,llama-server")
    ap.add_argument("--model", help="GGUF to serve (default: SmolLM2-135M-Instruct Q4_1 from "
                    "scripts/fetch_models.sh), e.g. .cache/bench-models/tinyllama-q4_0.gguf "
                    "written by bench/speed.py")
    ap.add_argument("--out", default=str(CACHE / "serve-bench" / "serve_bench.md"))
    a = ap.parse_args()
    parallels = [int(x) for x in a.parallel.split(",")]
    clients = [int(x) for x in a.clients.split(",")]
    engines = a.engines.split(",")
    work = CACHE / "serve-bench"
    work.mkdir(parents=True, exist_ok=True)
    if a.model:
        gguf = Path(a.model).resolve()
        if not gguf.is_file():
            raise SystemExit(f"serve_bench: --model {a.model}: no such file")
    else:
        gguf = Path(subprocess.run([str(ROOT / "scripts" / "fetch_models.sh")],
                                   capture_output=True, text=True, check=True).stdout.strip())
    off = work / f"{gguf.stem}-w{a.window}"
    if not (off / "model.gguf").exists():
        subprocess.check_call([str(KILN), "bake", str(gguf), "-o", str(off), "--quant", "keep",
                               "--window", str(a.window), "--quiet"])
    bins, llama_desc = llamacpp_bins() if "llama-server" in engines else (None, "-")

    rows, hist = [], {}
    LOADS.append(loadavg())
    for par in parallels:
        # every engine up at once, measured in turns for each client count (A B A B ...), so
        # that the load of a shared machine drifting over the run hits them alike
        up = {}
        try:
            for engine in engines:
                port = free_port()
                if engine == "kiln":
                    cmd = [str(KILN), "serve", str(off), "--port", str(port), "--parallel",
                           str(par), "--threads", str(a.threads), "--alias", "m", "--queue", "256"]
                else:
                    cmd = [str(bins / "llama-server"), "-m", str(gguf), "--port", str(port),
                           "--host", "127.0.0.1", "-np", str(par), "-t", str(a.threads), "-tb",
                           str(a.threads), "-c", str(a.window * par), "-a", "m"]
                log(f"serve_bench: {engine} --parallel {par}")
                up[engine] = Engine(engine, cmd, port, work / f"{engine}-p{par}.log")
                stream_chat(up[engine].url, [{"role": "user", "content": "Hello"}], 8)  # warm-up
            for c in clients:
                for engine, e in up.items():
                    r = run_clients(e.url, c, a.requests, a.max_tokens)
                    r.update(engine=engine, parallel=par, clients=c)
                    rows.append(r)
                    log(f"  {engine} {c} clients: {r['rps']:.2f} req/s, {r['tps']:.1f} tok/s, "
                        f"TTFT p50 {r['ttft_p50']:.0f} ms p95 {r['ttft_p95']:.0f} ms")
            if par == max(parallels):
                for engine, e in up.items():
                    hist[engine] = resent_history(e.url, a.history_reps)
                    if engine == "kiln":
                        hist[engine]["prompt_tokens"] = prompt_tokens_of(e.url)
                    log(f"  {engine} resent history: {hist[engine]}")
        finally:
            for e in up.values():
                e.stop()
    rows.sort(key=lambda r: (engines.index(r["engine"]), r["parallel"], r["clients"]))
    LOADS.append(loadavg())

    out = [f"Machine: {machine_line(a.threads, llama_desc)}.", "",
           f"`python3 bench/serve_bench.py --threads {a.threads} --parallel {a.parallel} "
           f"--clients {a.clients} --requests {a.requests} --max-tokens {a.max_tokens}"
           f"{' --model ' + a.model if a.model else ''}` — streamed greedy chat, "
           f"{'SmolLM2-135M-Instruct Q4_1' if not a.model else gguf.name}, same GGUF:", "",
           "| engine | --parallel | clients | requests | req/s | gen tok/s | TTFT p50 ms | TTFT p95 ms |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['engine']} | {r['parallel']} | {r['clients']} | {r['requests']} | "
                   f"{r['rps']:.2f} | {r['tps']:.1f} | {r['ttft_p50']:.0f} | {r['ttft_p95']:.0f} |")

    def tps(engine, par, c):
        return next((r["tps"] for r in rows if (r["engine"], r["parallel"], r["clients"]) ==
                     (engine, par, c)), None)
    p = max(parallels)
    k4, k1, l4 = tps("kiln", p, 4), tps("kiln", p, 1), tps("llama-server", p, 4)
    out.append("")
    if k4 and l4:
        out.append(f"Generated tokens/s at 4 clients (--parallel {p}): kiln {k4:.1f}, "
                   f"llama-server {l4:.1f} — ratio **{k4 / l4:.2f}** (goal ≥ 1.0).")
    if k4 and k1:
        out.append(f"kiln at 4 clients vs its own single client (--parallel {p}): "
                   f"{k4:.1f} / {k1:.1f} = **{k4 / k1:.2f}×** (goal ≥ 2×).")
    for engine, h in hist.items():
        n = f" ({h['prompt_tokens']} prompt tokens)" if "prompt_tokens" in h else ""
        out.append(f"Resent ~1,000-token history{n}, {engine}: TTFT p95 warm {h['warm_p95']:.0f} ms "
                   f"vs cold {h['cold_p95']:.0f} ms — **{h['warm_p95'] / h['cold_p95']:.2f}** "
                   f"(p50 {h['warm_p50']:.0f} / {h['cold_p50']:.0f} ms; goal ≤ 0.2).")
    text = "\n".join(out) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    if not KILN.exists():
        sys.exit(f"serve_bench: {KILN} not built (make)")
    if shutil.which("cmake") is None:
        sys.exit("serve_bench: cmake is needed to build llama-server")
    main()
