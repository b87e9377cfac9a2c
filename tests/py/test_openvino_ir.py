"""The OpenVINO IR writer (src/backends/openvino): the IR of a baked offering is read by
OpenVINO's own reader with every input static, and run on its CPU plugin it computes what the
model holds.

Oracles: the llama2.c logits and greedy ids committed beside stories260K; a float64 numpy forward
pass over the weights as gguf-py dequantizes them (independent of kiln's reader and kernels); and
kiln's native engine (through tests/tools/kn_ov_tool).

OpenVINO's CPU plugin is asked for f32 inference and no dynamic quantization: by default it runs
bf16/f16 on CPUs that have them and quantizes activations to int8 in front of compressed weights,
which would hide a wrong weight behind a loose tolerance. With both off the IR matches the numpy
oracle to float32 rounding.
"""
import json
import subprocess

import gguf
import numpy as np
import openvino as ov
import pytest
from gguf import quants

from conftest import BUILD, SHARED, run_kiln

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
STORIES_DIR = SHARED / "models" / "stories260K"
SMOL_PROMPT = [504, 3575, 282, 4649, 314]  # "The capital of France is" (SmolLM2 tokenizer)


def tool(*args):
    exe = BUILD / "kn_ov_tool"
    if not exe.exists():
        pytest.fail(f"{exe} not built (run make)")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def bake_ir(src, out, *opts):
    r = run_kiln("bake", src, "-o", out, "--quiet", *opts)
    assert r.returncode == 0, r.stderr
    tool("write", out)
    return out


