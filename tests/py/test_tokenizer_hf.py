"""kiln's tokenizer against Hugging Face `tokenizers` (the oracle) on SmolLM2-135M-Instruct.

The GGUF's vocabulary and merges are turned into a tokenizer.json with the `tokenizers` library
(byte-level BPE with SmolLM2's pre-tokenizer: individual digits, then the GPT-2 regex), written
to a temporary Hugging Face folder. kiln encodes the committed corpus from the GGUF and from
that folder; both must equal HF's ids, and decode(encode(x)) must give x back.

Binaries come from $KILN_BUILD (default build/). The GGUF is found at $KILN_SMOLLM2_GGUF or
.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_models.sh puts it there).
"""
import json
import os
import pathlib
import subprocess

import pytest

from conftest import smollm2_hf_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("KILN_BUILD", ROOT / "build"))
KILN = BUILD / "kiln"
GGUF = pathlib.Path(os.environ.get("KILN_SMOLLM2_GGUF",
                                   ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
CORPUS = json.loads((ROOT / "tests/data/tokenizer_corpus.json").read_text(encoding="utf-8"))

tokenizers = pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")

pytestmark = [
    pytest.mark.skipif(not KILN.exists(), reason=f"{KILN} not built"),
    pytest.mark.skipif(not GGUF.exists(), reason=f"{GGUF} missing (scripts/fetch_models.sh)"),
]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("smollm2_hf")
    return d, smollm2_hf_tokenizer(GGUF, d)


def _kiln_tokenize(source, text, tmp_path):
    f = tmp_path / "in.txt"
    f.write_bytes(text.encode("utf-8"))
    out = subprocess.run([str(KILN), "tokenize", str(source), "--file", str(f), "--special"],
                         capture_output=True, check=True)
    return [int(x) for x in out.stdout.split()]


def _kiln_detokenize(source, ids):
    out = subprocess.run([str(KILN), "detokenize", str(source), "--special",
                          " ".join(map(str, ids)) or ""],
                         capture_output=True, check=True)
    assert out.stdout.endswith(b"\n")
    return out.stdout[:-1].decode("utf-8")


@pytest.mark.parametrize("idx", range(len(CORPUS)))
def test_ids_equal_hf(hf_dir, tmp_path, idx):
    d, tok = hf_dir
    text = CORPUS[idx]
    want = tok.encode(text, add_special_tokens=False).ids
    assert _kiln_tokenize(GGUF, text, tmp_path) == want, "from GGUF"
    assert _kiln_tokenize(d, text, tmp_path) == want, "from the HF folder"


@pytest.mark.parametrize("idx", range(len(CORPUS)))
def test_decode_roundtrip(hf_dir, tmp_path, idx):
    d, tok = hf_dir
    text = CORPUS[idx]
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    if "\x00" in text:  # a C string argument cannot carry NUL; the encode test covers it
        return
    assert _kiln_detokenize(GGUF, ids) == text
    assert _kiln_detokenize(d, ids) == text


def test_whole_corpus_one_call(hf_dir, tmp_path):
    d, tok = hf_dir
    text = "\n".join(CORPUS) * 3
    want = tok.encode(text, add_special_tokens=False).ids
    assert _kiln_tokenize(GGUF, text, tmp_path) == want
    assert _kiln_tokenize(d, text, tmp_path) == want


def test_cli_errors(tmp_path):
    r = subprocess.run([str(KILN), "tokenize", str(tmp_path / "nope.gguf"), "--text", "x"],
                       capture_output=True)
    assert r.returncode == 2 and b"nope.gguf" in r.stderr and r.stderr.count(b"\n") == 1
    r = subprocess.run([str(KILN), "tokenize", str(GGUF)], capture_output=True)
    assert r.returncode == 2
    r = subprocess.run([str(KILN), "detokenize", str(GGUF), "12x"], capture_output=True)
    assert r.returncode == 2 and b"12x" in r.stderr
    r = subprocess.run([str(KILN), "detokenize", str(GGUF), "99999999"], capture_output=True)
    assert r.returncode == 2
    for cmd in ("tokenize", "detokenize"):
        r = subprocess.run([str(KILN), cmd, "--help"], capture_output=True)
        assert r.returncode == 0 and b"usage: kiln " + cmd.encode() in r.stdout


QWEN3_TEMPLATE = (ROOT / "tests/data/chat_templates/qwen3.jinja").read_text(encoding="utf-8")


@pytest.mark.parametrize("kwargs", [None, '{"enable_thinking": false}', '{"enable_thinking": true}'])
def test_run_chat_template_kwargs(tmp_path, kwargs):
    """`kiln run --chat-template-kwargs` reaches the model's template: the prompt ids of a run with
    Qwen3's template (in a tokenizer folder beside SmolLM2's weights) equal HF `tokenizers` on
    what jinja2 renders with the same keyword arguments."""
    from test_chat_templates import hf_render
    tok = smollm2_hf_tokenizer(GGUF, tmp_path / "tok", QWEN3_TEMPLATE)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    text = hf_render(QWEN3_TEMPLATE, msgs, True, "", "<|im_end|>",
                     json.loads(kwargs) if kwargs else None)
    assert text.endswith("<think>\n\n</think>\n\n") == (kwargs == '{"enable_thinking": false}')
    args = [str(KILN), "run", str(GGUF), "--tokenizer_id", str(tmp_path / "tok"), "--system",
            "Be brief.", "--prompt", "Hi there", "-n", "1", "--json"]
    r = subprocess.run(args + (["--chat-template-kwargs", kwargs] if kwargs else []),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["prompt_tokens"] == tok.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("bad", ["[]", "{", "enable_thinking=false", '"x"'])
def test_run_chat_template_kwargs_refused(bad):
    r = subprocess.run([str(KILN), "run", str(GGUF), "--prompt", "x", "--chat-template-kwargs", bad],
                       capture_output=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count(b"\n") == 1 and b"--chat-template-kwargs" in r.stderr, r.stderr
