"""The architecture families (Qwen3, Llama 3.x, SmolLM3, Phi-3.5-mini, Phi-4-mini, Gemma 2,
Gemma 3) against llama.cpp, and kiln's Hugging Face reader against gguf-py's names.

Oracle: tests/data/families_llamacpp.{json,npz}, written by scripts/make_arch_fixtures.py:
llama.cpp (llama-cpp-python==0.3.36) on a random-weight GGUF per family, laid out as llama.cpp's
converter lays it out (tests/py/families.py; regenerated here from the seed, its sha256 checked
against the fixture), teacher-forced over 9 prompt + 32 continuation positions, full logits.

Both engines run F32 weights with an f32 KV cache there, so nothing rounds below float and the
two agree to float noise: measured max |dlogit| over 32 positions x 512 logits (logits span
about +-20), 2026-11-27, kernel tables generic / avx2 / avxvnni / avx512vnni: qwen3 1.4e-5,
llama3 2.9e-5, smollm3 5.5e-5, phi3 3.7e-5, phi4mini 2.1e-4; OpenVINO's CPU plugin at f32 the
same (1.9e-5 to 1.6e-4). MAX_ABS = 2e-3 is ten times the worst of it and far below what a wrong
block costs. Planted, each fails every kernel table: Qwen3 without its q/k norms (max |dlogit|
12.0), Llama 3 without rope_freqs (10.6; Phi-3 too, 9.9), SmolLM3 with RoPE in its 4th layer
(6.5), Phi-4-mini with the short LongRoPE factors instead of the long ones (24.4), LongRoPE
without its attention factor (phi3 5.5, phi4mini 19.3), the IR without q/k norms (17.8 on the
OpenVINO plugin), an HF SmolLM3 read without the Q/K permutation (19.4 against the GGUF).
Gemma 2 and 3 (soft-caps 2 and 3 on Gemma 2, windows of 8 on their sliding layers) are held to
MAX_ABS_GELU (see there: ggml's f16 GELU table) and measured 2.2e-3 and 1.1e-3 on every table;
planted in Gemma 2, each fails it by 100x: no attention soft-cap (2.6), no final soft-cap
(1.26), the sliding layers' parity swapped (2.54).
kiln's default f16 KV cache rounds K and V to halves: against the same fixture it stays within
MAX_ABS_F16 = 0.25 (measured 0.01 to 0.14, largest where LongRoPE's attention factor sharpens
the softmax).

The HF-folder proof: the same weights as a Hugging Face folder (config.json as transformers
writes it, BF16 safetensors) baked by kiln give the logits of the GGUF that gguf-py's
TensorNameMap names (and the converter permutes, splits and extends): equal, up to the f32
rounding of Llama 3's rope_freqs (the GGUF holds the factors as f32; from config.json kiln
computes them in double)."""
import json
import os
import subprocess

import numpy as np
import pytest

import families as F
from conftest import BUILD, ROOT, SHARED, run_kiln

DATA = ROOT / "tests" / "data"
FIX = json.loads((DATA / "families_llamacpp.json").read_text())
LOGITS = np.load(DATA / "families_llamacpp.npz")
FAMS = list(FIX["families"])
SANITIZED = os.environ.get("KILN_SANITIZED") == "1"
N_POS = 4 if SANITIZED else F.N_GEN  # ASan: memory safety on a few positions is the point

MAX_ABS = 2e-3
MAX_ABS_F16 = 0.25
HF_EQUAL = 1e-3
# Gemma's GeGLU: ggml reads GELU from a table at f16 inputs and outputs (GGML_GELU_FP16), kiln
# computes it in float; measured 2026-11-28 (every kernel table): gemma2 2.2e-3, gemma3 1.1e-3,
# and with ggml's table emulated in kiln (an experiment, not kept) 1.2e-4 and 3.3e-4 — so the
# rest is float noise and the table's rounding is the whole gap.
MAX_ABS_GELU = 1e-2


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


_made = {}


def source(work, fam, kind):
    """The family's GGUF (checked against the fixture's sha256) or HF folder, made once."""
    key = (fam, kind)
    if key not in _made:
        if kind == "gguf":
            p = F.write_gguf(fam, work / f"{fam}.gguf", SHARED)
            assert F.sha256(p) == FIX["families"][fam]["gguf_sha256"], \
                f"{fam}: the GGUF differs from the one llama.cpp saw (families.py changed?)"
        else:
            p = F.write_hf_folder(fam, work / f"{fam}-hf", SHARED)
        _made[key] = p
    return _made[key]