def test_writer_refuses_bad_group_and_leaves_nothing(stories, tmp_path):
    off = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", off, "--quiet").returncode == 0
    r = subprocess.run([str(BUILD / "kn_ov_tool"), "write", str(off), "16"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "group size 16" in r.stderr
    assert not list(off.glob("openvino_*"))


class Runner:
    """Drives the prefill and decode IRs of an offering with a numpy KV cache, the way a backend
    does: slot p holds position p, the mask is additive over [W cache slots | T new tokens].
    A model whose layers differ in window (Gemma) also takes sliding_mask: the same, with keys
    swa or more positions behind the query masked too."""

    def __init__(self, off, compile_decode=True, swa=0):
        self.swa = swa
        core = ov.Core()
        self.pre = core.compile_model(core.read_model(off / "openvino_model.xml"), "CPU", EXACT)
        self.dec = (core.compile_model(core.read_model(off / "openvino_decode.xml"), "CPU", EXACT)
                    if compile_decode else None)
        self.L, _, self.Hkv, self.W, self.D = self.pre.input("past_kv").get_shape()
        self.C = self.pre.input("input_ids").get_shape()[1]
        self.past = np.zeros((self.L, 2, self.Hkv, self.W, self.D), np.float32)
        names = {n for i in self.pre.inputs for n in i.get_names()}
        assert ("sliding_mask" in names) == (swa > 0), names

    def masks(self, mask, qpos, kpos, feed):
        """feed["attention_mask"] = mask; with a sliding window, feed["sliding_mask"] = mask
        with the keys at kpos (per column) swa or more behind qpos (per row) masked."""
        feed["attention_mask"] = mask
        if self.swa:
            far = (np.asarray(qpos)[:, None] - np.asarray(kpos)[None, :]) >= self.swa
            feed["sliding_mask"] = np.where(far[None, None], -np.inf, mask).astype(np.float32)
        return feed

    def prefill(self, ids, p0, logit_row=None):
        """One chunk: ids (<= C) at positions p0..; rows past len(ids) are padding."""
        C, W, n = self.C, self.W, len(ids)
        x = np.zeros((1, C), np.int32)
        x[0, :n] = ids
        mask = np.full((1, 1, C, W + C), -np.inf, np.float32)
        mask[0, 0, :, :p0] = 0
        for i in range(C):  # causal among the new rows; padding rows too, so no row is all -inf
            mask[0, 0, i, W:W + i + 1] = 0
        # slot s holds position s; new column j position p0 + j. A row always sees itself, so
        # the window never empties a row.
        kpos = np.concatenate([np.arange(W), p0 + np.arange(C)])
        qpos = p0 + np.arange(C)
        feed = self.masks(mask, qpos, kpos, {})
        if self.swa:
            for i in range(C):
                feed["sliding_mask"][0, 0, i, W + i] = 0
        r = self.pre({"input_ids": x,
                      "position_ids": np.arange(p0, p0 + C, dtype=np.int32)[None],
                      **feed,
                      "logit_index": np.array([n - 1 if logit_row is None else logit_row],
                                              np.int32),
                      "past_kv": self.past})
        self.past[:, :, :, p0:p0 + n] = r["new_kv"][:, :, :, :n]
        return r["logits"][0]

    def prompt(self, ids):
        logits = None
        for p0 in range(0, len(ids), self.C):
            logits = self.prefill(ids[p0:p0 + self.C], p0)
        return logits

    def decode(self, tok, p):
        mask = np.full((1, 1, 1, self.W + 1), -np.inf, np.float32)
        mask[0, 0, 0, :p] = 0
        mask[0, 0, 0, self.W] = 0
        feed = self.masks(mask, [p], np.concatenate([np.arange(self.W), [p]]), {})
        r = self.dec({"input_ids": np.array([[tok]], np.int32),
                      "position_ids": np.array([[p]], np.int32),
                      **feed, "past_kv": self.past})
        self.past[:, :, :, p] = r["new_kv"][:, :, :, 0]
        return r["logits"][0]

    def greedy(self, ids, n):
        logits, out, p = self.prompt(ids), [], len(ids)
        for _ in range(n):
            out.append(int(np.argmax(logits)))
            logits = self.decode(out[-1], p)
            p += 1
        return out


def numpy_forward(path, ids):
    """Logits [n, V] of a llama-family GGUF over ids at positions 0.., in float64, with weights
    dequantized by gguf-py: llama.cpp's math (RMSNorm, RoPE on adjacent pairs for llama and on
    halves for qwen2, GQA, SwiGLU, qwen2's q/k/v biases)."""
    r = gguf.GGUFReader(str(path))
    w = {t.name: quants.dequantize(t.data, t.tensor_type).reshape(
        tuple(int(x) for x in reversed(t.shape))).astype(np.float64) for t in r.tensors}
    a = r.fields["general.architecture"].contents()
    assert a in ("llama", "qwen2")
    f = lambda k: r.fields[f"{a}.{k}"].contents()  # noqa: E731
    L, H, Hkv, E = (f("block_count"), f("attention.head_count"), f("attention.head_count_kv"),
                    f("embedding_length"))
    D, eps, g = E // H, f("attention.layer_norm_rms_epsilon"), H // Hkv
    base = f("rope.freq_base") if f"{a}.rope.freq_base" in r.fields else 10000.0
    n = len(ids)
    ang = np.arange(n)[:, None] * base ** (-np.arange(0, D, 2) / D)[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]

    def rms(v, wt):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * wt

    def rope(v):
        if a == "qwen2":
            x0, x1 = v[..., :D // 2], v[..., D // 2:]
            return np.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1)
        o = np.empty_like(v)
        o[..., 0::2] = v[..., 0::2] * cos - v[..., 1::2] * sin
        o[..., 1::2] = v[..., 0::2] * sin + v[..., 1::2] * cos
        return o

    def lin(h, name):
        y = h @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    causal = np.triu(np.full((n, n), -np.inf), 1)
    swa = f("attention.sliding_window") if f"{a}.attention.sliding_window" in r.fields else 0
    if swa:  # a query at i sees keys i - swa < j <= i
        causal += np.tril(np.full((n, n), -np.inf), -swa)
    x = w["token_embd.weight"][ids]
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = rope(lin(h, p + "attn_q").reshape(n, H, D))
        k = rope(lin(h, p + "attn_k").reshape(n, Hkv, D))
        v = lin(h, p + "attn_v").reshape(n, Hkv, D)
        o = np.empty((n, H, D))
        for j in range(H):
            s = q[:, j] @ k[:, j // g].T / np.sqrt(D) + causal
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, j] = (s / s.sum(-1, keepdims=True)) @ v[:, j // g]
        x = x + o.reshape(n, H * D) @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        gate = h @ w[p + "ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w[p + "ffn_up.weight"].T)) @ \
            w[p + "ffn_down.weight"].T
    return rms(x, w["output_norm.weight"]) @ w.get("output.weight", w["token_embd.weight"]).T


def golden():
    ref, ids, prompt = {}, [], None
    for line in open(STORIES_DIR / "logits_once_upon_pos0-3.txt"):
        f = line.split()
        if f and f[0] == "L":
            ref.setdefault(int(f[1]), {})[int(f[2])] = float(f[3])
    for line in open(STORIES_DIR / "greedy_once_upon_64.ids"):
        f = line.split()
        if f and f[0] == "PROMPT":
            prompt = [int(t) for t in f[1:]]
        elif f and f[0] == "ID" and int(f[1]) >= len(prompt) - 1:
            ids.append(int(f[3]))
    logits = {p: np.array([v[i] for i in range(len(v))]) for p, v in ref.items()}
    return prompt, logits, ids


def assert_static(xml, graph):
    m = ov.Core().read_model(xml)
    assert not m.is_dynamic()
    for i in m.inputs:
        assert i.get_partial_shape().is_static, i.get_any_name()
    got_in = [(i.get_any_name(), list(i.get_shape())) for i in m.inputs]
    got_out = [(o.get_any_name(), list(o.get_shape())) for o in m.outputs]
    assert got_in == [(io["name"], io["shape"]) for io in graph["inputs"]]
    assert got_out == [(io["name"], io["shape"]) for io in graph["outputs"]]


def manifest_graphs(off):
    graphs = json.loads((off / "manifest.json").read_text())["contract"]["graphs"]
    return {g["name"]: g for g in graphs}


# ---- the 4-bit packing the writer relies on ----

NIBBLE_XML = """<?xml version="1.0"?>
<net name="nibbles" version="11"><layers>
<layer id="0" name="c" type="Const" version="opset1">
 <data element_type="{et}" shape="4" offset="0" size="2" />
 <output><port id="0" precision="{prec}"><dim>4</dim></port></output></layer>
<layer id="1" name="f" type="Convert" version="opset1"><data destination_type="f32" />
 <input><port id="0" precision="{prec}"><dim>4</dim></port></input>
 <output><port id="1" precision="FP32" names="y"><dim>4</dim></port></output></layer>
<layer id="2" name="r" type="Result" version="opset1">
 <input><port id="0" precision="FP32"><dim>4</dim></port></input></layer>
</layers><edges>
<edge from-layer="0" from-port="0" to-layer="1" to-port="0" />
<edge from-layer="1" from-port="1" to-layer="2" to-port="0" />
</edges></net>
"""


@pytest.mark.parametrize("et,prec,data,want", [
    ("u4", "U4", b"\x21\x43", [1, 2, 3, 4]),
    ("i4", "I4", b"\xf8\x07", [-8, -1, 7, 0]),
])
def test_nibble_order_on_cpu_plugin(tmp_path, et, prec, data, want):
    """Element 2k is the low nibble of byte k, i4 is two's complement: what ir_weights.c writes."""
    (tmp_path / "n.xml").write_text(NIBBLE_XML.format(et=et, prec=prec))
    (tmp_path / "n.bin").write_bytes(data)
    core = ov.Core()
    m = core.read_model(tmp_path / "n.xml")
    out = core.compile_model(m, "CPU", EXACT)({})
    assert list(next(iter(out.values()))) == want


# ---- stories260K ----

@pytest.fixture(scope="module")
def stories_keep(stories, tmp_path_factory):
    # C = 4 so the 5-token prompt takes two chunks, the second padded.
    return bake_ir(stories, tmp_path_factory.mktemp("ov") / "keep", "--quant", "keep",
                   "--window", "64", "--chunk", "4")


def test_stories_ir_is_static(stories_keep):
    graphs = manifest_graphs(stories_keep)
    assert_static(stories_keep / "openvino_model.xml", graphs["prefill"])
    assert_static(stories_keep / "openvino_decode.xml", graphs["decode"])
    assert_static(stories_keep / "openvino_stateless.xml", graphs["stateless"])


class Stateless:
    """openvino_stateless.xml: one window of W ids, padded with 0 and mask 0."""

    def __init__(self, off):
        core = ov.Core()
        self.m = core.compile_model(core.read_model(off / "openvino_stateless.xml"), "CPU", EXACT)
        self.W = self.m.input("input_ids").get_shape()[1]

    def __call__(self, ids, pad=0):
        x = np.full((1, self.W), pad, np.int32)
        x[0, :len(ids)] = ids
        mask = np.zeros((1, self.W), np.int32)
        mask[0, :len(ids)] = 1
        return self.m({"input_ids": x, "attention_mask": mask})["logits"][0]


def test_stories_stateless_logits_match_llama2c(stories_keep):
    prompt, ref, _ = golden()
    run = Stateless(stories_keep)
    for pos, want in ref.items():
        got = run(prompt[:pos + 1])
        np.testing.assert_allclose(got[:len(want)], want, rtol=1e-4, atol=1e-4)
        # the padding ids are masked out: any valid id gives the same logits
        np.testing.assert_array_equal(run(prompt[:pos + 1], pad=7), got)


def test_stories_logits_match_llama2c(stories_keep):
    prompt, ref, _ = golden()
    run = Runner(stories_keep, compile_decode=False)
    for pos, want in ref.items():  # positions 0-3 are rows of the first chunk
        got = run.prefill(prompt[:4], 0, logit_row=pos)
        # measured max |err| 1.1e-5: f32 summation order against llama2.c's
        np.testing.assert_allclose(got[:len(want)], want, rtol=1e-4, atol=1e-4)


def test_stories_greedy_matches_llama2c(stories_keep):
    prompt, _, ids = golden()
    assert Runner(stories_keep).greedy(prompt, 16) == ids[:16]


@pytest.mark.parametrize("quant,const", [
    ("q4_0", 'element_type="i4" shape="64,2,32"'),
    ("q4_1", 'element_type="u4" shape="64,2,32"'),
    ("q8_0", 'element_type="i8" shape="64,2,32"'),
    ("int4_sym_g128", 'element_type="i4" shape="64,1,64"'),  # 128 > row 64: one group per row
    ("f16", 'element_type="f16" shape="64,64"'),
])
def test_stories_quantized_weights_exact(stories, tmp_path, quant, const):
    """Each GGUF type in its compressed pattern computes exactly the weights gguf-py reads."""
    off = bake_ir(stories, tmp_path / quant, "--quant", quant, "--window", "32", "--chunk", "8")
    assert const in (off / "openvino_model.xml").read_text()
    prompt, _, _ = golden()
    run = Runner(off, compile_decode=False)
    want = numpy_forward(off / "model.gguf", prompt)
    for pos in range(len(prompt)):
        got = run.prefill(prompt, 0, logit_row=pos)
        np.testing.assert_allclose(got, want[pos], rtol=1e-4, atol=1e-4)


# ---- SmolLM2-135M-Instruct, Q4_1 (and its Q8_0 tied embeddings) ----

@pytest.fixture(scope="module")
def smol(smollm_gguf, tmp_path_factory):
    return bake_ir(smollm_gguf, tmp_path_factory.mktemp("ov") / "smol", "--window", "64",
                   "--chunk", "8")


def test_smollm2_ir(smol):
    graphs = manifest_graphs(smol)
    assert_static(smol / "openvino_model.xml", graphs["prefill"])
    assert_static(smol / "openvino_decode.xml", graphs["decode"])
    xml = (smol / "openvino_model.xml").read_text()
    assert 'element_type="u4"' in xml and 'element_type="i8"' in xml  # weights stay compressed

    run = Runner(smol)
    # The CPU plugin recognised the pattern: every Q4_1 matmul (7 per layer) became a
    # FullyConnected on the u4 constant rather than being folded into f32 weights.
    fc_u4 = [op for op in run.pre.get_runtime_model().get_ordered_ops()
             if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"
             and op.input(1).get_element_type() == ov.Type.u4]
    assert len(fc_u4) == 7 * 30
    got = run.prompt(SMOL_PROMPT)
    # The IR against float64 numpy over gguf-py's dequantization: the same weights exactly,
    # so only f32 rounding over 30 layers separates them (measured 3.6e-5 on |logits| <= 20).
    want = numpy_forward(smol / "model.gguf", SMOL_PROMPT)[-1]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)

    # Against the native engine, which (like llama.cpp) rounds activations to 8 bits before its
    # int4 dot products: that costs up to ~1 logit here (measured 0.91 of |logits| <= 20), so
    # the check is the argmax and a 10 %-of-range bound, and the first greedy tokens.
    out = tool("native", smol, 4, *SMOL_PROMPT).splitlines()
    native = np.array(out[0].split()[1:], np.float32)
    assert int(np.argmax(got)) == int(np.argmax(native))
    assert np.abs(got - native).max() <= 0.1 * np.abs(native).max()
    run.past[:] = 0
    assert run.greedy(SMOL_PROMPT, 3) == [int(t) for t in out[1].split()[1:4]]


# ---- Qwen2: NeoX RoPE, q/k/v biases, untied classifier (a small random model) ----

def write_qwen2(path, L=2, E=64, H=4, Hkv=2, F=96, V=300, window=16, chunk=4, swa=0):
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(L)
    w.add_context_length(256)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_uint32("kiln.contract.window", window)
    w.add_uint32("kiln.contract.chunk", chunk)
    w.add_uint32("kiln.contract.sink", 2)
    if swa:
        w.add_uint32("qwen2.attention.sliding_window", swa)
    D = E // H

    def t(name, *shape, scale=0.2, off=0.0):
        w.add_tensor(name, (off + scale * rng.standard_normal(shape)).astype(np.float32))

    t("token_embd.weight", V, E, scale=1.0)
    for l in range(L):
        p = f"blk.{l}."
        t(p + "attn_norm.weight", E, scale=0.1, off=1.0)
        t(p + "ffn_norm.weight", E, scale=0.1, off=1.0)
        t(p + "attn_q.weight", H * D, E)
        t(p + "attn_k.weight", Hkv * D, E)
        t(p + "attn_v.weight", Hkv * D, E)
        t(p + "attn_q.bias", H * D, scale=0.5)
        t(p + "attn_k.bias", Hkv * D, scale=0.5)
        t(p + "attn_v.bias", Hkv * D, scale=0.5)
        t(p + "attn_output.weight", E, H * D)
        t(p + "ffn_gate.weight", F, E)
        t(p + "ffn_up.weight", F, E)
        t(p + "ffn_down.weight", E, F)
    t("output_norm.weight", E, scale=0.1, off=1.0)
    t("output.weight", V, E)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_qwen2_neox_bias_untied(tmp_path):
    write_qwen2(tmp_path / "model.gguf")
    tool("write", tmp_path)
    ids = [5, 17, 250, 3, 99, 42]
    want = numpy_forward(tmp_path / "model.gguf", ids)
    run = Runner(tmp_path)
    got = [run.prefill(ids[:4], 0, logit_row=i) for i in range(4)]
    got.append(run.prefill(ids[4:], 4))  # positions 4, 5 in a padded chunk; logits of 5
    got.insert(4, None)
    for p in (0, 1, 2, 3, 5):
        np.testing.assert_allclose(got[p], want[p], rtol=1e-4, atol=1e-4)
    # and decode: position 5 again through the decode graph after position 4 was cached
    run.past[:] = 0
    run.prompt(ids[:5])
    np.testing.assert_allclose(run.decode(ids[5], 5), want[5], rtol=1e-4, atol=1e-4)
    # and the stateless graph (W = 16) over every prefix
    sl = Stateless(tmp_path)
    for n in range(1, len(ids) + 1):
        np.testing.assert_allclose(sl(ids[:n]), want[n - 1], rtol=1e-4, atol=1e-4)


def test_stateless_sliding_window(tmp_path):
    """A sliding window of 3 in the stateless graph's own mask; the padding rows, more than 3
    past the last real token, must not turn NaN (they would poison the next layer)."""
    write_qwen2(tmp_path / "model.gguf", swa=3)
    tool("write", tmp_path)
    ids = [5, 17, 250, 3, 99, 42]
    want = numpy_forward(tmp_path / "model.gguf", ids)
    write_qwen2(tmp_path / "full.gguf")  # the same weights without the window
    assert np.abs(want[5] - numpy_forward(tmp_path / "full.gguf", ids)[5]).max() > 0.1
    sl = Stateless(tmp_path)
    for n in range(1, len(ids) + 1):
        np.testing.assert_allclose(sl(ids[:n]), want[n - 1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", ["openvino", "npu"])
def test_bake_target_writes_static_ir_matching_the_manifest(stories, tmp_path, target):
    off = tmp_path / "off"
    r = run_kiln("bake", stories, "-o", off, "--quiet", "--target", target, "--window", 64,
                 "--chunk", 16)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((off / "manifest.json").read_text())
    files = {"prefill": "openvino_model.xml", "decode": "openvino_decode.xml",
             "stateless": "openvino_stateless.xml"}
    assert manifest["openvino"] == files
    graphs = {g["name"]: g for g in manifest["contract"]["graphs"]}
    assert set(graphs) == set(files)
    core = ov.Core()
    for name, xml in files.items():
        model = core.read_model(str(off / xml))
        assert not model.is_dynamic()
        assert all(p.get_partial_shape().is_static for p in model.inputs), name
        got = [(p.get_any_name(), list(p.get_partial_shape().to_shape())) for p in model.inputs]
        want = [(io["name"], io["shape"]) for io in graphs[name]["inputs"]]
        assert got == want, name
        types = {p.get_any_name(): p.get_element_type() for p in model.inputs}
        assert types == {io["name"]: {"i32": ov.Type.i32, "f32": ov.Type.f32}[io["dtype"]]
                         for io in graphs[name]["inputs"]}, name
        outs = {p.get_any_name(): list(p.get_partial_shape().to_shape()) for p in model.outputs}
        assert outs == {io["name"]: io["shape"] for io in graphs[name]["outputs"]}
    if target == "npu":
        assert manifest["quantization"]["scheme"] == "int4_sym_g128"
