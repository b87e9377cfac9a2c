"""kiln's reference (de)quantizers against gguf-py's, bit for bit.

Drives build/kn_quant_tool (tests/tools/kn_quant_tool.c). Every comparison is exact on the raw
bits: float32 outputs are compared as uint32, quantized blocks as bytes. gguf-py computes in
float32 one numpy operation at a time, and src/quant/quant_ref.c is written to do the same
operations in the same order, so no tolerance is needed.

gguf-py has no dequantizer for F64, I8, I16, I32 or Q8_K; for those the reference is the obvious
numpy expression, written out below.
"""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gq

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240611


def tool_path() -> Path:
    build = Path(os.environ.get("KILN_BUILD", "build"))
    if not build.is_absolute():
        build = ROOT / build
    tool = build / "kn_quant_tool"
    # No skip: a missing tool means the build is broken, and that must fail the suite.
    assert tool.is_file() and os.access(tool, os.X_OK), f"{tool} is missing: build kiln first"
    return tool


def run_tool(tmp_path: Path, mode: str, type_name: str, data: bytes) -> bytes:
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    if dst.exists():
        dst.unlink()
    proc = subprocess.run([str(tool_path()), mode, type_name, str(src), str(dst)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kn_quant_tool {mode} {type_name}: {proc.stderr.strip()}"
    return dst.read_bytes()


def bits32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).ravel()


def assert_same_bits(ref: np.ndarray, got: np.ndarray, what: str, block: int = 1) -> None:
    r, g = bits32(ref), bits32(got)
    assert r.shape == g.shape, f"{what}: {r.shape} elements vs {g.shape}"
    bad = np.flatnonzero(r != g)
    if bad.size:
        i = int(bad[0])
        raise AssertionError(
            f"{what}: {bad.size} of {r.size} elements differ; first at {i} (block {i // block}): "
            f"gguf-py {r.view(np.float32)[i]!r} (0x{r[i]:08x}) vs kiln "
            f"{g.view(np.float32)[i]!r} (0x{g[i]:08x})")


# --- dequantize -------------------------------------------------------------------------------

# Byte offsets of the F16 scale fields in each block (ggml-common.h). Random bytes there could
# be NaN/Inf, which says nothing about the format; they are replaced by random finite halves.
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
GGUF_PY_DEQUANT = ["F32", "F16", "BF16", *F16_FIELDS]
N_BLOCKS = 600


def random_blocks(rng: np.random.Generator, name: str) -> np.ndarray:
    _, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    blocks = rng.integers(0, 256, size=(N_BLOCKS, type_size), dtype=np.uint8)
    for off in F16_FIELDS.get(name, []):
        # Any finite half: zeros, subnormals and the largest values included.
        h = rng.integers(0, 0x7c00, size=N_BLOCKS, dtype=np.uint16)
        h |= rng.integers(0, 2, size=N_BLOCKS, dtype=np.uint16) << np.uint16(15)
        h[:4] = [0x0000, 0x8000, 0x0001, 0x7bff]
        blocks[:, off:off + 2] = h.view(np.uint8).reshape(N_BLOCKS, 2)
    return blocks


@pytest.mark.parametrize("name", GGUF_PY_DEQUANT)
def test_dequantize_matches_gguf_py(tmp_path, name):
    rng = np.random.default_rng([SEED, GGMLQuantizationType[name]])
    if name in ("F16", "BF16"):
        # Every bit pattern, NaN payloads and subnormals included, then random ones.
        raw = np.concatenate([np.arange(65536, dtype=np.uint16),
                              rng.integers(0, 65536, 4096, dtype=np.uint16)]).view(np.uint8)
    else:
        raw = random_blocks(rng, name).ravel()
    qtype = GGMLQuantizationType[name]
    ref = gq.dequantize(raw, qtype)
    got = np.frombuffer(run_tool(tmp_path, "dequant", name, raw.tobytes()), dtype=np.float32)
    assert_same_bits(ref, got, f"dequantize {name}", GGML_QUANT_SIZES[qtype][0])


def numpy_only_cases(rng: np.random.Generator):
    """(name, raw bytes, reference float32) for the types gguf-py cannot dequantize."""
    f64 = np.concatenate([
        rng.standard_normal(2000) * 10.0 ** rng.integers(-45, 45, 2000),
        [0.0, -0.0, 1e300, -1e300, 1e-300, 1.5e-45, 7e-46, 3.4028235e38, 3.4028236e38,
         np.inf, -np.inf, 1.0 + 2.0 ** -24, 1.0 + 3 * 2.0 ** -24, 16777217.0],
    ]).astype(np.float64)
    with np.errstate(over="ignore"):  # 1e300 -> Inf is one of the cases
        yield "F64", f64.tobytes(), f64.astype(np.float32)
    for name, dt in (("I8", np.int8), ("I16", np.int16), ("I32", np.int32)):
        v = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, 3000, dtype=dt, endpoint=True)
        v[:3] = [np.iinfo(dt).min, np.iinfo(dt).max, 0]
        if dt is np.int32:  # values where int -> float rounds (ties to even included)
            v[3:7] = [16777217, 16777219, -16777217, 2147483583]
        yield name, v.tobytes(), v.astype(np.float32)
    # Q8_K: f32 d, int8 qs[256], int16 bsums[16]; y = d * q.
    nb = N_BLOCKS
    d = (rng.standard_normal(nb) * 10.0 ** rng.integers(-30, 30, nb)).astype(np.float32)
    d[:3] = [0.0, -0.0, np.float32(1e-40)]
    qs = rng.integers(-128, 128, (nb, 256), dtype=np.int8)
    bsums = rng.integers(-32768, 32768, (nb, 16), dtype=np.int16)
    raw = np.concatenate([d.reshape(nb, 1).view(np.uint8), qs.view(np.uint8),
                          bsums.view(np.uint8)], axis=1)
    assert raw.shape[1] == GGML_QUANT_SIZES[GGMLQuantizationType.Q8_K][1]
    yield "Q8_K", raw.tobytes(), (d.reshape(nb, 1) * qs.astype(np.float32)).ravel()


