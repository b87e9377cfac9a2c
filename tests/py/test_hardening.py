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
