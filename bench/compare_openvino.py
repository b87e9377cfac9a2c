"""kiln on OpenVINO's CPU plugin vs kiln native vs OpenVINO GenAI's own LLMPipeline, same GGUF,
same session.

OpenVINO GenAI (PyPI openvino-genai==2026.4.1.0, installed into .cache/genai-venv on first use)
reads the GGUF directly and generates 128 tokens with ignore_eos; its perf metrics give decode
throughput (tokens after the first) and TTFT. kiln's numbers are `kiln bench -n 128` for the
offering baked with --target openvino, once per device.

usage: python3 bench/compare_openvino.py [--threads 2] [--reps 3]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "genai-venv"
PIN = "openvino-genai==2026.4.1.0"


def genai_child(model, reps, threads):
    import openvino_genai as og
    pipe = og.LLMPipeline(model, "CPU", INFERENCE_NUM_THREADS=threads)
    cfg = og.GenerationConfig()
    cfg.max_new_tokens = 128
    cfg.ignore_eos = True
    cfg.do_sample = False
    prompt = "Once upon a time, in a small village by the sea, there lived"
    pipe.generate(prompt, cfg)  # warm-up
    tps, ttft = [], []
    for _ in range(reps):
        r = pipe.generate([prompt], cfg)
        m = r.perf_metrics
        tps.append(m.get_throughput().mean)
        ttft.append(m.get_ttft().mean)
    print(json.dumps({"tg_ts": sum(tps) / len(tps), "ttft_ms": sum(ttft) / len(ttft)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        genai_child(a.child, a.reps, int(a.threads))
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", PIN])
    model = subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh")], text=True).strip()
    kiln = ROOT / "build" / "kiln"
    libs = sorted((VENV / "lib").glob("python3*/site-packages/openvino/libs/libopenvino_c.so*"))
    env = dict(os.environ, KILN_OPENVINO_LIB=str(libs[0]))
    with tempfile.TemporaryDirectory() as tmp:
        off = Path(tmp) / "off"
        subprocess.check_call([str(kiln), "bake", model, "-o", str(off), "--quiet", "--target",
                               "openvino", "--window", "512", "--chunk", "64"])
        rows = {}
        for dev in ("cpu", "openvino:CPU"):
            out = json.loads(subprocess.check_output(
                [str(kiln), "bench", str(off), "-p", "64", "-n", "128", "-t", a.threads, "-r",
                 str(a.reps), "--json", "--device", dev], env=env))
            rows[dev] = {("pp" if x["n_gen"] == 0 else "tg"): x["avg_ts"] for x in out}
        ref = json.loads(subprocess.check_output(
            [str(py), __file__, "--child", model, "--reps", str(a.reps), "--threads", a.threads],
            stderr=subprocess.DEVNULL))
    print(f"# kiln vs OpenVINO GenAI — {Path(model).name}, {a.threads} threads, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| engine | tg128 t/s | vs GenAI |")
    print("| --- | ---: | ---: |")
    print(f"| OpenVINO GenAI LLMPipeline (CPU) | {ref['tg_ts']:.1f} | 1.00 |")
    for dev, r in rows.items():
        print(f"| kiln --device {dev} | {r['tg']:.1f} | {r['tg'] / ref['tg_ts']:.2f} |")


if __name__ == "__main__":
    main()
