"""kiln run end to end. Independent references: the llama2.c greedy goldens for stories260K
(../shared/models/stories260K, produced by run.c), plus behaviour checks of the loop itself
(window overflow, stop strings, seeds, bad input)."""
import json
import os

import pytest

from conftest import SANITIZED, SHARED, run_kiln

GOLD = SHARED / "models" / "stories260K"


def golden(name):
    prompt, steps = None, []
    for line in (GOLD / name).read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "PROMPT":
            prompt = [int(x) for x in parts[1:]]
        elif parts and parts[0] == "ID":
            steps.append((int(parts[1]), int(parts[2]), int(parts[3])))
    return prompt, steps


def run_json(model, *args, check=True, kernels=None):
    r = run_kiln("run", model, "--json", "-t", 1, *args, kernels=kernels)
    if check:
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    return r


@pytest.fixture(scope="module")
def stories_offering(stories, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "off"
    r = run_kiln("bake", stories, "-o", out, "--quant", "keep", "--quiet", "--chunk", 16)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("mode", ["kv", "stateless"])
@pytest.mark.parametrize("which", ["gguf", "offering"])
def test_stories_greedy_once_upon_a_time(stories, stories_offering, mode, which, kernels):
    prompt, steps = golden("greedy_once_upon_64.ids")
    model = stories if which == "gguf" else stories_offering
    n_gen = len(steps) - (len(prompt) - 1)
    doc = run_json(model, "--raw", "--prompt", "Once upon a time", "--mode", mode,
                   "--max-tokens", n_gen, kernels=kernels)
    assert doc["kernels"] == kernels
    assert doc["prompt_tokens"] == prompt
    want = [nxt for pos, _, nxt in steps if pos >= len(prompt) - 1]
    assert doc["tokens"] == want
    assert doc["finish_reason"] == "length" and doc["mode"] == mode
    text = (GOLD / "greedy_once_upon_64.txt").read_text()
    assert text.startswith("Once upon a time" + doc["text"][:40])


@pytest.mark.parametrize("kv", ["f16", "f32"])
def test_kv_cache_types_give_run_c_greedy_ids(stories_offering, kv):
    """Both KV cache types of the native engine reproduce llama2.c's greedy continuation (the
    f16 one rounds keys and values to halves; on stories260K no greedy choice moves)."""
    prompt, steps = golden("greedy_once_upon_64.ids")
    n_gen = len(steps) - (len(prompt) - 1)
    doc = run_json(stories_offering, "--raw", "--prompt", "Once upon a time", "--kv", kv,
                   "--max-tokens", n_gen)
    assert doc["tokens"] == [nxt for pos, _, nxt in steps if pos >= len(prompt) - 1]


def test_q8_0_kv_cache(stories_offering, smollm_gguf):
    """--kv q8_0 runs where the head size is a multiple of 32 (SmolLM2: 64), reports q8_0 as
    llama-bench's type_k / type_v, and is refused, in one line naming the head size, where it
    is not (stories260K: 8). Its logits against llama.cpp: test_llamacpp_reference.py."""
    r = run_kiln("bench", smollm_gguf, "-p", "8", "-n", "4", "-t", "1", "-r", "1", "--kv",
                 "q8_0", "--json")
    assert r.returncode == 0, r.stderr
    assert {(x["type_k"], x["type_v"]) for x in json.loads(r.stdout)} == {("q8_0", "q8_0")}
    r = run_kiln("run", stories_offering, "--raw", "--prompt", "Once", "--kv", "q8_0",
                 "--max-tokens", 2)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "multiple of 32" in r.stderr and "is 8" in r.stderr


def test_every_metric_is_reported(stories_offering):
    doc = run_json(stories_offering, "--raw", "--prompt", "Once upon a time", "--max-tokens", 20)
    for k in ("ttft_ms", "prefill_tps", "decode_tps", "latency_p50_ms", "latency_p95_ms",
              "peak_rss_mb", "total_ms"):
        assert doc[k] > 0, k
    assert doc["device"] == "cpu" and doc["n_generated"] == 20 and doc["n_prompt"] == 5
    r = run_kiln("run", stories_offering, "--raw", "--prompt", "Once upon a time",
                 "--max-tokens", 8)
    assert r.returncode == 0
    assert r.stdout.startswith(",") or r.stdout.startswith(" ")
    line = r.stderr.strip().splitlines()[-1]
    for word in ("prompt 5 tok", "generated 8 tok", "TTFT", "prefill", "decode", "p50", "p95",
                 "peak RSS", "device cpu", "kernels ", "mode kv", "finish length"):
        assert word in line, (word, line)


def test_window_full_stops_with_length(stories, tmp_path):
    off = tmp_path / "w32"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--window", 32,
                    "--chunk", 8, "--quiet").returncode == 0
    for mode in ("kv", "stateless"):
        doc = run_json(off, "--raw", "--prompt", "Once upon a time", "--max-tokens", 100,
                       "--mode", mode)
        # 5 prompt tokens in 32 slots: 27 decoded tokens plus the one sampled last
        assert doc["n_generated"] == 32 - 5 + 1 and doc["finish_reason"] == "length", mode
        if mode == "kv":
            kv_tokens = doc["tokens"]
        else:
            assert doc["tokens"] == kv_tokens      # both modes agree up to the wall
    prompt, steps = golden("greedy_once_upon_64.ids")
    assert kv_tokens == [n for p, _, n in steps if p >= 4][:len(kv_tokens)]


