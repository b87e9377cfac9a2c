"""Regression tests for the hostile-input campaign (issue 13): each defect the campaign found,
with the input that showed it. Every failure must be one escaped line on stderr, exit 2 for bad
input, within seconds, and leave nothing behind."""
import struct

import pytest

from conftest import run_kiln


def one_line_error(r, *words, code=2):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kiln: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def gguf_str(b):
    return struct.pack("<Q", len(b)) + b


# ---- 2. GGUF parsing is O(n log n) in the number of keys and tensors, and counts are capped ----

def many_entries_gguf(path, n_kv, n_tensors):
    """A GGUF of n_kv u32 keys and n_tensors one-element F32 tensors (no model: only the reader
    is exercised)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv))
    for i in range(n_kv):
        out += gguf_str(b"k.%07d" % i) + struct.pack("<II", 4, i)
    for i in range(n_tensors):
        out += gguf_str(b"t.%07d" % i) + struct.pack("<IQIQ", 1, 8, 0, i * 32)
    out += b"\0" * ((32 - len(out) % 32) % 32) + b"\0" * (32 * n_tensors)
    path.write_bytes(bytes(out))


def test_gguf_with_65536_keys_and_tensors_parses_in_seconds(tmp_path):
    # the quadratic duplicate checks took ~45 s on this file (release build); sorted: ~0.1 s
    p = tmp_path / "many.gguf"
    many_entries_gguf(p, 65536, 65536)
    r = run_kiln("inspect", p, timeout=20)
    one_line_error(r, "many.gguf", "general.architecture")


@pytest.mark.parametrize("n_kv,n_t,word", [(160000, 0, "metadata keys"), (0, 160000, "tensors")])
def test_gguf_counts_are_capped(tmp_path, n_kv, n_t, word):
    p = tmp_path / "huge.gguf"
    many_entries_gguf(p, n_kv, n_t)
    r = run_kiln("inspect", p, timeout=20)
    one_line_error(r, "huge.gguf", word, "at most")


def with_extra_keys(src, dst, n):
    """src with n more u32 metadata keys (and one padding key so the tensor data keeps its
    alignment)."""
    d = src.read_bytes()
    n_t, n_kv = struct.unpack_from("<QQ", d, 8)
    extra = bytearray()
    for i in range(n):
        extra += gguf_str(b"x.extra.%07d" % i) + struct.pack("<II", 4, i)
    base = len(gguf_str(b"x.pad")) + 4 + 8
    extra += gguf_str(b"x.pad") + struct.pack("<I", 8) + gguf_str(b"p" * ((-(len(extra) + base)) % 32))
    dst.write_bytes(d[:8] + struct.pack("<QQ", n_t, n_kv + n + 1) + bytes(extra) + d[24:])


def test_bake_copies_60000_keys_in_seconds(stories, tmp_path):
    # reader and writer were both quadratic in the keys: ~45 s before, ~0.1 s now
    src = tmp_path / "keys.gguf"
    with_extra_keys(stories, src, 60000)
    out = tmp_path / "off"
    r = run_kiln("bake", src, "-o", out, "--quiet", "--quant", "keep", timeout=30)
    assert r.returncode == 0, r.stderr
    import gguf
    rd = gguf.GGUFReader(str(out / "model.gguf"))
    assert rd.fields["x.extra.0059999"].contents() == 59999


# ---- 9. numbers from config files go through one range-checked reader ----

def hf_dir(stories, tmp_path, **config):
    from test_bake import write_hf_folder
    d = tmp_path / "hf"
    write_hf_folder(stories, d, "f32", extra_config=config)
    return d


@pytest.mark.parametrize("config,words", [
    ({"eos_token_id": [1e300, 2]}, ["config.json", "eos_token_id"]),
    ({"eos_token_id": 1e300}, ["config.json", "eos_token_id 1e+300"]),
    ({"bos_token_id": -1e19}, ["config.json", "bos_token_id"]),
    ({"hidden_size": 1e30}, ["config.json", "hidden_size 1e+30 is not an integer"]),
    ({"num_hidden_layers": 2.5}, ["config.json", "num_hidden_layers 2.5"]),
    ({"rope_theta": 1e300}, ["config.json", "rope_theta"]),
    ({"max_position_embeddings": "long"}, ["config.json", "max_position_embeddings"]),
])
def test_config_numbers_out_of_range(stories, tmp_path, config, words):
    d = hf_dir(stories, tmp_path, **config)
    out = tmp_path / "off"
    r = run_kiln("bake", d, "-o", out, "--quiet", timeout=60)
    one_line_error(r, *words)
    assert not out.exists()


def test_generation_config_numbers_out_of_range(stories, tmp_path):
    d = hf_dir(stories, tmp_path)
    (d / "generation_config.json").write_text('{"bos_token_id": 1, "eos_token_id": [1e300]}')
    r = run_kiln("bake", d, "-o", tmp_path / "off", "--quiet", timeout=60)
    one_line_error(r, "generation_config.json", "eos_token_id")


# ---- 13. overlapping safetensors data_offsets are refused, as overlapping GGUF tensors are ----

def test_safetensors_overlapping_tensors_are_refused(stories, tmp_path):
    import json
    d = hf_dir(stories, tmp_path)
    st = d / "model.safetensors"
    data = st.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    a, b = "model.layers.0.input_layernorm.weight", "model.layers.1.input_layernorm.weight"
    header[b]["data_offsets"] = header[a]["data_offsets"]  # b now reads a's bytes
    h = json.dumps(header).encode()
    st.write_bytes(len(h).to_bytes(8, "little") + h + data[8 + n:])
    r = run_kiln("bake", d, "-o", tmp_path / "off", "--quiet", timeout=60)
    one_line_error(r, "model.safetensors", "overlap")


# ---- 6. strings from model files never reach the terminal raw ----

def rewrite_stories(dst, arch=None, fields=None, rename=None, copy=None):
    """stories260K through gguf-py, with general.architecture, fields or tensor names replaced,
    or tensors copied under another name (copy: {new name: source name}). A field given as a
    str is a string, as (value, type[, subtype]) anything else, as None it is dropped; fields
    not in the file are added."""
    import gguf
    import numpy as np
    from conftest import STORIES
    r = gguf.GGUFReader(str(STORIES))
    w = gguf.GGUFWriter(str(dst), arch=arch or r.fields["general.architecture"].contents())
    fields = fields or {}
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        vt = f.types[0]
        if k in fields:
            continue
        elif vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), vt)
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, str):
            w.add_key_value(k, v, gguf.GGUFValueType.STRING)
        else:
            w.add_key_value(k, v[0], v[1], sub_type=v[2] if len(v) > 2 else None)
    for t in r.tensors:
        a = np.asarray(t.data).reshape(tuple(int(x) for x in reversed(t.shape)))
        w.add_tensor((rename or {}).get(t.name, t.name), a)
        for new, old in (copy or {}).items():
            if old == t.name:
                w.add_tensor(new, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


FORGED = "\nkiln: all checks passed\x1b[2J\x1b]0;pwned\x07"


def assert_escaped(text):
    for c in ("\x1b", "\x07", "\x9b"):
        assert c not in text, repr(text)


def test_newline_in_architecture_stays_one_line(tmp_path):
    p = tmp_path / "arch.gguf"
    rewrite_stories(p, arch="llama" + FORGED)
    for cmd in (["inspect", p], ["bake", p, "-o", tmp_path / "off"], ["run", p, "--prompt", "x"]):
        r = run_kiln(*cmd, timeout=60)
        line = one_line_error(r, "arch.gguf", "\\nkiln: all checks passed\\x1b[2J")
        assert_escaped(line)


def test_newline_in_a_tensor_name_stays_one_line(tmp_path):
    p = tmp_path / "name.gguf"
    rewrite_stories(p, copy={"blk.0.ffn_norm.weight" + FORGED: "blk.0.ffn_norm.weight"})
    r = run_kiln("bake", p, "-o", tmp_path / "off", timeout=60)
    assert_escaped(one_line_error(r, "name.gguf", "\\nkiln"))


def test_duplicate_key_with_escape_sequence_stays_one_line(stories, tmp_path):
    d = stories.read_bytes()
    n_t, n_kv = struct.unpack_from("<QQ", d, 8)
    key = b"evil\x1b]0;pwned\x07\nkiln: forged"
    extra = (gguf_str(key) + struct.pack("<II", 4, 1)) * 2
    p = tmp_path / "dup.gguf"
    p.write_bytes(d[:8] + struct.pack("<QQ", n_t, n_kv + 2) + extra + d[24:])
    r = run_kiln("inspect", p, timeout=60)
    assert_escaped(one_line_error(r, "dup.gguf", "duplicate metadata key", "\\x1b]0;pwned\\x07"))


def test_inspect_escapes_names_from_the_file(tmp_path):
    p = tmp_path / "name.gguf"
    rewrite_stories(p, fields={"general.name": "tiny" + FORGED + "\u009b31m"})
    off = tmp_path / "off"
    assert run_kiln("bake", p, "-o", off, "--quiet").returncode == 0
    for args in ([], ["--json"]):
        r = run_kiln("inspect", off, *args)
        assert r.returncode == 0, r.stderr
        assert_escaped(r.stdout)
        assert "kiln: all checks passed" in r.stdout   # shown, escaped, not dropped
    r = run_kiln("inspect", off)
    assert "name tiny\\nkiln: all checks passed\\x1b[2J" in r.stdout
    import json
    doc = json.loads(run_kiln("inspect", off, "--json").stdout)
    assert doc["name"] == "tiny" + FORGED + "\u009b31m"     # JSON keeps the value exactly


# ---- 1. every option that takes a value says so when the value is missing ----

VALUE_OPTIONS = {
    "bake": ["-o", "--output", "--output_dir", "--model_id", "--from-ir", "--quant", "--target",
             "--group-size", "--window", "--chunk", "--sink"],
    "run": ["--prompt", "-p", "--model_xml", "--system", "--tokenizer_id", "--chat-template",
            "--max-tokens", "-n", "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
            "--seed", "--stop", "--mode", "--overflow", "--device", "--openvino-lib",
            "--threads", "-t", "--window", "--chunk"],
    "chat": ["--system", "--tokenizer_id", "--chat-template", "--max-tokens", "-n", "--temp",
             "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--seed", "--stop", "--mode",
             "--overflow", "--device", "--openvino-lib", "--threads", "-t", "--window",
             "--chunk"],
    "bench": ["-p", "--n-prompt", "-n", "--n-gen", "-t", "--threads", "-r", "--repetitions",
              "--mode", "--device"],
    "tokenize": ["--text", "--file"],
}


@pytest.mark.parametrize("cmd,opt", [(c, o) for c, opts in VALUE_OPTIONS.items() for o in opts])
@pytest.mark.parametrize("after", ["end", "option"])
def test_missing_option_value(stories, cmd, opt, after):
    """`kiln run OFF --prompt hi --seed` crashed (SIGSEGV); `kiln bench OFF --device` ran the
    whole benchmark. The value may be missing at the end, or followed by another option."""
    pos = [] if (cmd == "bake" and opt in ("--model_id", "--from-ir")) else [stories]
    extra = ["--prompt", "hi"] if cmd == "run" and opt not in ("--prompt", "-p") else []
    tail = [opt] if after == "end" else [opt, "--json"]
    r = run_kiln(cmd, *pos, *extra, *tail, timeout=60)
    one_line_error(r, f"kiln: {opt} needs a value")
    assert r.stdout == ""


def test_option_value_may_start_with_dashes_when_attached(stories_offering_hard):
    r = run_kiln("run", stories_offering_hard, "--raw", "--prompt=--once", "--max-tokens", 2)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def stories_offering_hard(stories, tmp_path_factory):
    out = tmp_path_factory.mktemp("hard") / "off"
    r = run_kiln("bake", stories, "-o", out, "--quant", "keep", "--quiet", "--window", 64,
                 "--chunk", 16)
    assert r.returncode == 0, r.stderr
    return out


# ---- 3. chat templates lex in linear time; size and rendering work are capped ----

def chat_tool(tmp_path, template, timeout=20):
    import json
    import subprocess
    from conftest import BUILD, sanitizer_env
    (tmp_path / "t.jinja").write_text(template)
    (tmp_path / "conv.json").write_text(json.dumps({
        "messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": True,
        "bos_token": "<s>", "eos_token": "</s>"}))
    return subprocess.run([str(BUILD / "kn_chat_tool"), "template", str(tmp_path / "t.jinja"),
                           str(tmp_path / "conv.json")], capture_output=True, text=True,
                          timeout=timeout, env=sanitizer_env())


def test_large_template_lexes_in_linear_time(tmp_path):
    # 1,000,035 bytes, 50,000 tags on as many lines: ~25 s with the quadratic lexer
    body = "".join("{{ m.role }}\n" for _ in range(76922))
    t = "{% for m in messages %}" + body + "{% endfor %}"
    assert len(t) < 1 << 20
    r = chat_tool(tmp_path, t)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "user\n" * 76922


@pytest.mark.parametrize("template,word", [
    ("x" * ((1 << 20) + 1), "more than the 1024 KiB"),
    ("{% for i in range(1000) %}{% for j in range(1001) %}{% endfor %}{% endfor %}",
     "loop iterations"),
    ("{% set s = 'a' * 100000000 %}{% for i in range(100000) %}{% if 'ab' in s %}x{% endif %}"
     "{% endfor %}", "steps"),
    ("{% set s = 'a' * 50000000 %}{% for i in range(100000) %}{{ s|length }}{% endfor %}",
     "steps"),
    ("{% for i in range(900000) %}{{ '0123456789012345678901234567890123456789' }}{% endfor %}",
     "output exceeds"),
], ids=["size", "loops", "search", "length", "output"])
def test_template_work_is_capped(tmp_path, template, word):
    r = chat_tool(tmp_path, template, timeout=60)
    assert r.returncode == 1 and word in r.stderr, r.stderr[-300:]


# ---- 7. an offering runs with the contract it was baked with, or not at all ----

def test_offering_window_is_not_clamped_to_1024(stories, tmp_path):
    off = tmp_path / "w2048"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--window", 2048,
                    "--chunk", 64, "--quiet").returncode == 0
    import json
    # a prompt of ~1,400 tokens: more than 1024, within the 2048 the offering was baked for
    prompt = "Once upon a time there was a little girl. " * 140
    r = run_kiln("run", off, "--raw", "--prompt", prompt, "--max-tokens", 2, "--json", "-t", 1,
                 timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["window"] == 2048 and doc["chunk"] == 64 and 1024 < doc["n_prompt"] < 2048
    b = run_kiln("bench", off, "-p", 16, "-n", 4, "-t", 1, "-r", 1, "--json")
    assert b.returncode == 0 and json.loads(b.stdout)[0]["window"] == 2048, b.stderr


def patch_u32_key(path, key, value):
    """Overwrites the u32 value of a metadata key in place."""
    d = bytearray(path.read_bytes())
    k = gguf_str(key.encode()) + struct.pack("<I", 4)
    i = d.index(k) + len(k)
    d[i:i + 4] = struct.pack("<I", value)
    path.write_bytes(bytes(d))


@pytest.mark.parametrize("window,chunk,sink", [
    (1, 16, 0), (16, 32, 4), (64, 16, 64), (1 << 31, 16, 4), (64, 0, 4)])
def test_inconsistent_contract_is_refused_by_inspect_and_run(stories, tmp_path, window, chunk,
                                                              sink):
    off = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--window", 64, "--chunk", 16,
                    "--quiet").returncode == 0
    g = off / "model.gguf"
    patch_u32_key(g, "kiln.contract.window", window)
    patch_u32_key(g, "kiln.contract.chunk", chunk)
    patch_u32_key(g, "kiln.contract.sink", sink)
    assert run_kiln("inspect", off).returncode == 2
    for cmd in (["run", off, "--raw", "--prompt", "Once"], ["bench", off, "-p", 4, "-n", 2],
                ["chat", off]):
        r = run_kiln(*cmd, timeout=60, input="hi\n")
        one_line_error(r, "model.gguf")


def test_window_option_is_for_sources_only(stories, stories_offering_hard):
    r = run_kiln("run", stories_offering_hard, "--prompt", "Once", "--raw", "--window", 512)
    one_line_error(r, "window 64", "--window")
    r = run_kiln("run", stories, "--prompt", "Once", "--raw", "--window", 512, "--chunk", 32,
                 "--max-tokens", 2, "--json")
    assert r.returncode == 0 and '"window": 512' in r.stdout, r.stderr


# ---- 4. re-baking over an offering swaps it atomically; an interrupted swap is repaired ----

def test_rebake_never_leaves_the_offering_missing(stories, tmp_path):
    """A reader polls OUT/model.gguf while OUT is re-baked 40 times: with rename(OUT, old) then
    rename(tmp, OUT) it saw OUT missing (597 and 1 times in two runs of 20 re-bakes); the
    RENAME_EXCHANGE swap leaves no such moment."""
    import os
    import threading
    out = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", out, "--quiet").returncode == 0
    stop, misses, checks = [False], [0], [0]

    def watch():
        while not stop[0]:
            checks[0] += 1
            if not os.path.exists(out / "model.gguf"):
                misses[0] += 1
    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(40):
            r = run_kiln("bake", stories, "-o", out, "--quiet", "--window", 256 + i)
            assert r.returncode == 0, r.stderr
    finally:
        stop[0] = True
        t.join()
    assert checks[0] > 1000 and misses[0] == 0, (misses[0], checks[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off"]


def test_interrupted_swap_is_repaired_by_the_next_bake(stories, tmp_path):
    """What a crash between the two renames of a swap leaves (OUT gone, the previous offering
    aside): the next bake puts it back before replacing it, and leaves nothing behind."""
    out = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", out, "--quiet", "--window", 64,
                    "--chunk", 16).returncode == 0
    out.rename(tmp_path / "off.kiln-old-999999")
    r = run_kiln("bake", stories, "-o", out, "--quiet", "--window", 32, "--chunk", 16)
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads((out / "manifest.json").read_text())["contract"]["window"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off"]


# ---- 5. staging left by killed bakes is removed; concurrent bakes: one wins cleanly ----

def test_stale_staging_is_removed(stories, tmp_path):
    out = tmp_path / "off"
    for pid in (999999, 1):   # no such process / a live one that holds no lock
        stale = tmp_path / f"off.kiln-tmp-{pid}"
        stale.mkdir()
        (stale / "model.gguf").write_bytes(b"\0" * 4096)
    assert run_kiln("bake", stories, "-o", out, "--quiet").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off"]


def start_slow_bake(src, out):
    """A bake that takes seconds (SmolLM2 requantized), started once its staging exists."""
    import subprocess
    import time
    from conftest import kiln_bin, sanitizer_env
    p = subprocess.Popen([str(kiln_bin()), "bake", str(src), "-o", str(out), "--quant", "q8_0",
                          "--quiet"], stderr=subprocess.PIPE, text=True, env=sanitizer_env())
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if any(q.name.startswith(out.name + ".kiln-tmp-") for q in out.parent.iterdir()):
            return p
        time.sleep(0.01)
    pytest.fail(f"the bake never staged anything (exit {p.poll()})")


def test_killed_bake_leaves_nothing_after_the_next(smollm_gguf, stories, tmp_path):
    import signal
    out = tmp_path / "off"
    p = start_slow_bake(smollm_gguf, out)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert any(q.name.startswith("off.kiln-tmp-") for q in tmp_path.iterdir())
    assert run_kiln("bake", stories, "-o", out, "--quiet").returncode == 0
    assert sorted(q.name for q in tmp_path.iterdir()) == ["off"]


def test_concurrent_bakes_one_wins(smollm_gguf, stories, tmp_path):
    out = tmp_path / "off"
    p = start_slow_bake(smollm_gguf, out)
    r = run_kiln("bake", stories, "-o", out, "--quiet")
    one_line_error(r, "off", "another kiln bake", code=1)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    import json
    assert json.loads((out / "manifest.json").read_text())["name"] != "stories260K"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["off"]


# ---- 13. exit codes: a failed write is 1 (not bad input); Ctrl-C is 130, documented ----

def test_full_disk_exits_1_and_leaves_nothing(stories, tmp_path):
    import resource
    import signal

    def small_files():  # writes past 64 KiB fail with EFBIG, as on a full disk with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    out = tmp_path / "off"
    r = run_kiln("bake", stories, "-o", out, "--quiet", "--quant", "keep",
                 preexec_fn=small_files)
    one_line_error(r, "model.gguf", "write failed", code=1)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_bake_exits_130_and_leaves_nothing(smollm_gguf, tmp_path):
    import signal
    out = tmp_path / "off"
    p = start_slow_bake(smollm_gguf, out)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130
    assert "cancelled" in p.stderr.read()
    assert list(tmp_path.iterdir()) == []
    assert "130" in run_kiln("--help").stdout


# ---- 10. bake, inspect and run check the tokenizer against the model ----

def stories_field(key):
    import gguf
    from conftest import STORIES
    return gguf.GGUFReader(str(STORIES)).fields[key].contents()


def gguf_tokenizer_cases():
    import gguf
    A, S, I32, U32 = (gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING,
                      gguf.GGUFValueType.INT32, gguf.GGUFValueType.UINT32)
    F32 = gguf.GGUFValueType.FLOAT32
    toks = stories_field("tokenizer.ggml.tokens")
    return {
        "tokens missing": {"tokenizer.ggml.tokens": None},
        "tokens not strings": {"tokenizer.ggml.tokens": (list(range(512)), A, I32)},
        "3 tokens": {"tokenizer.ggml.tokens": (toks[:3], A, S),
                     "tokenizer.ggml.scores": ([0.0] * 3, A, F32),
                     "tokenizer.ggml.token_type": ([1] * 3, A, I32)},
        "scores short": {"tokenizer.ggml.scores": ([0.0] * 100, A, F32)},
        "types short": {"tokenizer.ggml.token_type": ([1] * 100, A, I32)},
        "model unknown": {"tokenizer.ggml.model": "bert"},
        "bos outside": {"tokenizer.ggml.bos_token_id": (99999, U32)},
        "eos outside": {"tokenizer.ggml.eos_token_id": (512, U32)},
    }


@pytest.mark.parametrize("case", list(gguf_tokenizer_cases()))
def test_gguf_tokenizer_that_cannot_work_is_refused(tmp_path, case):
    p = tmp_path / "tok.gguf"
    rewrite_stories(p, fields=gguf_tokenizer_cases()[case])
    out = tmp_path / "off"
    one_line_error(run_kiln("bake", p, "-o", out, "--quiet"), "tok.gguf")
    assert not out.exists()
    r = run_kiln("inspect", p)
    assert r.returncode == 2 and "validation: FAILED" in r.stdout or \
        len(r.stderr.strip().splitlines()) == 1, (r.stdout, r.stderr)
    assert "validation: ok" not in r.stdout
    one_line_error(run_kiln("run", p, "--prompt", "Once", "--raw"), "tok.gguf")


def test_inspect_reports_a_tokenizer_broken_after_the_bake(stories, tmp_path):
    import json
    off = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", off, "--quiet").returncode == 0
    patch_u32_key(off / "model.gguf", "tokenizer.ggml.bos_token_id", 4000)
    r = run_kiln("inspect", off, "--json")
    assert r.returncode == 2
    bad = [c for c in json.loads(r.stdout)["validation"]["checks"] if not c["ok"]]
    assert bad and "tokenizer.ggml.bos_token_id" in bad[0]["detail"], bad
    one_line_error(run_kiln("run", off, "--prompt", "Once", "--raw"), "bos_token_id")


def stories_tokenizer_json(n=None):
    """A tokenizer.json holding stories260K's vocabulary (first n tokens) as a BPE model."""
    import json
    toks = stories_field("tokenizer.ggml.tokens")[:n]
    return json.dumps({
        "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(toks)}, "merges": [],
                  "byte_fallback": True},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "first", "split": False},
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first"},
        "added_tokens": [], "normalizer": None, "post_processor": None})


