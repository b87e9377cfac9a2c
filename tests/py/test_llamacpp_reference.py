"""SmolLM2-135M-Instruct Q4_1 against llama.cpp (the independent reference).

tests/data/smollm2_llamacpp.json and _logits.npy come from scripts/make_llamacpp_fixtures.py, which
drives llama.cpp through llama-cpp-python==0.3.36 (see the provenance block in the JSON). Both
engines use the same Q4_1 weights and quantize activations to 8 bits before the int4 dot
products, so logits agree to a few hundredths, not bit for bit; the tolerances below are set
from that: max |delta logit| <= 0.35 on logits of magnitude ~20, the top-1 token identical, at
least 8 of the top 10 shared, and the first 32 greedy tokens identical."""
import json
import subprocess

import numpy as np
import pytest

from conftest import BUILD, ROOT, run_kiln

DATA = ROOT / "tests" / "data"
FIX = json.loads((DATA / "smollm2_llamacpp.json").read_text())
LOGITS = np.load(DATA / "smollm2_llamacpp_logits.npy")


@pytest.fixture(scope="module")
def offering(smollm_gguf, tmp_path_factory):
    assert FIX["provenance"]["model_sha256"] == \
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    off = tmp_path_factory.mktemp("llamacpp") / "off"
    r = run_kiln("bake", smollm_gguf, "-o", off, "--quiet", "--window", 256, "--chunk", 32)
    assert r.returncode == 0, r.stderr
    return off


def native(off, ids, n_gen):
    exe = BUILD / "kn_ov_tool"
    r = subprocess.run([str(exe), "native", str(off), str(n_gen), *map(str, ids)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = dict(l.split(" ", 1) for l in r.stdout.strip().splitlines())
    return (np.array([float(x) for x in lines["LOGITS"].split()], np.float32),
            [int(x) for x in lines["IDS"].split()])


@pytest.mark.parametrize("k", range(len(FIX["prompts"])))
def test_tokenizer_matches_llamacpp(offering, k):
    p = FIX["prompts"][k]
    r = run_kiln("tokenize", offering, "--text", p["text"], "--special")
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == p["ids"]


@pytest.mark.parametrize("k", range(len(FIX["prompts"])))
def test_logits_and_greedy_match_llamacpp(offering, k):
    p = FIX["prompts"][k]
    logits, greedy = native(offering, p["ids"], 32)
    ref = LOGITS[k]
    err = float(np.max(np.abs(logits - ref)))
    top10 = list(np.argsort(-logits, kind="stable")[:10])
    shared = len(set(top10) & set(p["top10"]))
    print(f"prompt {k}: max |dlogit| {err:.4f}, top-10 shared {shared}/10, "
          f"greedy32 equal {greedy == p['greedy32']}")
    assert top10[0] == p["top10"][0]
    assert shared >= 8
    assert err <= 0.35
    assert greedy == p["greedy32"]