def offering(work, fam, kind, *extra):
    key = (fam, kind, extra)
    if key not in _made:
        out = work / f"off-{fam}-{kind}{'-ov' if extra else ''}"
        r = run_kiln("bake", source(work, fam, kind), "-o", out, "--quiet", "--quant", "keep",
                     "--window", 256, "--chunk", 16, *extra)
        assert r.returncode == 0, r.stderr
        _made[key] = out
    return _made[key]


def teacher(off, fam, tmp_path, kernels=None, kv="f32"):
    """kiln's logits [N_POS, V]: row j predicts greedy[j] after prompt + greedy[:j]."""
    f = FIX["families"][fam]
    ids = f["prompt"] + f["greedy"][:N_POS]
    out = tmp_path / f"logits-{fam}.f32"
    env = dict(os.environ, KN_OV_TOOL_KV=kv)
    if kernels:
        env["KILN_KERNELS"] = kernels
    r = subprocess.run([str(BUILD / "kn_ov_tool"), "teacher", str(off), str(out),
                        str(len(f["prompt"])), *map(str, ids)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, np.float32).reshape(N_POS, -1)


def check(fam, logits, bound, what):
    ref = LOGITS[fam][:len(logits)]
    d = np.abs(logits - ref)
    j = int(np.argmax(d.max(1)))
    print(f"{fam} [{what}]: max |dlogit| {d.max():.2e} (position {j}), RMS "
          f"{np.sqrt(np.mean(d * d)):.2e}")
    assert d.max() <= bound, f"{fam} [{what}]: max |dlogit| {d.max():.4f} at position {j} > {bound}"
    # same greedy choice wherever llama.cpp's top-2 gap is wider than the error allowed
    for k, row in enumerate(ref):
        top = np.sort(row)[-2:]
        if top[1] - top[0] > 2 * bound:
            assert int(np.argmax(logits[k])) == FIX["families"][fam]["greedy"][k], (fam, k)


@pytest.mark.parametrize("fam", FAMS)
def test_llamacpp_teacher_forced(work, fam, kernels, tmp_path):
    check(fam, teacher(offering(work, fam, "gguf"), fam, tmp_path, kernels), bound(fam), kernels)


def bound(fam):
    return MAX_ABS_GELU if F.FAMILIES[fam].get("gemma") else MAX_ABS


@pytest.mark.parametrize("fam", FAMS)
def test_llamacpp_teacher_forced_f16_kv(work, fam, tmp_path):
    check(fam, teacher(offering(work, fam, "gguf"), fam, tmp_path, kv="f16"), MAX_ABS_F16,
          "f16 KV")


@pytest.mark.parametrize("fam", FAMS)
def test_hf_folder_equals_gguf_py_layout(work, fam, tmp_path):
    """kiln's HF reader (names, Q/K permutation, fused splits, rope_scaling) against gguf-py."""
    a = teacher(offering(work, fam, "gguf"), fam, tmp_path)
    b = teacher(offering(work, fam, "hf"), fam, tmp_path)
    d = float(np.max(np.abs(a - b)))
    print(f"{fam}: HF folder vs GGUF max |dlogit| {d:.2e}")
    assert d <= HF_EQUAL, f"{fam}: HF folder and GGUF differ by {d}"


@pytest.mark.skipif(SANITIZED, reason="OpenVINO's plugin under ASan is covered by "
                    "test_openvino_ir; this is numbers")
@pytest.mark.parametrize("fam", FAMS)
def test_openvino_cpu_plugin_teacher_forced(work, fam):
    """The IR on OpenVINO's CPU plugin, its masks built here in numpy (test_openvino_ir's
    Runner): the graph itself against llama.cpp."""
    from test_openvino_ir import Runner
    off = offering(work, fam, "gguf", "--target", "openvino")
    f = FIX["families"][fam]
    gemma = F.FAMILIES[fam].get("gemma")
    rn = Runner(off, swa=F.config(fam)["sliding_window"] if gemma else 0)
    rows, p = [rn.prompt(f["prompt"])], len(f["prompt"])
    for tok in f["greedy"][:N_POS - 1]:
        rows.append(rn.decode(tok, p))
        p += 1
    check(fam, np.stack(rows), bound(fam), "openvino CPU")


@pytest.mark.skipif(SANITIZED, reason="OpenVINO's plugin under ASan is covered by "
                    "test_openvino_ir; this is numbers")
@pytest.mark.parametrize("fam", [f for f in FAMS if F.FAMILIES[f].get("gemma")])
def test_openvino_backend_teacher_forced(work, fam, tmp_path):
    """The same IR through kiln's own OpenVINO backend (--device openvino:CPU), which fills
    attention_mask and sliding_mask from its slot table: against llama.cpp."""
    off = offering(work, fam, "gguf", "--target", "openvino")
    f = FIX["families"][fam]
    ids = f["prompt"] + f["greedy"][:N_POS]
    out = tmp_path / "ov.f32"
    from test_openvino_backend import env as ov_env  # OpenVINO found as users find it
    env = ov_env(KN_OV_TOOL_DEVICE="openvino:CPU", KN_OV_TOOL_KV="f32")
    r = subprocess.run([str(BUILD / "kn_ov_tool"), "teacher", str(off), str(out),
                        str(len(f["prompt"])), *map(str, ids)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    check(fam, np.fromfile(out, np.float32).reshape(N_POS, -1), bound(fam), "kiln openvino:CPU")


@pytest.mark.parametrize("fam", FAMS)
def test_inspect_shows_the_arch_flags(work, fam):
    r = run_kiln("inspect", offering(work, fam, "gguf"))
    assert r.returncode == 0, r.stderr
    want = {"qwen3": ["qk norm", "rope neox"], "llama3": ["rope scaling llama3"],
            "smollm3": ["no rope in layers 3"], "phi3": ["longrope short"],
            "phi4mini": ["longrope long", "partial rotary 12/16"],
            "gemma2": ["gemma block", "attention logit soft-cap 2,", "final logit soft-cap 3",
                       "attention per layer: 0 sliding 8, 1 global, 2 sliding 8, 3 global"],
            "gemma3": ["gemma block", "q/k norms", "qk norm",
                       "attention per layer: 0-4 sliding 8, 5 global"]}[fam]
    for w in want:
        assert w in r.stdout, f"{fam}: inspect lacks '{w}':\n{r.stdout}"
    r = run_kiln("inspect", offering(work, fam, "gguf"), "--json")
    assert r.returncode == 0, r.stderr
    hp = json.loads(r.stdout)["hparams"]
    assert hp["qk_norm"] == (fam in ("qwen3", "gemma3"))
    c = F.config(fam)
    assert hp["attn_logit_softcap"] == (c.get("attn_logit_softcapping") or 0)
    assert hp["final_logit_softcap"] == (c.get("final_logit_softcapping") or 0)
    assert hp["no_rope_layers"] == ([3] if fam == "smollm3" else [])
    assert hp["rope_freq_factors"] == {"llama3": "rope_freqs", "phi3": "longrope_short",
                                       "phi4mini": "longrope_long"}.get(fam, "none")
    assert hp["rope_dim"] == (12 if fam == "phi4mini" else F.head_dim(F.config(fam)))


@pytest.mark.parametrize("cfg,name", [
    ({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe"}, "qwen3_moe"),
    ({"architectures": ["MambaForCausalLM"], "model_type": "mamba"}, "mamba"),
    ({"architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v"}, "phi3_v"),
])
def test_unsupported_families_are_refused_by_name(tmp_path, cfg, name):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = run_kiln("bake", tmp_path, "-o", tmp_path / "off", "--quiet")
    assert r.returncode == 2
    assert name in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "off").exists()


def test_smollm3_other_nope_pattern_is_refused(work, tmp_path):
    hf = F.write_hf_folder("smollm3", tmp_path / "hf", SHARED)
    c = json.loads((hf / "config.json").read_text())
    c["no_rope_layers"] = [1, 0, 1, 1]
    (hf / "config.json").write_text(json.dumps(c))
    r = run_kiln("bake", hf, "-o", tmp_path / "off", "--quiet")
    assert r.returncode == 2 and "no_rope_layers[1]" in r.stderr, r.stderr


def test_fused_gguf_runs_only_after_bake(work):
    """The runtime never takes fused weights: a llama.cpp phi3 GGUF is split by kiln bake."""
    r = run_kiln("run", source(work, "phi3", "gguf"), "--raw", "--prompt", "a", "--max-tokens", 1)
    assert r.returncode == 2 and "bake it first" in r.stderr, r.stderr


def test_gemma2_offering_states_its_softcaps(work):
    """The soft-caps travel in the offering (GGUF keys llama.cpp reads, the manifest) and
    inspect shows them; the sliding layers keep the global RoPE base."""
    import gguf
    off = offering(work, "gemma2", "hf")
    f = gguf.GGUFReader(str(off / "model.gguf")).fields
    v = lambda k: f[k].contents()
    assert v("general.architecture") == "gemma2"
    assert v("gemma2.attn_logit_softcapping") == 2.0
    assert v("gemma2.final_logit_softcapping") == 3.0
    assert v("gemma2.attention.sliding_window") == 8
    assert v("gemma2.rope.freq_base_swa") == v("gemma2.rope.freq_base") == 10000.0
    hp = json.loads((off / "manifest.json").read_text())["hparams"]
    assert hp["attn_logit_softcap"] == 2.0 and hp["final_logit_softcap"] == 3.0
    assert hp["attn_scale"] == pytest.approx(1 / 4)  # query_pre_attn_scalar 16


@pytest.mark.parametrize("over, what", [
    ({"attn_logit_softcapping": None}, "attn_logit_softcapping"),
    ({"final_logit_softcapping": None}, "final_logit_softcapping"),
    ({"final_logit_softcapping": -1.0}, "soft-caps"),
    ({"query_pre_attn_scalar": 24}, "query_pre_attn_scalar"),
    ({"layer_types": ["full_attention", "sliding_attention"] * 2}, "layer_types"),
    ({"sliding_window_pattern": 3}, "sliding_window_pattern"),
    ({"sliding_window": 0}, "sliding window"),
    ({"hidden_activation": "gelu"}, "hidden_activation"),
])
def test_gemma2_folder_kiln_cannot_state_is_refused(tmp_path, over, what):
    hf = F.write_hf_folder("gemma2", tmp_path / "hf", SHARED)
    c = json.loads((hf / "config.json").read_text())
    c.update(over)
    (hf / "config.json").write_text(json.dumps(c))
    r = run_kiln("bake", hf, "-o", tmp_path / "off", "--quiet")
    assert r.returncode == 2, r.stderr
    assert what in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "off").exists()


@pytest.mark.parametrize("key, value, what", [
    ("gemma2.attn_logit_softcapping", 0.0, "soft-caps"),
    ("gemma2.final_logit_softcapping", float("nan"), "soft-caps"),
    ("gemma2.attention.sliding_window_pattern", [1, 0, 1, 0], "sliding_window_pattern"),
])
def test_gemma2_gguf_bad_keys_are_refused(tmp_path, key, value, what):
    """A llama.cpp gemma2 GGUF whose caps would divide by zero or are not numbers, or whose
    sliding layers are listed one by one: one line, exit 2, nothing written."""
    import gguf
    src = F.write_gguf("gemma2", tmp_path / "g.gguf", SHARED)
    rd = gguf.GGUFReader(str(src))
    wr = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "gemma2")
    for name, fld in rd.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", key):
            continue
        t = fld.types[0]
        val = fld.contents()
        if t == gguf.GGUFValueType.ARRAY:
            wr.add_key_value(name, val, t, sub_type=fld.types[-1])
        else:
            wr.add_key_value(name, val, t)
    if isinstance(value, list):
        wr.add_array(key, value)
    else:
        wr.add_float32(key, value)
    for t in rd.tensors:
        wr.add_tensor(t.name, np.array(t.data, np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    r = run_kiln("bake", tmp_path / "bad.gguf", "-o", tmp_path / "off", "--quiet")
    assert r.returncode == 2, r.stderr
    assert what in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "off").exists()


@pytest.mark.skipif(SANITIZED, reason="OpenVINO's plugin under ASan is covered by "
                    "test_openvino_ir; this is numbers")
@pytest.mark.parametrize("fam", [f for f in FAMS if F.FAMILIES[f].get("gemma")])
def test_gemma_openvino_slide_and_stateless_match_native(work, fam, tmp_path):
    """Gemma's two masks where llama.cpp cannot follow: a 32-slot window in 8-token chunks,
    generation far past W under --overflow slide (the ring: global layers see every kept slot,
    sliding ones only the last 8 positions), a prompt longer than W, and the stateless graph
    (its masks built in-graph), plain and sliding. kiln's OpenVINO backend on the CPU plugin
    gives the tokens of the native engine (f32 cache: both exact to float noise)."""
    from test_openvino_backend import env as ov_env
    off = tmp_path / "w32"
    r = run_kiln("bake", source(work, fam, "gguf"), "-o", off, "--quant", "keep", "--target",
                 "openvino", "--window", 32, "--chunk", 8, "--quiet")
    assert r.returncode == 0, r.stderr
    long = ("Once upon a time there was a little girl named Lily who loved to play in the park "
            "with her friends. One day she saw a big red ball")
    cases = [("Once upon a time", 80, ("--overflow", "slide")),
             (long, 24, ("--overflow", "slide")),
             ("Once upon a time", 20, ("--mode", "stateless")),
             (long, 12, ("--mode", "stateless", "--overflow", "slide"))]
    for prompt, n, extra in cases:
        docs = []
        for dev in ("cpu", "openvino:CPU"):
            r = run_kiln("run", off, "-t", 1, "--json", "--raw", "--prompt", prompt,
                         "--max-tokens", n, "--kv", "f32", "--device", dev, *extra,
                         env=ov_env())
            assert r.returncode == 0, r.stderr
            docs.append(json.loads(r.stdout))
        a, b = docs
        assert b["device"] == "openvino:CPU" and len(a["tokens"]) == n, extra
        assert b["tokens"] == a["tokens"], (fam, prompt[:20], extra)
    assert len(a["prompt_tokens"]) > 32