def test_overflow_slide_goes_past_the_window(stories, tmp_path):
    off = tmp_path / "w32"
    assert run_kiln("bake", stories, "-o", off, "--quant", "keep", "--window", 32,
                    "--chunk", 8, "--quiet").returncode == 0
    doc = run_json(off, "--raw", "--prompt", "Once upon a time", "--max-tokens", 100,
                   "--overflow", "slide")
    assert doc["n_generated"] == 100 and doc["finish_reason"] == "length"
    # until the window fills, sliding changes nothing
    prompt, steps = golden("greedy_once_upon_64.ids")
    assert doc["tokens"][:28] == [n for p, _, n in steps if p >= 4][:28]


def test_stop_string_is_honoured_and_not_printed(stories_offering):
    doc = run_json(stories_offering, "--raw", "--prompt", "Once upon a time", "--max-tokens",
                   60, "--stop", "Lily")
    assert doc["finish_reason"] == "stop"
    assert doc["text"] == ", there was a little girl named "


def test_sampling_is_reproducible_by_seed(stories_offering):
    a = run_json(stories_offering, "--raw", "--prompt", "Once upon a time", "--temp", "1.0",
                 "--seed", 7, "--max-tokens", 40)
    b = run_json(stories_offering, "--raw", "--prompt", "Once upon a time", "--temp", "1.0",
                 "--seed", 7, "--max-tokens", 40)
    c = run_json(stories_offering, "--raw", "--prompt", "Once upon a time", "--temp", "1.0",
                 "--seed", 8, "--max-tokens", 40)
    assert a["tokens"] == b["tokens"]
    assert a["tokens"] != c["tokens"]


def test_old_flags_keep_working(stories_offering):
    r = run_kiln("run", "--model_xml", stories_offering / "manifest.json", "--prompt",
                 "Once upon a time", "--raw", "--max-tokens", 4, "--json", "-t", 1)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tokens"] == [432, 383, 286, 261]


@pytest.mark.parametrize("args,word", [
    (["--prompt", ""], "empty"),
    (["--prompt", "x", "--threads", "0"], "--threads"),
    (["--prompt", "x", "--mode", "fast"], "--mode"),
    (["--prompt", "x", "--overflow", "wrap"], "--overflow"),
    (["--prompt", "x", "--kv", "f8"], "--kv"),
    (["--prompt", "x", "--temp", "-1"], "--temp"),
    (["--max-tokens", "5"], "--prompt"),
])
def test_bad_run_options(stories_offering, args, word):
    r = run_kiln("run", stories_offering, *args)
    assert r.returncode == 2, r.stderr
    assert word in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_invalid_utf8_prompt(stories_offering):
    import subprocess
    from conftest import kiln_bin
    r = subprocess.run([str(kiln_bin()), "run", str(stories_offering), "--prompt",
                        b"bad \xff\xfe bytes"], capture_output=True)
    assert r.returncode == 2 and b"UTF-8" in r.stderr


def test_prompt_longer_than_window(stories, tmp_path):
    off = tmp_path / "w8"
    assert run_kiln("bake", stories, "-o", off, "--window", 8, "--chunk", 4,
                    "--quiet").returncode == 0
    r = run_kiln("run", off, "--raw", "--prompt", "Once upon a time there was a little girl")
    assert r.returncode == 2 and "window" in r.stderr and len(r.stderr.splitlines()) == 1