def test_hf_tokenizer_smaller_than_the_embedding(stories, tmp_path):
    from test_bake import write_hf_folder
    d = tmp_path / "hf"
    write_hf_folder(stories, d, "f32", tokenizer_json=stories_tokenizer_json(3))
    one_line_error(run_kiln("bake", d, "-o", tmp_path / "off", "--quiet"), "tokenizer.json",
                   "3 token ids for 512 embedding rows")
    assert run_kiln("inspect", d).returncode == 2


def test_hf_tokenizer_padded_to_the_embedding_like_llama_cpp(stories, tmp_path):
    """Embeddings rounded past the tokenizer (Qwen2: 151,936 rows, 151,665 ids): the missing
    ids become unused [PADn] tokens, as convert_hf_to_gguf.py writes them."""
    import gguf
    from test_bake import write_hf_folder
    d = tmp_path / "hf"
    write_hf_folder(stories, d, "f32", tokenizer_json=stories_tokenizer_json(500))
    off = tmp_path / "off"
    r = run_kiln("bake", d, "-o", off, "--quiet")
    assert r.returncode == 0, r.stderr
    rd = gguf.GGUFReader(str(off / "model.gguf"))
    toks = rd.fields["tokenizer.ggml.tokens"].contents()
    types = rd.fields["tokenizer.ggml.token_type"].contents()
    assert len(toks) == 512 and toks[500] == "[PAD500]" and toks[511] == "[PAD511]"
    assert types[500] == gguf.TokenType.UNUSED and toks[:500] == stories_field(
        "tokenizer.ggml.tokens")[:500]
    assert run_kiln("run", off, "--raw", "--prompt", "Once", "--max-tokens", 4).returncode == 0


