"""The include graph of src/ points downward (docs/ARCHITECTURE.md):

    cli -> runtime -> bake -> backends -> tokenizer -> template -> kernels -> model -> formats
        -> quant -> base

A file may include headers of its own folder (subfolders of a layer are part of it:
backends/cpu and backends/openvino are backends) and of any layer below, never one above; the
command line (src/cli) sees only the public header include/kiln.h and its own files. Checked
on the sources themselves, so a new #include that bends an arrow fails here."""
import re
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"
ORDER = ["base", "quant", "formats", "model", "kernels", "template", "tokenizer", "backends",
         "bake", "runtime", "cli"]
RANK = {name: i for i, name in enumerate(ORDER)}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer(path: Path) -> str:
    return path.relative_to(SRC).parts[0]


def edges():
    for f in sorted(SRC.rglob("*.[ch]")):
        for h in INCLUDE.findall(f.read_text(errors="replace")):
            yield f, h


def test_every_folder_has_a_layer():
    assert sorted({layer(f) for f in SRC.rglob("*.[ch]")}) == sorted(ORDER)


@pytest.mark.parametrize("f,h", [pytest.param(f, h, id=f"{f.relative_to(SRC)}:{h}")
                                 for f, h in edges()])
def test_include_points_down(f, h):
    src = layer(f)
    if h == "kiln.h":
        return                                      # the public API: anyone may use it
    if src == "cli":
        # the command line uses only the public header and its own files
        assert "/" not in h, f"{f.relative_to(SRC)} includes {h}: cli sees only kiln.h"
        assert (f.parent / h).exists(), h
        return
    target = h.split("/")[0]
    if "/" not in h:
        assert (f.parent / h).exists(), f"{f.relative_to(SRC)}: {h} is not beside it"
        return
    assert target in RANK, f"{f.relative_to(SRC)} includes {h}: unknown folder"
    assert RANK[target] <= RANK[src], \
        f"{f.relative_to(SRC)} ({src}) includes {h} ({target}), a layer above it"


def test_no_backend_reaches_into_the_runtime():
    bad = [(f, h) for f, h in edges() if layer(f) == "backends" and h.startswith("runtime/")]
    assert not bad
