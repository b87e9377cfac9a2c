"""Bake acceptance: offerings read back by gguf-py (an independent GGUF reader) hold tensors equal
to the source (kept types) or to gguf-py's own quantization of it (Q4_0 / Q4_1 / Q8_0), from a
GGUF and from Hugging Face folders the tests write from real weights."""
import json

import gguf
import numpy as np
import pytest
from gguf import quants
from safetensors.numpy import save_file

from conftest import run_kiln


def tensors(path):
    r = gguf.GGUFReader(str(path))
    return r, {t.name: t for t in r.tensors}


def f32_of(t):
    """A tensor as float32 in GGUF row order, dequantized by gguf-py."""
    shape = tuple(int(x) for x in reversed(t.shape))
    return quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)


def field(r, key):
    return r.fields[key].contents()


def bake(src, out, *extra):
    r = run_kiln("bake", src, "-o", out, "--quiet", *extra)
    assert r.returncode == 0, r.stderr
    return out / "model.gguf"


QTYPES = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1,
          "q8_0": gguf.GGMLQuantizationType.Q8_0}


def expect_quantized(src_f32, name, scheme):
    """What gguf-py makes of a source tensor under kiln's type policy."""
    if src_f32.ndim == 1:
        return gguf.GGMLQuantizationType.F32, src_f32
    if src_f32.shape[-1] % 32:
        return gguf.GGMLQuantizationType.F16, src_f32.astype(np.float16)
    qt = QTYPES[scheme]
    return qt, quants.quantize(src_f32, qt)


def test_keep_is_bit_exact(stories, tmp_path):
    out = bake(stories, tmp_path / "off", "--quant", "keep")
    _, src = tensors(stories)
    r, dst = tensors(out)
    assert set(src) == set(dst)
    for name, t in src.items():
        assert dst[name].tensor_type == t.tensor_type, name
        assert np.array_equal(np.asarray(dst[name].data), np.asarray(t.data)), name
    # tokenizer carried over untouched
    assert field(r, "tokenizer.ggml.model") == "llama"
    assert len(r.fields["tokenizer.ggml.tokens"].data) == 512
    assert field(r, "kiln.contract.window") == 1024 and field(r, "kiln.contract.chunk") == 128


@pytest.mark.parametrize("scheme", ["q4_0", "q4_1", "q8_0"])
def test_quant_matches_gguf_py(stories, tmp_path, scheme):
    out = bake(stories, tmp_path / "off", "--quant", scheme)
    _, src = tensors(stories)
    _, dst = tensors(out)
    n_quantized = 0
    for name, t in src.items():
        want_type, want = expect_quantized(f32_of(t), name, scheme)
        got = dst[name]
        assert got.tensor_type == want_type, (name, got.tensor_type, want_type)
        got_bytes = np.asarray(got.data).view(np.uint8).reshape(-1)
        want_bytes = np.ascontiguousarray(want).view(np.uint8).reshape(-1)
        assert np.array_equal(got_bytes, want_bytes), f"{name}: differs from gguf-py {scheme}"
        n_quantized += want_type == QTYPES[scheme]
    assert n_quantized >= 30


def test_int4_sym_g128_reads_as_q4_0_with_shared_group_scales(stories, tmp_path):
    out = bake(stories, tmp_path / "off", "--quant", "int4_sym_g128")
    r, dst = tensors(out)
    _, src = tensors(stories)
    assert field(r, "kiln.quant") == "int4_sym_g128"
    t = dst["blk.0.attn_q.weight"]          # rows of 64: groups of 64
    assert t.tensor_type == gguf.GGMLQuantizationType.Q4_0
    blocks = np.asarray(t.data).view(np.uint8).reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).reshape(-1, 2)   # 2 blocks of 32 per row
    assert np.array_equal(d[:, 0], d[:, 1]), "one scale per 64-group"
    # symmetric: dequantized error within half a step of each group's scale
    x = f32_of(src["blk.0.attn_q.weight"])
    y = f32_of(t)
    step = np.repeat(d[:, 0].astype(np.float32), 64).reshape(x.shape)
    assert np.all(np.abs(x - y) <= step * 0.5 + 1e-6)