def test_hf_config_eos_outside_the_vocabulary(stories, tmp_path):
    from test_bake import write_hf_folder
    d = tmp_path / "hf"
    write_hf_folder(stories, d, "f32", tokenizer_json=stories_tokenizer_json(),
                    extra_config={"eos_token_id": 9999})
    one_line_error(run_kiln("bake", d, "-o", tmp_path / "off", "--quiet"), "eos_token_id 9999")


# ---- 11. one huge vocabulary id cannot size the tables ----

@pytest.mark.parametrize("big", [67108864, 1073741824, 16777215])
def test_sparse_vocabulary_id_is_refused(tmp_path, big):
    import json
    d = tmp_path / "hf"
    d.mkdir()
    vocab = {chr(97 + i): i for i in range(26)}
    vocab["zz"] = big
    (d / "tokenizer.json").write_text(json.dumps({
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "decoder": {"type": "ByteLevel"}, "added_tokens": []}))
    r = run_kiln("tokenize", d, "--text", "abc", timeout=20)
    one_line_error(r, "tokenizer.json", "dense" if big < 1 << 24 else "bad id")


# ---- 12. tensor types are checked against roles; overflowing activations are an error ----

def patch_tensor_type(path, name, new_type):
    """Overwrites the GGUF type field of a tensor's info entry in place (the byte flip the
    campaign found: a norm's F32 read as I32)."""
    d = bytearray(path.read_bytes())
    i = d.index(gguf_str(name.encode())) + 8 + len(name)
    n_dims = struct.unpack_from("<I", d, i)[0]
    t = i + 4 + 8 * n_dims
    d[t:t + 4] = struct.pack("<I", new_type)
    path.write_bytes(bytes(d))


