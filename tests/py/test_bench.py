"""The speed benchmark's instruments: the random-weight model generator
(scripts/make_bench_models.py) checked with gguf-py and kiln, and `kiln bench --floor / -d`.
Timings themselves are never asserted (GUIDE: speed lives in benchmarks)."""
import functools
import json
import subprocess
import sys

import gguf
import numpy as np
import pytest

from conftest import ROOT, SANITIZED_ONE_TABLE, run_kiln

sys.path.insert(0, str(ROOT / "scripts"))
import make_bench_models as mbm  # noqa: E402

TINY = mbm.SHAPES["tiny"]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, smollm_gguf):
    path = tmp_path_factory.mktemp("bm") / "tiny-f16.gguf"
    mbm.write_f16_gguf("tiny", path)
    return path


def test_generator_writes_the_shape_gguf_py_reads(tiny_gguf, smollm_gguf):
    r = gguf.GGUFReader(str(tiny_gguf))
    E, F, V, D = TINY["E"], TINY["F"], TINY["V"], TINY["E"] // TINY["H"]
    got = {t.name: (t.tensor_type, [int(x) for x in t.shape]) for t in r.tensors}
    F16, F32 = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    want = {"token_embd.weight": (F16, [E, V]), "output.weight": (F16, [E, V]),
            "output_norm.weight": (F32, [E])}
    for i in range(TINY["L"]):
        want.update({f"blk.{i}.attn_q.weight": (F16, [E, TINY["H"] * D]),
                     f"blk.{i}.attn_k.weight": (F16, [E, TINY["Hkv"] * D]),
                     f"blk.{i}.attn_v.weight": (F16, [E, TINY["Hkv"] * D]),
                     f"blk.{i}.attn_output.weight": (F16, [TINY["H"] * D, E]),
                     f"blk.{i}.ffn_gate.weight": (F16, [E, F]),
                     f"blk.{i}.ffn_up.weight": (F16, [E, F]),
                     f"blk.{i}.ffn_down.weight": (F16, [F, E]),
                     f"blk.{i}.attn_norm.weight": (F32, [E]),
                     f"blk.{i}.ffn_norm.weight": (F32, [E])})
    assert got == want
    q = next(t for t in r.tensors if t.name == "blk.1.attn_q.weight")
    w = np.asarray(q.data, dtype=np.float32)
    assert 0.015 < w.std() < 0.025 and abs(w.mean()) < 0.005   # N(0, 0.02), not zeros
    assert int(r.fields["llama.block_count"].contents()) == TINY["L"]
    assert int(r.fields["llama.attention.head_count_kv"].contents()) == TINY["Hkv"]
    # the tokenizer: SmolLM2's first V tokens, and only merges among them
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    src = gguf.GGUFReader(str(smollm_gguf)).fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == V and tokens == src[:V]
    kept = set(tokens)
    merges = r.fields["tokenizer.ggml.merges"].contents()
    assert merges and all(a in kept and b in kept and a + b in kept
                          for a, b in (m.split(" ", 1) for m in merges))


def test_kiln_inspects_and_tokenizes_the_generated_gguf(tiny_gguf):
    r = run_kiln("inspect", tiny_gguf, "--json", check=True)
    assert json.loads(r.stdout)
    r = run_kiln("tokenize", tiny_gguf, "--text", "Hello world", "--json", check=True)
    assert json.loads(r.stdout)


@functools.lru_cache(maxsize=None)
def reader(path):
    """gguf-py's reading of a file, once a file: a 262k-token vocabulary takes seconds."""
    return gguf.GGUFReader(str(path))


def decode_bytes(path):
    """Bytes a decode step reads, from gguf-py: layer matrices + the output matrix."""
    r = reader(str(path))
    names = {t.name for t in r.tensors}
    out = "output.weight" if "output.weight" in names else "token_embd.weight"
    return sum(int(t.n_bytes) for t in r.tensors
               if (t.name.startswith("blk.") and len(t.shape) >= 2) or t.name == out)