def test_dequantize_types_gguf_py_lacks(tmp_path):
    rng = np.random.default_rng([SEED, 999])
    for name, raw, ref in numpy_only_cases(rng):
        got = np.frombuffer(run_tool(tmp_path, "dequant", name, raw), dtype=np.float32)
        assert_same_bits(ref, got, f"dequantize {name}")


# --- quantize ---------------------------------------------------------------------------------

def awkward_blocks(rng: np.random.Generator, bs: int) -> np.ndarray:
    """Blocks of bs float32 meant to hit every branch and rounding edge of the quantizers."""
    f = np.float32
    rows = [
        np.zeros(bs), np.full(bs, -0.0), np.full(bs, 3.0), np.full(bs, -2.5), np.full(bs, 1e-30),
        # Ties: with max |x| = 8 (Q4_0: d = -1) or 127 (Q8_0: d = 1) or a range of 15 (Q4_1:
        # d = 1) these land exactly on .5 boundaries.
        np.resize(np.arange(-8.0, 8.0, 0.5), bs),
        np.resize(np.concatenate([[127.0], np.arange(-126.5, 0, 4.0)]), bs),
        np.resize(np.concatenate([[-127.0], np.arange(0.5, 120, 3.5)]), bs),
        np.resize(np.arange(0.0, 16.0, 0.5) - 0.5, bs),
        np.resize([8.0, -8.0, 4.0, -4.0, 0.5, -0.5, 1.5, -1.5], bs),   # first of a tie wins argmax
        np.resize([-8.0, 8.0, 4.5, -4.5, 2.5, -2.5], bs),
        -np.abs(rng.standard_normal(bs)),                                 # negative only
        np.abs(rng.standard_normal(bs)),                                  # positive only
        np.concatenate([[1e4], rng.standard_normal(bs - 1) * 1e-3]),      # one huge outlier
        np.concatenate([rng.standard_normal(bs - 1) * 1e-3, [-3e4]]),
        np.concatenate([rng.standard_normal(bs - 1), [1e30]]),            # d overflows F16
        np.concatenate([rng.standard_normal(bs - 1), [-3e38]]),
        np.resize([3e38, -3e38], bs),                                     # max - min overflows
        rng.standard_normal(bs) * 1e-6,                                   # d is an F16 subnormal
        rng.standard_normal(bs) * 1e-9,                                   # d flushes to F16 zero
        rng.standard_normal(bs) * 1e-36,                                  # 1/d still finite
        rng.standard_normal(bs) * 1e-39,                                  # F32 subnormal: 1/d = Inf
        np.resize([1e-45, 0.0, -1e-45], bs), np.resize([0.0, -0.0], bs), np.resize([-0.0, 0.0], bs),
        np.resize([65504.0 * 8, 1.0], bs), np.resize([-65520.0 * 8, 1.0], bs),
    ]
    rows = [np.asarray(r, dtype=f) for r in rows]
    # Random blocks at many magnitudes.
    for _ in range(300):
        scale = f(10.0 ** rng.uniform(-8, 6))
        rows.append((rng.standard_normal(bs) * scale).astype(f))
    return np.stack(rows).astype(f)


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q8_0"])
def test_quantize_matches_gguf_py(tmp_path, name):
    qtype = GGMLQuantizationType[name]
    bs, type_size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng([SEED, 7, qtype])
    x = awkward_blocks(rng, bs)
    with np.errstate(all="ignore"):  # gguf-py divides by zero / overflows on the awkward rows
        ref = gq.quantize(x.ravel(), qtype).view(np.uint8).reshape(-1, type_size)
    got = np.frombuffer(run_tool(tmp_path, "quant", name, x.tobytes()), dtype=np.uint8)
    got = got.reshape(-1, type_size)
    if name == "Q4_1":
        ref, got = ref.copy(), got.copy()
        # The one allowed difference. When +0 and -0 are both in a block and tie for its max or
        # min, which of them numpy's max()/min() returns depends on its SIMD reduction order
        # (kiln, like ggml's C reference, keeps the first). Only the sign of a zero d or m
        # changes, never a dequantized value, so the sign bit of zero d/m fields is ignored in
        # exactly those blocks.
        mixed = ((x == 0) & np.signbit(x)).any(axis=1) & ((x == 0) & ~np.signbit(x)).any(axis=1)
        for off in (0, 2):
            for a in (ref, got):
                zero = mixed & (a[:, off] == 0) & ((a[:, off + 1] & 0x7f) == 0)
                a[zero, off + 1] = 0
    bad = np.flatnonzero((ref != got).any(axis=1))
    assert bad.size == 0, (f"quantize {name}: {bad.size} of {len(ref)} blocks differ; first "
                           f"block {bad[0]} input {x[bad[0]].tolist()}\n gguf-py {ref[bad[0]].tobytes().hex()}"
                           f"\n kiln    {got[bad[0]].tobytes().hex()}")