@pytest.mark.parametrize("name,new_type,word", [
    ("blk.1.attn_norm.weight", 26, "I32"),       # the campaign's flip: F32 -> I32
    ("output_norm.weight", 2, "Q4_0"),           # a norm cannot be weight-quantized...
    ("blk.0.attn_q.weight", 24, "I8"),           # ...and weights are never integers
])
def test_tensor_type_must_fit_its_role(stories, tmp_path, name, new_type, word):
    p = tmp_path / "type.gguf"
    p.write_bytes(stories.read_bytes())
    patch_tensor_type(p, name, new_type)
    for cmd in (["bake", p, "-o", tmp_path / "off"], ["inspect", p],
                ["run", p, "--raw", "--prompt", "Once"]):
        r = run_kiln(*cmd, timeout=60)
        assert r.returncode == 2, (cmd, r.stderr)
        assert name in r.stderr and word in r.stderr, r.stderr
    assert not (tmp_path / "off").exists()


def test_overflowing_activations_are_reported(tmp_path):
    """Finite but huge weights (3e38 in the norms) pass bake's finiteness check and overflow the
    forward pass: the activations quantizer met Inf/NaN (an undefined conversion: the sanitizer
    build aborted, release printed garbage). Now the run stops with one line, in every mode
    (and with every kernel table: KILN_KERNELS=generic|avx2|avx512vnni)."""
    import numpy as np
    p = tmp_path / "huge.gguf"

    def huge(n, a):
        return (n, np.full_like(a, 3e38)) if "norm" in n else (n, a)
    from test_bad_input import write_gguf
    write_gguf(p, huge)
    off = tmp_path / "off"
    assert run_kiln("bake", p, "-o", off, "--quiet", "--quant", "q8_0").returncode == 0
    for mode in ("kv", "stateless"):
        r = run_kiln("run", off, "--raw", "--prompt", "Once upon a time", "--mode", mode,
                     "--max-tokens", 8, timeout=60)
        one_line_error(r, "not finite")
        assert r.stdout == ""


