"""SmolLM2-135M-Instruct Q4_1 against llama.cpp (the independent reference), teacher-forced.

tests/data/smollm2_llamacpp.json, _topk.npz and _logits.npy come from
scripts/make_llamacpp_fixtures.py, which drives llama.cpp (llama-cpp-python==0.3.36, built for
plain AVX2 so the fixtures are the same on every x86-64 CPU) greedily for 32 tokens per prompt
and keeps, at each of those 32 positions, llama.cpp's top-128 logits and its top-2 gap (see the
provenance block of the JSON).

The test feeds kiln the same sequence, prompt then llama.cpp's 32 tokens, one decode step at a
time whatever kiln would have chosen (teacher forcing), and compares the logits position by
position, on every CPU kernel table this machine can run. A near-tie can no longer fork the two
continuations and fail everything after it: each position stands alone.

Why the bounds are what they are. Both engines multiply the same Q4_1 weights with activations
rounded to 8 bits per block of 32 (kiln rounds exactly as ggml's x86 path), but a one-ulp
difference in any float sum can move an activation across a rounding boundary, and over 30
layers that decorrelates the rounding noise: kiln's own kernel tables (same arithmetic, other
summation order) differ from each other by up to 1.1-1.6 logits over the full vocabulary, as
much as from llama.cpp. Measured for kiln vs llama.cpp (2026-11-27; 5 prompts x 32 positions x
3 tables (generic, avx2, avx512vnni) x llama.cpp's top 128; logits span ~30):
  - a single logit's error d = kiln - llama.cpp: std 0.23, max |d| 1.45 (full vocabulary at the
    first position: max 1.11)                                           -> MAX_ABS = 2.0
  - per prompt, the RMS of d over its 32 x 128 logits: 0.18-0.32        -> MAX_RMS = 0.45
MAX_RMS_Q8 = 0.55
  - the error of a difference of two logits of one position (d_a - d_b for pairs among
    llama.cpp's top 10): std 0.18, 99.9th percentile 0.79, max 1.73. The errors of one
    position share a common shift, so a difference is no worse than one logit (|d_a - d_b| <=
    MAX_ABS held for all 14,400 pairs). The argmax can only change where the top-2 gap is
    smaller than that error, so where llama.cpp's own top-2 gap exceeds GAP = MAX_ABS the
    argmax must be the same; below it, a different choice is the noise above.
  - the top 10: at least 8 shared at 479 of 480 positions; the one exception (7 shared) had
    llama.cpp's ranks 5-12 within 0.19 of each other. So: at least 8 shared, and where fewer,
    every id that crossed the rank-10 border (in one top 10, not the other) lies within
    BORDER = 0.8 (the 99.9th percentile of a difference's error) of llama.cpp's 10th logit.
What this catches (tried by planting each bug): RoPE with base 10,000 instead of the model's
100,000 fails every prompt on every table; the sign of Q4_1's offset term flipped in one table's
kernel fails every prompt on that table. What it cannot see: a base off by 10% moves the
rotation of 60-token contexts less than the rounding noise above (RMS 0.20-0.29, passes)."""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import BUILD, ROOT, run_kiln

DATA = ROOT / "tests" / "data"
FIX = json.loads((DATA / "smollm2_llamacpp.json").read_text())
TOPK = np.load(DATA / "smollm2_llamacpp_topk.npz")
FIRST = np.load(DATA / "smollm2_llamacpp_logits.npy")

# The sanitizer build (-O0 + ASan, ~30x slower) checks memory safety of every kernel table on
# the shortest prompt and its first 4 positions; the numbers are the release build's to prove.
SANITIZED = os.environ.get("KILN_SANITIZED") == "1"
PROMPTS = [1] if SANITIZED else list(range(len(FIX["prompts"])))
N_POS = 4 if SANITIZED else 32

MAX_ABS = 2.0
MAX_RMS = 0.45
MAX_RMS_Q8 = 0.55
GAP = MAX_ABS
BORDER = 0.8


@pytest.fixture(scope="module")
def offering(smollm_gguf, tmp_path_factory):
    assert FIX["provenance"]["model_sha256"] == \
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    off = tmp_path_factory.mktemp("llamacpp") / "off"
    r = run_kiln("bake", smollm_gguf, "-o", off, "--quiet", "--window", 256, "--chunk", 32)
    assert r.returncode == 0, r.stderr
    return off


