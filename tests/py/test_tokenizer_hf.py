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


def _field_strs(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def _field_ints(reader, key):
    f = reader.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    r = gguf.GGUFReader(str(GGUF))
    tokens = _field_strs(r, "tokenizer.ggml.tokens")
    types = _field_ints(r, "tokenizer.ggml.token_type")
    merges = _field_strs(r, "tokenizer.ggml.merges")
    template = bytes(r.fields["tokenizer.chat_template"].parts[-1]).decode("utf-8")
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    d = tmp_path_factory.mktemp("smollm2_hf")
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>", "add_bos_token": False, "chat_template": template,
    }), encoding="utf-8")
    return d, tok


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