def kv_shape(path):
    """(layers, KV heads, head size, sliding window or 0) as gguf-py reads the metadata."""
    r = reader(str(path))

    def get(key, default=None):
        f = r.get_field(key)
        return default if f is None else f.contents()

    arch = get("general.architecture")
    L, Hkv = get(f"{arch}.block_count"), get(f"{arch}.attention.head_count_kv")
    D = get(f"{arch}.attention.key_length",
            get(f"{arch}.embedding_length") // get(f"{arch}.attention.head_count"))
    swa = get(f"{arch}.attention.sliding_window", 0) if arch == "gemma3" else 0
    return L, Hkv, D, swa


def kv_step_bytes(path, n_ctx, kv="f16"):
    """Cached K and V bytes a decode step reads with n_ctx positions cached: every layer's KV
    heads over n_ctx rows, a sliding layer's over at most its window. Gemma 3's pattern (every
    6th layer global) is llama.cpp's, not the file's (src/llama-model.cpp, LLM_ARCH_GEMMA3:
    hparams.set_swa_pattern(6))."""
    L, Hkv, D, swa = kv_shape(str(path))
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
    row = {"f16": 2 * D, "f32": 4 * D, "q8_0": D // block * size}[kv]
    rows = sum(n_ctx if not swa or l % 6 == 5 else min(n_ctx, swa) for l in range(L))
    return 2 * Hkv * row * rows


def mean_kv_bytes(path, depth, n, kv="f16"):
    """The mean over a tg test's n steps: step i attends depth + i + 1 positions."""
    return sum(kv_step_bytes(path, depth + i + 1, kv) for i in range(n)) / n


# under ASan the tiny shape only (the same code; SmolLM2's steps cost seconds there)
@pytest.mark.parametrize("which", ["tiny"] if SANITIZED_ONE_TABLE else ["tiny", "smollm2"])
def test_bench_floor_json_fields(which, tiny_gguf, smollm_gguf):
    path = tiny_gguf if which == "tiny" else smollm_gguf
    r = run_kiln("bench", path, "-p", "8", "-n", "4", "-d", "0,5", "-t", "1,2", "-r", "2",
                 "--floor", "--json", "--device", "cpu", check=True)
    rows = json.loads(r.stdout)
    assert [(x["n_prompt"], x["n_gen"], x["n_depth"], x["n_threads"]) for x in rows] == \
        [(8, 0, 0, 1), (8, 0, 5, 1), (0, 4, 0, 1), (0, 4, 5, 1),
         (8, 0, 0, 2), (8, 0, 5, 2), (0, 4, 0, 2), (0, 4, 5, 2)]
    want = decode_bytes(path)
    for x in rows:
        assert len(x["samples_ts"]) == 2 and all(s > 0 for s in x["samples_ts"])
        assert x["avg_ts"] == pytest.approx(sum(x["samples_ts"]) / 2, rel=1e-3, abs=1e-3)
        if x["n_gen"] == 0:
            assert "weight_bytes" not in x      # the floor is a decode figure
            continue
        assert x["weight_bytes"] == want
        # both files hold only types the kernels take (F16 / Q4_1 / Q8_0): nothing widened
        assert x["resident_bytes"] == want
        assert x["bw_gbs"] > 0
        kv = mean_kv_bytes(path, x["n_depth"], x["n_gen"])
        assert x["kv_bytes"] == pytest.approx(kv, abs=1)
        assert x["floor_ts"] == pytest.approx(x["bw_gbs"] * 1e9 / (want + kv), rel=1e-3)
        assert x["pct_floor"] == pytest.approx(100 * x["avg_ts"] / x["floor_ts"], rel=1e-2)


@pytest.mark.skipif(SANITIZED_ONE_TABLE, reason="seconds of prefill a case under ASan; the "
                    "same code as the tiny shape's case above")
@pytest.mark.parametrize("which,args", [
    ("smollm2", ["--kv", "q8_0"]),
    ("smollm2", ["--kv", "f32", "-np", "1,2"]),
    ("gemma3", []),   # past its 512-slot window: 15 of 18 layers stop counting there
])
def test_bench_floor_counts_the_kv_cache(which, args, smollm_gguf):
    if which == "gemma3":
        out = subprocess.run([str(ROOT / "scripts" / "fetch_models.sh"), "gemma3"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        path, depth = out.stdout.strip(), 600
    else:
        path, depth = smollm_gguf, 40
    kv = args[1] if args else "f16"
    r = run_kiln("bench", path, "-p", "0", "-n", "3", "-d", f"0,{depth}", "-t", "1", "-r", "1",
                 "--floor", "--json", "--device", "cpu", *args, check=True)
    rows = json.loads(r.stdout)
    assert rows and all(x["type_k"] == kv for x in rows)
    want = decode_bytes(path)
    for x in rows:
        got = mean_kv_bytes(path, x["n_depth"], 3, kv)
        assert x["kv_bytes"] == pytest.approx(got, abs=1)
        p = x["n_parallel"]
        # one pass reads the weights once for all p sessions, and each session's cache
        assert x["floor_ts"] == pytest.approx(p * x["bw_gbs"] * 1e9 / (want + p * got),
                                              rel=1e-3)
    deep = [x for x in rows if x["n_depth"] == depth]
    assert deep and deep[0]["kv_bytes"] > 10 * [x for x in rows if x["n_depth"] == 0][0]["kv_bytes"]


def test_bench_text_table_has_floor_columns(smollm_gguf):
    r = run_kiln("bench", smollm_gguf, "-p", "0", "-n", "2", "-d", "3", "-t", "1", "-r", "1",
                 "--floor", "--device", "cpu", check=True)
    head, _, row = r.stdout.strip().splitlines()
    assert "% of floor" in head and "tg2 @ d3" in row
    assert len(row.split("|")) == len(head.split("|"))


@pytest.mark.parametrize("args,msg", [
    (["-d", "-1"], "-d"),
    (["-d", "x"], "-d"),
    (["-d", ""], "-d"),
    (["-d"], "-d"),
    (["-d", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"], "-d"),
    (["-d", "1000", "-n", "30", "-p", "0"], "window"),   # 1000 + 30 > W 1024
    (["-d", "1000", "-p", "30", "-n", "0"], "window"),
    (["-d", "1000", "-n", "24", "-p", "0"], "window"),   # decode keeps one slot free
    (["--window", "0"], "--window"),
    (["--window", "big"], "--window"),
    (["--chunk", "-3"], "--chunk"),
    (["--chunk"], "--chunk"),
    (["--window", "64", "--chunk", "128"], "chunk"),
    (["--floor=yes"], "--floor"),
    (["-np", "0"], "-np"),
    (["-np", "65"], "-np"),
    (["--parallel", "two"], "-np"),
])
def test_bench_bad_depth_or_contract_exits_2(smollm_gguf, args, msg):
    r = run_kiln("bench", smollm_gguf, "-t", "1", "-r", "1", *args, "--device", "cpu")
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""                                # no half-printed table


def test_bench_parallel_rows(tiny_gguf):
    """-np: tg rows for each session count (pp rows once, at 1), every session filled to -d
    first; llama-batched-bench's S_TG is all sessions' tokens over the common wall time."""
    r = run_kiln("bench", tiny_gguf, "-p", "4", "-n", "3", "-d", "2", "-t", "2", "-r", "2",
                 "-np", "1,3", "--json", "--device", "cpu", check=True)
    rows = json.loads(r.stdout)
    assert [(x["n_prompt"], x["n_gen"], x["n_depth"], x["n_parallel"]) for x in rows] == \
        [(4, 0, 2, 1), (0, 3, 2, 1), (0, 3, 2, 3)]
    assert all(len(x["samples_ts"]) == 2 and min(x["samples_ts"]) > 0 for x in rows)
    r = run_kiln("bench", tiny_gguf, "-p", "0", "-n", "2", "-t", "1", "-r", "1", "-np", "2",
                 "--device", "cpu", check=True)
    assert "tg2 x2" in r.stdout


def test_bench_depth_fills_to_the_last_slot(smollm_gguf):
    """A depth that leaves exactly room for the test runs (W 256: 251 + 4 decode steps, the
    last slot kept free as generation keeps it; 251 + 5 prefilled), in both modes; the contract
    given for the GGUF is the one reported. (Under the sanitizers W 64: every stateless step
    recomputes the whole window, minutes at W 256 on a Debug ASan build.)"""
    W, C = (64, 16) if SANITIZED_ONE_TABLE else (256, 64)
    d = str(W - 5)
    r = run_kiln("bench", smollm_gguf, "-p", "5", "-n", "4", "-d", d, "-t", "1",
                 "-r", "1", "--mode", "kv,stateless", "--window", str(W), "--chunk", str(C),
                 "--json", "--device", "cpu", check=True)
    rows = json.loads(r.stdout)
    assert [(x["mode"], x["n_prompt"], x["n_gen"], x["n_depth"]) for x in rows] == \
        [("kv", 5, 0, W - 5), ("kv", 0, 4, W - 5),
         ("stateless", 5, 0, W - 5), ("stateless", 0, 4, W - 5)]
    assert all(x["window"] == W and x["chunk"] == C for x in rows)
    r = run_kiln("bench", smollm_gguf, "-p", "0", "-n", "5", "-d", d, "-t", "1",
                 "--window", str(W), "--chunk", str(C), "--device", "cpu")
    assert r.returncode == 2 and f"-d {d} + -n 5" in r.stderr and r.stdout == "", r.stderr


def test_bench_offering_keeps_its_contract(tmp_path, smollm_gguf):
    run_kiln("bake", smollm_gguf, "-o", tmp_path / "off", "--window", "256", "--chunk", "32",
             "--quiet", check=True)
    r = run_kiln("bench", tmp_path / "off", "-p", "8", "-n", "0", "-t", "1", "-r", "1",
                 "--json", "--device", "cpu", check=True)
    assert [(x["window"], x["chunk"]) for x in json.loads(r.stdout)] == [(256, 32)]
    r = run_kiln("bench", tmp_path / "off", "-d", "250", "-n", "8", "-p", "0", "-t", "1",
                 "--device", "cpu")
    assert r.returncode == 2 and "256" in r.stderr, r.stderr


def test_generator_hf_folder_bakes_to_the_same_shapes(tmp_path, smollm_gguf, tiny_gguf):
    hf = mbm.ensure_hf("tiny", tmp_path, log=lambda m: None)
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["torch_dtype"] == "bfloat16"
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(hf / "tokenizer.json"))
    assert tok.get_vocab_size() == TINY["V"]
    run_kiln("bake", hf, "-o", tmp_path / "off", "--quant", "keep", "--quiet", check=True)
    baked = gguf.GGUFReader(str(tmp_path / "off" / "model.gguf"))
    ref = gguf.GGUFReader(str(tiny_gguf))
    shapes = {t.name: [int(x) for x in t.shape] for t in baked.tensors}
    assert shapes == {t.name: [int(x) for x in t.shape] for t in ref.tensors}
    assert all(t.tensor_type == gguf.GGMLQuantizationType.BF16 for t in baked.tensors
               if len(t.shape) >= 2)