def test_smollm2_q4_1_keep_bakes_and_inspects(smollm_gguf, tmp_path):
    out = bake(smollm_gguf, tmp_path / "off", "--quant", "keep")
    _, src = tensors(smollm_gguf)
    r, dst = tensors(out)
    for name, t in src.items():
        assert dst[name].tensor_type == t.tensor_type
        assert np.array_equal(np.asarray(dst[name].data), np.asarray(t.data)), name
    assert field(r, "tokenizer.ggml.pre") == "smollm"
    assert "im_start" in field(r, "tokenizer.chat_template")
    insp = run_kiln("inspect", tmp_path / "off", "--json", check=True)
    doc = json.loads(insp.stdout)
    assert doc["validation"]["ok"] is True
    assert doc["quantization"]["classes"]["attention"] == {"Q4_1": 120}
    assert doc["hparams"]["tied_embeddings"] is True
    text = run_kiln("inspect", tmp_path / "off", check=True).stdout
    assert "input  past_kv         f32  [30, 2, 3, 1024, 64]" in text


def test_default_quant_is_keep_for_quantized_sources(smollm_gguf, tmp_path):
    out = bake(smollm_gguf, tmp_path / "off")
    r, _ = tensors(out)
    assert field(r, "kiln.quant") == "keep"


def all_shapes(doc):
    for g in doc["contract"]["graphs"]:
        for io in g["inputs"] + g["outputs"]:
            yield g["name"], io


@pytest.mark.parametrize("window,chunk", [(1024, 128), (64, 16), (7, 7)])
def test_manifest_and_inspect_are_fully_static(stories, tmp_path, window, chunk):
    off = tmp_path / "off"
    bake(stories, off, "--window", window, "--chunk", chunk)
    manifest = json.loads((off / "manifest.json").read_text())
    inspected = json.loads(run_kiln("inspect", off, "--json", check=True).stdout)
    for doc in (manifest, inspected):
        names = {g["name"] for g in doc["contract"]["graphs"]}
        assert names == {"prefill", "decode", "stateless"}
        for gname, io in all_shapes(doc):
            assert set(io) == {"name", "dtype", "shape"}, io
            assert io["shape"] and all(isinstance(d, int) and d > 0 for d in io["shape"]), (gname, io)
        g = {g["name"]: g for g in doc["contract"]["graphs"]}
        ids = {io["name"]: io["shape"] for io in g["prefill"]["inputs"]}
        assert ids["input_ids"] == [1, chunk]
        assert ids["past_kv"] == [5, 2, 4, window, 8]
        assert {io["name"]: io["shape"] for io in g["stateless"]["inputs"]}["input_ids"] == [1, window]
    # the GGUF carries the same graphs
    r, _ = tensors(off / "model.gguf")
    assert json.loads(field(r, "kiln.contract.graphs")) == manifest["contract"]["graphs"]


# ---- Hugging Face folders written from real weights ----

