"""One model, many sessions (tests/tools/kn_sessions_tool.c, public API only).

Four sessions on one model answer four prompts, first one after another, then all at once from
four threads: the ids must be bit-identical (the sessions share the model's weights and thread
pool and nothing they write). The same run under ThreadSanitizer is `make test-tsan`
(KILN_TSAN=1), which .ci/run includes. On OpenVINO's CPU plugin, two sessions on one model
compile each graph once (the model shares the compiled graphs; only infer requests are per
session)."""
import os
import subprocess
import sys

import pytest

from conftest import BUILD, SANITIZED, sanitizer_env

TSAN = os.environ.get("KILN_TSAN") == "1"


def tool(*args, timeout=900):
    exe = BUILD / "kn_sessions_tool"
    env = dict(os.environ) if TSAN else sanitizer_env()
    # OpenVINO is found as users find it: python3 on PATH (this interpreter's) and its wheel
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if TSAN:
        # a report is a failure, with the stacks on stderr
        env["TSAN_OPTIONS"] = "halt_on_error=1 exitcode=66 second_deadlock_stack=1"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def parse(stdout, counters=None):
    seq, par, compiles = {}, {}, None
    for line in stdout.splitlines():
        tag, *rest = line.split()
        if tag in ("BATCHED", "BATCHED_SEQ") and counters is not None:
            counters[tag] = int(rest[0])
        if tag == "COMPILES":
            compiles = int(rest[0])
        elif tag in ("SEQ", "PAR"):
            (seq if tag == "SEQ" else par)[int(rest[0])] = [int(x) for x in rest[1:]]
    return seq, par, compiles


@pytest.mark.parametrize("threads", [2] if SANITIZED else [1, 2])
def test_four_sessions_in_parallel_equal_one_after_another(smollm_gguf, tmp_path, threads):
    from conftest import run_kiln
    off = tmp_path / "off"
    assert run_kiln("bake", smollm_gguf, "-o", off, "--quiet", "--window", 128,
                    "--chunk", 16).returncode == 0
    r = tool(off, 4, 6 if TSAN else 24, "--threads", threads)
    assert r.returncode == 0, r.stdout + r.stderr
    counters = {}
    seq, par, compiles = parse(r.stdout, counters)
    assert sorted(seq) == [0, 1, 2, 3] and seq == par
    assert all(len(v) > 0 for v in seq.values())
    assert len({tuple(v) for v in seq.values()}) > 1   # four prompts, not one answer four times
    assert compiles == 0                                # the native CPU compiles nothing
    # one after another nothing batches; at once, decode steps share passes over the weights
    # (and the ids above are still bit-identical)
    assert counters["BATCHED_SEQ"] == 0 and counters["BATCHED"] > 0, counters


def test_stateless_sessions_in_parallel(stories, tmp_path):
    from conftest import run_kiln
    off = tmp_path / "off"
    assert run_kiln("bake", stories, "-o", off, "--quiet", "--quant", "keep", "--window", 64,
                    "--chunk", 8).returncode == 0
    r = tool(off, 4, 20, "--threads", 2, "--mode", "stateless")
    assert r.returncode == 0, r.stdout + r.stderr
    seq, par, _ = parse(r.stdout)
    assert seq == par and len(seq) == 4


@pytest.mark.skipif(TSAN, reason="OpenVINO is not built for ThreadSanitizer")
def test_openvino_sessions_share_one_compile(stories, tmp_path):
    """Two sessions on openvino:CPU: prefill and decode are compiled once (2 compiles, not 4),
    and each session's answer equals what it gives alone."""
    from conftest import run_kiln
    off = tmp_path / "ov"
    r = run_kiln("bake", stories, "-o", off, "--quiet", "--quant", "keep", "--target", "openvino",
                 "--window", 64, "--chunk", 8)
    assert r.returncode == 0, r.stderr
    r = tool(off, 2, 12, "--device", "openvino:CPU")
    assert r.returncode == 0, r.stdout + r.stderr
    seq, par, compiles = parse(r.stdout)
    assert seq == par and len(seq) == 2
    assert compiles == 2, r.stdout