# ---- 8. chat --overflow slide prefills only the new turn, however long the conversation ----

def chat(model, lines, *args, timeout=300):
    import subprocess
    from conftest import kiln_bin, sanitizer_env
    return subprocess.run([str(kiln_bin()), "chat", str(model), "-t", "1", *map(str, args)],
                          input=lines, capture_output=True, text=True, timeout=timeout,
                          env=sanitizer_env())


def prompt_tokens(stderr):
    """Tokens each turn prefilled: the metrics line says "prompt N tok (C cached, P prefilled)"
    when the cache kept part of the conversation, "prompt N tok" when it kept nothing."""
    import re
    out = []
    for l in stderr.splitlines():
        m = re.match(r"\[kiln\] prompt (\d+) tok(?: \((\d+) cached, (\d+) prefilled\))?", l)
        if m:
            out.append(int(m.group(3)) if m.group(3) else int(m.group(1)))
    return out


def test_chat_slide_prefills_only_the_new_turn(stories, tmp_path):
    """Window 64: the old code remembered only the first W ids of the conversation, so once it
    was longer every turn re-prefilled all of it (65, 97, 193, ... 1253 tokens by turn 14)."""
    off = tmp_path / "w64"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--window", 64, "--chunk", 16,
                    "--quiet").returncode == 0
    turns = "".join(f"Tell me a story about a cat number {i} please\n" for i in range(14))
    r = chat(off, turns, "--overflow", "slide", "--chat-template", "chatml", "--max-tokens", 24)
    assert r.returncode == 0, r.stderr
    prompts = prompt_tokens(r.stderr)
    assert len(prompts) == 14, r.stderr
    # the conversation passes 14 x (~70 + 24) tokens; each turn feeds its own ~70 (plus, at
    # most, the window's worth a re-tokenized tail can force) instead of all of it
    assert sum(prompts) + 14 * 24 > 10 * 64
    assert max(prompts[1:]) < 64 + 40, prompts