HF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
PER_LAYER = {
    "attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(name):
    if name in HF_NAMES:
        return HF_NAMES[name]
    _, layer, rest = name.split(".", 2)
    return f"model.layers.{layer}.{PER_LAYER[rest]}"


def unpermute(w, n_head):
    """Inverse of llama.cpp's convert_hf_to_gguf permute(): GGUF rows -> Hugging Face rows."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def write_hf_folder(gguf_path, folder, dtype, tokenizer_json=None, extra_config=None):
    """A Hugging Face folder holding the GGUF's weights as real HF checkpoints lay them out."""
    r, src = tensors(gguf_path)
    arch = field(r, "general.architecture")
    n_head = field(r, f"{arch}.attention.head_count")
    n_kv = field(r, f"{arch}.attention.head_count_kv")
    out = {}
    for name, t in src.items():
        w = f32_of(t)
        if name.endswith("attn_q.weight"):
            w = unpermute(w, n_head)
        elif name.endswith("attn_k.weight"):
            w = unpermute(w, n_kv)
        out[hf_name(name)] = w
    folder.mkdir(parents=True)
    if dtype == "f32":
        save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, str(folder / "model.safetensors"))
    else:
        write_bf16_safetensors(out, folder / "model.safetensors")
    tied = "output.weight" not in src
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": int(field(r, f"{arch}.embedding_length")),
        "intermediate_size": int(field(r, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(field(r, f"{arch}.block_count")),
        "num_attention_heads": int(n_head), "num_key_value_heads": int(n_kv),
        "rms_norm_eps": float(field(r, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(r.fields[f"{arch}.rope.freq_base"].contents()) if f"{arch}.rope.freq_base" in r.fields else 10000.0,
        "max_position_embeddings": int(field(r, f"{arch}.context_length")),
        "vocab_size": int(src["token_embd.weight"].shape[1]),
        "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32" if dtype == "f32" else "bfloat16",
    }
    cfg.update(extra_config or {})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer_json:
        (folder / "tokenizer.json").write_text(tokenizer_json)
    return out


def to_bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (what torch and safetensors writers do)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_bf16_safetensors(tensors_f32, path):
    header, blobs, off = {}, [], 0
    for name, w in tensors_f32.items():
        b = to_bf16_bits(w).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(w.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def test_hf_f32_folder_keep_equals_source(stories, tmp_path):
    write_hf_folder(stories, tmp_path / "hf", "f32")
    out = bake(tmp_path / "hf", tmp_path / "off", "--quant", "keep")
    _, src = tensors(stories)
    _, dst = tensors(out)
    assert set(src) == set(dst)
    for name, t in src.items():
        assert dst[name].tensor_type == gguf.GGMLQuantizationType.F32
        # the permutation back to GGUF rows must reproduce the original bytes exactly
        assert np.array_equal(f32_of(dst[name]), f32_of(t)), name


def test_hf_bf16_folder_q8_0_matches_gguf_py(stories, tmp_path):
    write_hf_folder(stories, tmp_path / "hf", "bf16")
    out = bake(tmp_path / "hf", tmp_path / "off", "--quant", "q8_0")
    _, src = tensors(stories)
    _, dst = tensors(out)
    for name, t in src.items():
        # the bf16 source, widened back to f32, is what gets quantized
        x = (to_bf16_bits(f32_of(t)).astype(np.uint32) << 16).view(np.float32)
        want_type, want = expect_quantized(x, name, "q8_0")
        assert dst[name].tensor_type == want_type, name
        got = np.asarray(dst[name].data).view(np.uint8).reshape(-1)
        assert np.array_equal(got, np.ascontiguousarray(want).view(np.uint8).reshape(-1)), name


def smollm_tokenizer_json(r):
    """A tokenizer.json for SmolLM2 built with HF `tokenizers` from the GGUF's vocab and merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, AddedToken
    tokens = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
              for i in r.fields["tokenizer.ggml.tokens"].data]
    merges = [bytes(r.fields["tokenizer.ggml.merges"].parts[i]).decode("utf-8")
              for i in r.fields["tokenizer.ggml.merges"].data]
    types = r.fields["tokenizer.ggml.token_type"]
    ttypes = [int(types.parts[i][0]) for i in types.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, ttypes) if ty == 3])
    return tok.to_str()


def test_hf_folder_from_smollm2_q4_0_matches_gguf_py(smollm_gguf, tmp_path):
    r = gguf.GGUFReader(str(smollm_gguf))
    tj = smollm_tokenizer_json(r)
    tcfg = {"chat_template": field(r, "tokenizer.chat_template"), "add_bos_token": False}
    hf = write_hf_folder(smollm_gguf, tmp_path / "hf", "f32", tokenizer_json=tj)
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(tcfg))
    out = bake(tmp_path / "hf", tmp_path / "off", "--quant", "q4_0")
    _, src = tensors(smollm_gguf)
    rd, dst = tensors(out)
    assert "output.weight" not in dst            # tied embeddings stay tied
    for name, t in src.items():
        want_type, want = expect_quantized(f32_of(t), name, "q4_0")
        assert dst[name].tensor_type == want_type, name
        got = np.asarray(dst[name].data).view(np.uint8).reshape(-1)
        assert np.array_equal(got, np.ascontiguousarray(want).view(np.uint8).reshape(-1)), name
    assert json.loads(field(rd, "tokenizer.huggingface.json"))["model"]["type"] == "BPE"
    assert "im_start" in field(rd, "tokenizer.chat_template")
    assert field(rd, "llama.attention.head_count_kv") == 3