def test_missing_and_corrupt_offerings(stories_offering, tmp_path):
    r = run_kiln("run", tmp_path / "nothing", "--prompt", "hi")
    assert r.returncode == 2 and "nothing" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (stories_offering / "model.gguf").read_bytes()
    (bad / "model.gguf").write_bytes(data[: len(data) // 2])
    (bad / "manifest.json").write_text("{}")
    r = run_kiln("run", bad, "--prompt", "hi")
    assert r.returncode == 2 and "model.gguf" in r.stderr and len(r.stderr.splitlines()) == 1


def test_devices_without_accelerators(stories_offering):
    r = run_kiln("run", stories_offering, "--prompt", "hi", "--raw", "--device", "npu")
    assert r.returncode == 3 and "cpu" in r.stderr
    r = run_kiln("run", stories_offering, "--prompt", "Once", "--raw", "--max-tokens", 2,
                 "--device", "auto")
    assert r.returncode == 0


def test_smollm2_chat_answers_planets(smollm_gguf, tmp_path):
    off = tmp_path / "smol"
    assert run_kiln("bake", smollm_gguf, "-o", off, "--quiet", "--window", 256).returncode == 0
    ask = ("--system", "You are a helpful assistant.", "--prompt", "List the planets.",
           "--repeat-penalty", "1.1")
    doc = run_json(off, *ask, "--max-tokens", 48, "-t", 2)
    text = doc["text"]
    planets = ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune")
    assert sum(p in text for p in planets) >= 5, text
    # kv and stateless give the same greedy tokens (each stateless step recomputes the window:
    # a few under ASan)
    n = 6 if SANITIZED else 24
    st = run_json(off, *ask, "--max-tokens", n, "--mode", "stateless", "-t", 2)
    assert st["tokens"] == doc["tokens"][:n]


def test_bench_json_has_llama_bench_fields(stories_offering):
    r = run_kiln("bench", stories_offering, "-p", "16", "-n", "8", "-t", "1",
                 "--mode", "kv,stateless", "-r", "2", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 4
    for row in rows:
        for k in ("n_prompt", "n_gen", "n_threads", "avg_ts", "stddev_ts"):
            assert k in row
        assert row["avg_ts"] > 0
        assert row["type_k"] == row["type_v"] == "f16"
    r = run_kiln("bench", stories_offering, "-p", "0", "-n", "4", "-t", "1", "-r", "1",
                 "--kv", "f32", "--json")
    assert r.returncode == 0, r.stderr
    assert [(x["type_k"], x["type_v"]) for x in json.loads(r.stdout)] == [("f32", "f32")]
    r = run_kiln("bench", stories_offering, "--kv", "q8")
    assert r.returncode == 2 and "--kv" in r.stderr


def test_help_for_runtime_commands():
    for cmd in ("run", "chat", "bench"):
        r = run_kiln(cmd, "--help")
        assert r.returncode == 0 and f"usage: kiln {cmd}" in r.stdout


def test_chat_keeps_the_cache_between_turns(smollm_gguf, tmp_path):
    """Two turns, /reset, one more: the second turn prefills only its own tokens (the history
    stays in the KV cache); after /reset the whole conversation is new again."""
    import subprocess
    from conftest import kiln_bin, sanitizer_env
    off = tmp_path / "smol"
    assert run_kiln("bake", smollm_gguf, "-o", off, "--quiet", "--window", 512).returncode == 0
    turns = "What is 2+2?\nAnd 3+3?\n/reset\nAnd 3+3?\n/quit\n"
    r = subprocess.run([str(kiln_bin()), "chat", str(off), "--max-tokens", "12", "-t", "2",
                        "--system", "You are a helpful assistant."], input=turns,
                       capture_output=True, text=True, timeout=300, env=sanitizer_env())
    assert r.returncode == 0, r.stderr
    from test_hardening import prompt_tokens
    prompts = prompt_tokens(r.stderr)                 # tokens prefilled by each turn
    assert len(prompts) == 3, r.stderr
    first, second, after_reset = prompts
    lines = [l for l in r.stderr.splitlines() if l.startswith("[kiln] prompt")]
    assert "cached" not in lines[0] and "cached" in lines[1] and "cached" not in lines[2]
    # turn 2 feeds only "<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    # and whatever of the answer re-tokenized differently: far less than the whole conversation
    assert second < first
    assert after_reset > second and "conversation reset" in r.stdout


@pytest.mark.parametrize("name", ["nosuch", "AVX2", "avx2 ", "avx512vnni", "avx2", "generic"])
def test_kiln_kernels_names_a_usable_table_or_is_an_error(stories_offering, name):
    """KILN_KERNELS forces a kernel table; a name that does not exist, or names a table this CPU
    cannot run, is a one-line error listing the valid choices (exit 2), never silently replaced
    by the default (a test that forces a table must run that table)."""
    from conftest import usable_tables
    usable = usable_tables()
    r = run_kiln("run", stories_offering, "--raw", "--prompt", "Once", "--max-tokens", 2,
                 "--json", kernels=name)
    if name in usable:
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["kernels"] == name
        return
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kiln: KILN_KERNELS=") and ", ".join(usable) in lines[0]
    v = run_kiln("--version", kernels=name)
    assert v.returncode == 2 and "usable here: " + " ".join(usable) in v.stdout