# ---- 13. chat reads whole lines; the window-full error says how long the conversation is ----

def test_chat_long_line_is_one_message(stories, tmp_path):
    """A 1 MB line was 128 turns (8,192-byte pieces) and 128 errors; now it is one message,
    refused once with its real length (the message used to say '0 tokens')."""
    off = tmp_path / "w64"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--window", 64, "--chunk", 16,
                    "--quiet").returncode == 0
    r = chat(off, "once upon a time " * 60000 + "\nOnce\n", "--max-tokens", 4,
             "--chat-template", "chatml")
    errors = [l for l in r.stderr.splitlines() if l.startswith("kiln: ")]
    assert r.returncode == 0 and len(errors) == 1, r.stderr[-500:]
    assert "the window holds 64" in errors[0] and " 0 tokens" not in errors[0]
    n = int(errors[0].split("conversation is ")[1].split(" tokens")[0])
    assert n > 100000
    assert len(prompt_tokens(r.stderr)) == 1          # the next line is answered normally


def test_chat_character_across_8192_bytes_is_kept(stories, tmp_path):
    off = tmp_path / "w2048"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--window", 2048,
                    "--chunk", 64, "--quiet").returncode == 0
    line = "a" * 8190 + "\u00e9" + "b" * 10 + "\n"  # the old 8,191-byte reads split the \u00e9
    r = chat(off, line, "--max-tokens", 2, "--chat-template", "chatml")
    assert r.returncode == 0 and "UTF-8" not in r.stderr, r.stderr[-300:]