def float_edge_values(rng: np.random.Generator) -> np.ndarray:
    """float32 values covering every half / bfloat16 rounding case."""
    hi = np.arange(65536, dtype=np.uint32) << np.uint32(16)
    # Low halves chosen around the F16 rounding point (bit 12 of the mantissa) and the bfloat16
    # one (bit 15): below, exactly at and above each tie, with even and odd kept bits.
    lows = np.array([0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x7fff,
                     0x8000, 0x8001, 0xefff, 0xf000, 0xffff], dtype=np.uint32)
    structured = (hi.reshape(-1, 1) | lows.reshape(1, -1)).ravel()
    rand = rng.integers(0, 2 ** 32, 200000, dtype=np.uint32)
    # Subnormal-half range in detail: every float32 whose F16 result is a subnormal tie.
    k = np.arange(1, 1024, dtype=np.float64)
    ties = np.concatenate([(k + 0.5) * 2.0 ** -24, (k - 0.5) * 2.0 ** -24 * -1,
                           [65504.0, 65519.0, 65520.0, 65520.5, 2.0 ** -25, 2.0 ** -24 * 1.5]])
    ties = ties.astype(np.float32).view(np.uint32)
    return np.concatenate([structured, rand, ties]).view(np.float32)


@pytest.mark.parametrize("name", ["F16", "BF16", "F32"])
def test_quantize_float_types_match_gguf_py(tmp_path, name):
    qtype = GGMLQuantizationType[name]
    x = float_edge_values(np.random.default_rng([SEED, 11]))
    with np.errstate(over="ignore"):  # values past 65504 become Inf, as they should
        ref = np.ascontiguousarray(gq.quantize(x, qtype)).view(np.uint8)
    got = np.frombuffer(run_tool(tmp_path, "quant", name, x.tobytes()), dtype=np.uint8)
    assert ref.size == got.size
    w = ref.size // x.size
    bad = np.flatnonzero((ref.reshape(-1, w) != got.reshape(-1, w)).any(axis=1))
    assert bad.size == 0, (f"quantize {name}: {bad.size} of {x.size} values differ; first "
                           f"0x{x.view(np.uint32)[bad[0]]:08x}: gguf-py "
                           f"{ref.reshape(-1, w)[bad[0]].tobytes().hex()} vs kiln "
                           f"{got.reshape(-1, w)[bad[0]].tobytes().hex()}")


# --- the tool's own error handling ------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["dequant", "Q4_0"],                     # too few arguments
    ["frobnicate", "Q4_0", "a", "b"],
    ["dequant", "Q9_9", "a", "b"],
    ["quant", "Q2_K", "a", "b"],             # no quantizer
    ["dequant", "I64", "a", "b"],            # no dequantizer
])
def test_tool_rejects_bad_arguments(tmp_path, args):
    (tmp_path / "a").write_bytes(b"\0" * 18 * 4)
    proc = subprocess.run([str(tool_path()), *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (proc.returncode, proc.stderr)


def test_tool_rejects_partial_block(tmp_path):
    (tmp_path / "a").write_bytes(b"\0" * 17)
    proc = subprocess.run([str(tool_path()), "dequant", "Q4_0", "a", "b"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "whole number of blocks" in proc.stderr
    (tmp_path / "a").write_bytes(b"\0" * 4 * 31)
    proc = subprocess.run([str(tool_path()), "quant", "Q8_0", "a", "b"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "whole number of blocks" in proc.stderr
