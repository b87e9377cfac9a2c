"""Hostile and broken inputs to `kiln bake` / `kiln inspect`: one line on stderr naming the file and
the reason, exit status 2, no crash, no hang, nothing left behind."""
import json
import os
import random
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import run_kiln
from test_bake import write_hf_folder


def assert_clean_failure(r, out_dir, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kiln: ")
    for w in words:
        assert w in lines[0], (w, lines[0])
    if out_dir is not None:
        assert not out_dir.exists()
        leftovers = [p for p in out_dir.parent.iterdir() if p.name.startswith(out_dir.name + ".")]
        assert not leftovers, leftovers


def bake_fails(src, tmp_path, *words, extra=()):
    out = tmp_path / "off"
    r = run_kiln("bake", src, "-o", out, "--quiet", *extra, timeout=60)
    assert_clean_failure(r, out, *words)
    r = run_kiln("inspect", src, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_missing_path(tmp_path):
    bake_fails(tmp_path / "nope.gguf", tmp_path, "nope.gguf", "no such file")


def test_unreadable_file(tmp_path):
    p = tmp_path / "locked.gguf"
    p.write_bytes(b"GGUF")
    p.chmod(0)
    if os.geteuid() == 0:
        # root reads anything; a directory where a file is expected is the unreadable case here
        p.chmod(0o644)
        p = tmp_path / "dir.gguf"
        p.mkdir()
        (p / "x").write_text("x")
        bake_fails(p, tmp_path, "dir.gguf")
    else:
        bake_fails(p, tmp_path, "locked.gguf", "cannot open")


@pytest.mark.parametrize("cut", [0, 3, 7, 20, 100, 5000, -1])
def test_truncated_gguf(stories, tmp_path, cut):
    data = stories.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    bake_fails(p, tmp_path, "cut.gguf")


def test_bit_flips_never_crash(stories, tmp_path):
    """Random single-bit flips in the header region: either a clean error or a valid bake."""
    data = bytearray(stories.read_bytes())
    rng = random.Random(1234)
    header_end = 12000  # metadata + tensor infos of stories260K
    for i in range(40):
        d = bytearray(data)
        pos = rng.randrange(0, header_end)
        d[pos] ^= 1 << rng.randrange(8)
        p = tmp_path / f"flip{i}.gguf"
        p.write_bytes(bytes(d))
        out = tmp_path / f"off{i}"
        r = run_kiln("bake", p, "-o", out, "--quiet", "--quant", "keep", timeout=60)
        assert r.returncode in (0, 2), (pos, r.returncode, r.stderr)
        if r.returncode == 2:
            assert_clean_failure(r, out)
        else:
            assert (out / "manifest.json").exists()


def patch_u64(data, offset, value):
    d = bytearray(data)
    d[offset:offset + 8] = struct.pack("<Q", value)
    return bytes(d)


@pytest.mark.parametrize("offset,value,word", [
    (8, 1 << 62, "tensor count"),
    (16, 1 << 62, "metadata count"),
    (24, 1 << 50, "absurd"),          # length of the first key
])
def test_absurd_counts(stories, tmp_path, offset, value, word):
    p = tmp_path / "absurd.gguf"
    p.write_bytes(patch_u64(stories.read_bytes(), offset, value))
    bake_fails(p, tmp_path, "absurd.gguf", word)


def write_gguf(path, mutate):
    """Rewrites stories260K through gguf-py with `mutate(name, array) -> (name, array) | None`."""
    import gguf
    from conftest import STORIES
    r = gguf.GGUFReader(str(STORIES))
    w = gguf.GGUFWriter(str(path), arch=r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        v = f.contents()
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, v, vt, sub_type=f.types[-1])
        else:
            w.add_key_value(k, v, vt)
    for t in r.tensors:
        a = np.asarray(t.data).reshape(tuple(int(x) for x in reversed(t.shape)))
        res = mutate(t.name, a.copy())
        if res is not None:
            w.add_tensor(res[0], res[1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_missing_tensor(tmp_path):
    p = tmp_path / "missing.gguf"
    write_gguf(p, lambda n, a: None if n == "blk.3.ffn_up.weight" else (n, a))
    bake_fails(p, tmp_path, "missing.gguf", "blk.3.ffn_up.weight")


def test_wrong_shape(tmp_path):
    p = tmp_path / "shape.gguf"
    write_gguf(p, lambda n, a: (n, a[:, :32]) if n == "blk.1.attn_q.weight" else (n, a))
    bake_fails(p, tmp_path, "shape.gguf", "blk.1.attn_q.weight", "shape")


def test_nan_weights_named(tmp_path):
    def poison(n, a):
        if n == "blk.2.ffn_gate.weight":
            a[3, 5] = np.nan
        return n, a
    p = tmp_path / "nan.gguf"
    write_gguf(p, poison)
    out = tmp_path / "off"
    r = run_kiln("bake", p, "-o", out, "--quiet", timeout=60)
    assert_clean_failure(r, out, "blk.2.ffn_gate.weight", "NaN")


def test_unexpected_tensor(tmp_path):
    p = tmp_path / "extra.gguf"

    def add(n, a):
        return ("blk.0.mystery.weight", a) if n == "blk.0.ffn_norm.weight" else (n, a)
    write_gguf(p, add)
    bake_fails(p, tmp_path, "extra.gguf")


def test_unsupported_architecture(stories, tmp_path):
    data = stories.read_bytes()
    i = data.index(b"general.architecture")
    # the value "llama" (length 5) follows the key and its type; swap in another 5-letter arch
    j = data.index(b"llama", i + 20)
    p = tmp_path / "arch.gguf"
    p.write_bytes(data[:j] + b"gemma" + data[j + 5:])
    bake_fails(p, tmp_path, "arch.gguf", "gemma")


def test_existing_non_offering_target_is_refused(stories, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = run_kiln("bake", stories, "-o", out, "--quiet")
    assert r.returncode == 2 and "refusing" in r.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_rebake_replaces_an_offering(stories, tmp_path):
    out = tmp_path / "off"
    for window in (64, 32):
        r = run_kiln("bake", stories, "-o", out, "--quiet", "--window", window, "--chunk", 16)
        assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["contract"]["window"] == 32


# ---- Hugging Face folders ----

def hf_folder(stories, tmp_path):
    write_hf_folder(stories, tmp_path / "hf", "f32")
    return tmp_path / "hf"


def test_hf_missing_config(stories, tmp_path):
    d = hf_folder(stories, tmp_path)
    (d / "config.json").unlink()
    bake_fails(d, tmp_path, "config.json")


def test_hf_broken_config(stories, tmp_path):
    d = hf_folder(stories, tmp_path)
    (d / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    bake_fails(d, tmp_path, "config.json", "JSON")


def test_hf_unsupported_architecture(stories, tmp_path):
    d = hf_folder(stories, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    bake_fails(d, tmp_path, "gpt_neox")


def test_hf_config_shape_mismatch(stories, tmp_path):
    d = hf_folder(stories, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 256
    (d / "config.json").write_text(json.dumps(cfg))
    bake_fails(d, tmp_path, "ffn_gate")


@pytest.mark.parametrize("cut", [4, 9, 200, -3])
def test_hf_truncated_safetensors(stories, tmp_path, cut):
    d = hf_folder(stories, tmp_path)
    st = d / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:cut])
    bake_fails(d, tmp_path, "model.safetensors")


def test_hf_absurd_header_length(stories, tmp_path):
    d = hf_folder(stories, tmp_path)
    st = d / "model.safetensors"
    st.write_bytes(patch_u64(st.read_bytes(), 0, 1 << 60))
    bake_fails(d, tmp_path, "model.safetensors", "header length")


def test_hf_bad_offsets(stories, tmp_path):
    d = hf_folder(stories, tmp_path)
    st = d / "model.safetensors"
    data = st.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    name = "model.layers.0.mlp.up_proj.weight"
    b, e = header[name]["data_offsets"]
    header[name]["data_offsets"] = [b, e + 10 ** 9]
    h = json.dumps(header).encode()
    st.write_bytes(len(h).to_bytes(8, "little") + h + data[8 + n:])
    bake_fails(d, tmp_path, "model.safetensors", name)


def test_hf_unsupported_dtype(stories, tmp_path):
    d = tmp_path / "hf"
    write_hf_folder(stories, d, "f32")
    t = {"model.embed_tokens.weight": np.zeros((512, 64), dtype=np.int8)}
    save_file(t, str(d / "model.safetensors"))
    bake_fails(d, tmp_path, "model.safetensors", "I8")


def test_hf_cache_id_missing_says_where_it_looked(tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"))
    r = run_kiln("bake", "--model_id", "Intel/neural-chat-7b-v3-1", "-o", tmp_path / "off",
                 env=env)
    assert_clean_failure(r, tmp_path / "off", "Intel/neural-chat-7b-v3-1",
                         str(tmp_path / "hf_home" / "hub"))


def test_hf_cache_id_resolves(stories, tmp_path):
    snap = tmp_path / "hf_home" / "hub" / "models--kiln--tiny" / "snapshots" / "abc123"
    write_hf_folder(stories, snap, "f32")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"))
    r = run_kiln("bake", "--model_id", "kiln/tiny", "-o", tmp_path / "off", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "off" / "model.gguf").exists()


@pytest.mark.parametrize("args,word", [
    (["--window", "0"], "--window"), (["--chunk", "abc"], "--chunk"),
    (["--window", "16", "--chunk", "32"], "--chunk"), (["--quant", "q3_x"], "--quant"),
    (["--bogus"], "--bogus"), ([], "SOURCE"),
])
def test_bad_options(stories, tmp_path, args, word):
    src = [] if word == "SOURCE" else [stories]
    r = run_kiln("bake", *src, "-o", tmp_path / "off", *args)
    assert r.returncode == 2 and word in r.stderr, r.stderr
    assert not (tmp_path / "off").exists()


def test_every_command_has_help():
    for cmd in ("bake", "inspect"):
        r = run_kiln(cmd, "--help")
        assert r.returncode == 0 and "usage: kiln " + cmd in r.stdout
    assert run_kiln("--help").returncode == 0
    assert run_kiln("frobnicate").returncode == 2


def test_inspect_reports_a_corrupted_offering(stories, tmp_path):
    """A weight turned NaN after the bake: inspect prints the verdict naming the tensor and
    exits 2."""
    import gguf
    out = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", out, "--quant", "keep", "--quiet").returncode == 0
    r = gguf.GGUFReader(str(out / "model.gguf"))
    t = next(t for t in r.tensors if t.name == "blk.1.attn_v.weight")
    off = int(t.data_offset)
    data = bytearray((out / "model.gguf").read_bytes())
    data[off:off + 4] = np.float32(np.nan).tobytes()
    (out / "model.gguf").write_bytes(bytes(data))
    res = run_kiln("inspect", out, "--json")
    assert res.returncode == 2, res.stderr
    doc = json.loads(res.stdout)
    assert doc["validation"]["ok"] is False
    bad = [c for c in doc["validation"]["checks"] if not c["ok"]]
    assert bad and "blk.1.attn_v.weight" in bad[0]["detail"]
    assert "fails validation" in res.stderr


def test_progress_bar_on_a_terminal_only(stories, tmp_path):
    """On a TTY (here util-linux `script`) bake draws a progress bar; piped, it stays quiet."""
    import shlex
    import subprocess
    from conftest import kiln_bin
    out = tmp_path / "tty"
    cmd = f"{shlex.quote(str(kiln_bin()))} bake {shlex.quote(str(stories))} -o {shlex.quote(str(out))}"
    # no sanitizer preload here (that is for OpenVINO): it would instrument `script` itself
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "48/48 tensors" in r.stdout and "ETA" in r.stdout
    piped = run_kiln("bake", stories, "-o", tmp_path / "piped")
    assert piped.returncode == 0 and "tensors" not in piped.stderr


def test_bad_target(stories, tmp_path):
    r = run_kiln("bake", stories, "-o", tmp_path / "off", "--target", "tpu")
    assert r.returncode == 2 and "'tpu' is not cpu, openvino or npu" in r.stderr