def teacher_forced(off, prompt, cont, kernels, tmp_path, kv="f16"):
    """kiln's logits [len(cont), V]: row j predicts cont[j] after prompt + cont[:j]."""
    out = tmp_path / f"logits-{kernels}.f32"
    env = dict(os.environ, KN_OV_TOOL_KV=kv)
    if kernels:
        env["KILN_KERNELS"] = kernels
    r = subprocess.run([str(BUILD / "kn_ov_tool"), "teacher", str(off), str(out),
                        str(len(prompt)), *map(str, prompt + cont)], capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, np.float32).reshape(len(cont), FIX["n_vocab"])


@pytest.mark.parametrize("k", range(len(FIX["prompts"])))
def test_tokenizer_matches_llamacpp(offering, k):
    p = FIX["prompts"][k]
    r = run_kiln("tokenize", offering, "--text", p["text"], "--special")
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == p["ids"]


@pytest.mark.parametrize("k", PROMPTS)
def test_teacher_forced_logits_match_llamacpp(offering, k, kernels, tmp_path):
    p = FIX["prompts"][k]
    cont = p["greedy32"][:N_POS]
    check_prompt(k, teacher_forced(offering, p["ids"], cont, kernels, tmp_path), kernels,
                 MAX_RMS)


@pytest.mark.parametrize("k", PROMPTS)
def test_teacher_forced_q8_0_kv_cache(offering, k, tmp_path):
    """--kv q8_0 (keys and values rounded to Q8_0 rows, as llama.cpp's -ctk/-ctv q8_0) against
    the same llama.cpp logits (its f32 KV cache): the rounding of the cache, and of the query
    the keys are scored against in integers (as llama.cpp's q8_0 path rounds it), adds to the
    noise above (measured 2026-11-28 with the integer scores, 5 prompts x 32 positions: max |d|
    1.64, per-prompt RMS 0.23-0.32, against 1.19 and 0.22-0.27 with the f16 cache; with the
    query unrounded it was 1.64 and 0.19-0.41), so the same bounds but RMS 0.55. A cache rounded with the wrong scale, or read with another
    block's, is far outside them."""
    p = FIX["prompts"][k]
    cont = p["greedy32"][:N_POS]
    check_prompt(k, teacher_forced(offering, p["ids"], cont, "", tmp_path, kv="q8_0"),
                 "default, q8_0 KV", MAX_RMS_Q8)


def check_prompt(k, logits, kernels, max_rms):
    p = FIX["prompts"][k]
    cont = p["greedy32"][:N_POS]
    ids, vals = TOPK["ids"][k], TOPK["vals"][k]
    # the first position against llama.cpp's whole vocabulary
    first = float(np.max(np.abs(logits[0] - FIRST[k])))
    assert first <= MAX_ABS, f"position 0: max |dlogit| over the vocabulary {first:.3f}"
    errs, worst, argmax_checked = [], 0.0, 0
    for j in range(len(cont)):
        d = logits[j][ids[j]] - vals[j]
        errs.append(d)
        worst = max(worst, float(np.max(np.abs(d))))
        where = f"[{kernels}] prompt {k} position {j}"
        assert np.max(np.abs(d)) <= MAX_ABS, \
            f"{where}: max |dlogit| {np.max(np.abs(d)):.3f} > {MAX_ABS}"
        ours = np.argsort(-logits[j], kind="stable")[:10]
        theirs = ids[j][:10]
        shared = len(set(ours) & set(theirs))
        if shared < 8:
            border = vals[j][9]
            llama_of = dict(zip(ids[j].tolist(), vals[j].tolist()))
            crossed = set(ours) ^ set(theirs)
            far = [t for t in crossed if t not in llama_of or abs(llama_of[t] - border) > BORDER]
            assert not far, (f"{where}: {shared}/10 of the top 10 shared and ids {far} crossed "
                             f"the rank-10 border from further than {BORDER}")
        if p["gap32"][j] > GAP:
            argmax_checked += 1
            assert int(ours[0]) == cont[j], \
                (f"{where}: argmax {int(ours[0])}, llama.cpp {cont[j]} although its top-2 gap "
                 f"is {p['gap32'][j]:.3f} > {GAP}")
    rms = float(np.sqrt(np.mean(np.square(np.concatenate(errs)))))
    print(f"[{kernels}] prompt {k}: max |dlogit| {worst:.3f} (first position, whole vocabulary "
          f"{first:.3f}), RMS {rms:.3f}, argmax checked at {argmax_checked}/{N_POS} positions")
    assert rms <= max_rms, f"[{kernels}] prompt {k}: RMS of dlogit {rms:.3f} > {max_rms}"