def test_chat_line_over_the_limit_is_one_error(stories_offering_hard):
    r = chat(stories_offering_hard, "x" * (9 << 20) + "\nOnce\n", "--max-tokens", 2,
             "--chat-template", "chatml")
    errors = [l for l in r.stderr.splitlines() if l.startswith("kiln: ")]
    assert r.returncode == 0 and len(errors) == 1 and "8 MiB" in errors[0], r.stderr[-300:]
    assert len(prompt_tokens(r.stderr)) == 1


# ---- 13. detokenize prints every byte, NUL included ----

def test_detokenize_keeps_nul_bytes(stories, tmp_path):
    import subprocess
    from conftest import kiln_bin, sanitizer_env
    f = tmp_path / "in.bin"
    f.write_bytes(b"Once\x00upon\x00")
    tok = subprocess.run([str(kiln_bin()), "tokenize", str(stories), "--file", str(f)],
                         capture_output=True, env=sanitizer_env())
    assert tok.returncode == 0, tok.stderr
    ids = tok.stdout.split()
    det = subprocess.run([str(kiln_bin()), "detokenize", str(stories), *ids],
                         capture_output=True, env=sanitizer_env())
    assert det.returncode == 0 and det.stdout == b"Once\x00upon\x00\n", det.stdout
    # <0x00> <0x01> <0x02> as ids 3 4 5 of a SentencePiece byte-fallback vocabulary
    det = subprocess.run([str(kiln_bin()), "detokenize", str(stories), "3", "4", "5"],
                         capture_output=True, env=sanitizer_env())
    assert det.stdout == b"\x00\x01\x02\n"


# ---- 13. messages name what the user gave ----

def test_hf_folder_without_tokenizer_names_the_folder(stories, tmp_path):
    d = hf_dir(stories, tmp_path)
    r = run_kiln("run", d, "--prompt", "Once", timeout=60)
    line = one_line_error(r, str(d), "tokenizer.json", "--tokenizer_id")
    assert "kiln-run-" not in line


def test_folder_with_only_a_manifest(stories, tmp_path):
    off = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", off, "--quiet").returncode == 0
    (off / "model.gguf").unlink()
    for cmd in (["inspect", off], ["run", off, "--prompt", "Once"], ["tokenize", off, "--text", "x"]):
        line = one_line_error(run_kiln(*cmd, timeout=60), str(off))
        assert "model.gguf" in line and "config.json" not in line, line


# ---- 13. the IR files of an offering are checked before OpenVINO sees them, and by inspect ----

def ov_env():
    import os
    import sys
    e = dict(os.environ)
    e.pop("KILN_OPENVINO_LIB", None)
    e["PATH"] = os.path.dirname(sys.executable) + os.pathsep + e.get("PATH", "")
    return e


@pytest.mark.parametrize("damage", ["garbled xml", "truncated bin"])
def test_broken_ir_is_one_line_and_fails_inspect(stories, tmp_path, damage):
    off = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--target", "openvino",
                    "--window", 64, "--chunk", 16, "--quiet").returncode == 0
    if damage == "garbled xml":
        x = off / "openvino_model.xml"
        x.write_bytes(bytes(b ^ 0x5A for b in x.read_bytes()[:4096]))
        word = "not an OpenVINO IR"
    else:
        b = off / "openvino_model.bin"
        b.write_bytes(b.read_bytes()[:1000])
        word = "truncated"
    r = run_kiln("inspect", off)
    assert r.returncode == 2 and "validation: FAILED" in r.stdout and word in r.stdout, r.stdout
    r = run_kiln("run", off, "--raw", "--prompt", "Once", "--device", "openvino:CPU",
                 env=ov_env(), timeout=120)
    one_line_error(r, "openvino_model", word)


def test_from_ir_with_truncated_weights(stories, tmp_path):
    off = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--target", "openvino",
                    "--window", 64, "--chunk", 16, "--quiet").returncode == 0
    b = off / "openvino_model.bin"
    b.write_bytes(b.read_bytes()[:100])
    r = run_kiln("bake", "--from-ir", off / "openvino_model.xml", "-o", tmp_path / "ir")
    one_line_error(r, "openvino_model.bin", "truncated")


def test_hostile_manifest_of_an_ir_offering(tmp_path):
    """An offering baked --from-ir is described from its manifest.json: numbers range-checked,
    dynamic dimensions a failed check, strings escaped, the JSON re-printed, not pasted."""
    import json
    off = tmp_path / "off"
    off.mkdir()
    (off / "openvino_model.xml").write_text('<?xml version="1.0"?><net name="n" version="11">'
                                            '<layers></layers></net>')
    (off / "manifest.json").write_text(json.dumps({
        "format": "kiln-offering", "source_kind": "openvino-ir\x7f",
        "contract": {"window": 1e300, "chunk": 16, "graphs": [{"name": "ir", "inputs": [
            {"name": "ids\x1b[2J\n", "dtype": "i64", "shape": [1, -1]}]}]}}))
    r = run_kiln("inspect", off)
    assert r.returncode == 2 and "validation: FAILED" in r.stdout, (r.stdout, r.stderr)
    assert_escaped(r.stdout) and "ids\\x1b[2J\\n" in r.stdout
    r = run_kiln("inspect", off, "--json")
    assert r.returncode == 2 and "\x7f" not in r.stdout
    assert json.loads(r.stdout)["contract"]["graphs"][0]["inputs"][0]["name"] == "ids\x1b[2J\n"
