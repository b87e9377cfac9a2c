"""Writes the committed fuzz seeds (tests/fuzz/seeds/<target>/): small valid inputs of every
parser `make fuzz` exercises. Rerun to regenerate: .venv/bin/python scripts/make_fuzz_seeds.py
[tests/fuzz/seeds]. scripts/run_fuzz.sh adds the real files of ../shared (GGUFs, tokenizer
vectors) and the chat templates of tests/data/chat_templates."""
import json
import struct
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] /
            "tests" / "fuzz" / "seeds")


def put(kind, name, data):
    d = root / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# safetensors
rng = np.random.default_rng(0)
d = root / "safetensors"
d.mkdir(parents=True, exist_ok=True)
save_file({"model.embed_tokens.weight": rng.standard_normal((8, 4), dtype=np.float32),
           "model.norm.weight": np.ones(4, dtype=np.float32)}, str(d / "f32.safetensors"))
save_file({"a": rng.standard_normal((3, 5)).astype(np.float16)}, str(d / "f16.safetensors"),
          metadata={"format": "pt"})
hdr = json.dumps({"b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
put("safetensors", "bf16.safetensors", len(hdr).to_bytes(8, "little") + hdr + bytes(8))

# config.json
base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8,
        "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 2048, "vocab_size": 512, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2}
put("hf_config", "llama.json", json.dumps(base, indent=2))
put("hf_config", "qwen2.json", json.dumps(dict(base, model_type="qwen2", architectures=[
    "Qwen2ForCausalLM"], use_sliding_window=True, sliding_window=4096, eos_token_id=[2, 3],
    rope_scaling={"type": "linear", "factor": 2.0})))
put("hf_config", "llama3.json", json.dumps(dict(base, head_dim=8, rope_scaling={
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192}, bos_token_id=None)))

# tokenizer.json [NUL tokenizer_config.json]
chars = [chr(c) for c in range(33, 127)]
vocab = {c: i for i, c in enumerate(chars)}
merges = []
for a, b in [("h", "e"), ("l", "l"), ("he", "ll"), ("o", "w")]:
    vocab.setdefault(a + b, len(vocab))
    merges.append(f"{a} {b}")
added = [{"id": len(vocab), "content": "<|im_start|>", "special": True},
         {"id": len(vocab) + 1, "content": "<|im_end|>", "special": True, "lstrip": True}]
bl = {"model": {"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": True},
      "added_tokens": added, "normalizer": {"type": "NFC"},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
          {"type": "Digits", "individual_digits": True},
          {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]},
      "decoder": {"type": "ByteLevel"},
      "post_processor": {"single": [{"SpecialToken": {"id": "<|im_start|>"}}]}}
cfg = {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"},
       "add_bos_token": False,
       "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                        "assistant\n{% endif %}"}
put("hf_tokenizer", "bytelevel.json", json.dumps(bl) + "\0" + json.dumps(cfg))
spm_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    spm_vocab[f"<0x{b:02X}>"] = len(spm_vocab)
for t in ["\u2581", "a", "b", "\u2581a", "ab"]:
    spm_vocab[t] = len(spm_vocab)
spm = {"model": {"type": "BPE", "vocab": spm_vocab, "merges": [["\u2581", "a"], ["a", "b"]],
                 "byte_fallback": True, "unk_token": "<unk>", "fuse_unk": True},
       "normalizer": {"type": "Sequence", "normalizers": [
           {"type": "Prepend", "prepend": "\u2581"},
           {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
       "pre_tokenizer": None, "added_tokens": [],
       "decoder": {"type": "Sequence", "decoders": [
           {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
           {"type": "ByteFallback"}, {"type": "Fuse"},
           {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}
put("hf_tokenizer", "spm.json", json.dumps(spm))

# chat templates (the real ones are added by run_fuzz.sh): corners of the interpreter
put("jinja", "loops.jinja", "{% set ns = namespace(n=0) %}{% for m in messages if m.role != "
    "'system' %}{% set ns.n = ns.n + loop.index %}{{ loop.index0 }}:{{ m.content|trim|upper }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}{{ ns.n }}{{ range(3)|list|tojson }}")
put("jinja", "strings.jinja", "{{ messages[0]['content'].split(' ')|join('-') }}{{ 'abc'[::-1] }}"
    "{{ '%s' in 'x%sy' }}{{ messages|length is divisibleby 2 }}{{ bos_token ~ eos_token }}"
    "{%- if messages[-1].content.startswith('9') %}{{ raise_exception('no') }}{% endif %}")

# manifest.json of a --from-ir offering
put("manifest", "from_ir.json", json.dumps({
    "format": "kiln-offering", "format_version": 1, "kiln_version": "0.1.0", "baked": True,
    "source_kind": "openvino-ir", "model_file": "openvino_model.xml",
    "contract": {"window": 64, "chunk": 16, "batch": 1, "graphs": [{"name": "ir", "inputs": [
        {"name": "input_ids", "dtype": "i64", "shape": [1, 16]},
        {"name": "attention_mask", "dtype": "i64", "shape": [1, 80]},
        {"name": "past_key_values.0.key", "dtype": "f32", "shape": [1, 2, 64, 8]}],
        "outputs": []}]}, "validation": {"ok": True, "checks": []}}, indent=2))


# a tiny complete llama GGUF: one layer, width 32, vocabulary of 40 (SentencePiece-style)
def gstr(b):
    return struct.pack("<Q", len(b)) + b


def kv_u32(k, v):
    return gstr(k.encode()) + struct.pack("<II", 4, v)


def kv_f32(k, v):
    return gstr(k.encode()) + struct.pack("<If", 6, v)


def kv_str(k, v):
    return gstr(k.encode()) + struct.pack("<I", 8) + gstr(v.encode())


def kv_arr(k, et, items):
    if et == 8:
        body = b"".join(gstr(x.encode()) for x in items)
    else:
        body = b"".join(struct.pack("<f" if et == 6 else "<i", x) for x in items)
    return gstr(k.encode()) + struct.pack("<IIQ", 9, et, len(items)) + body


V, E, F = 40, 32, 64
toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(32, 64)] + \
       ["\u2581", "a", "b", "\u2581a", "ab"]
kvs = [kv_str("general.architecture", "llama"), kv_str("general.name", "tiny"),
       kv_u32("llama.block_count", 1), kv_u32("llama.embedding_length", E),
       kv_u32("llama.feed_forward_length", F), kv_u32("llama.attention.head_count", 4),
       kv_u32("llama.attention.head_count_kv", 2), kv_u32("llama.context_length", 128),
       kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
       kv_f32("llama.rope.freq_base", 10000.0), kv_str("tokenizer.ggml.model", "llama"),
       kv_arr("tokenizer.ggml.tokens", 8, toks), kv_arr("tokenizer.ggml.scores", 6,
                                                        [0.0] * V),
       kv_arr("tokenizer.ggml.token_type", 5, [2, 3, 3] + [6] * 32 + [1] * 5),
       kv_u32("tokenizer.ggml.bos_token_id", 1), kv_u32("tokenizer.ggml.eos_token_id", 2),
       kv_u32("kiln.contract.window", 16), kv_u32("kiln.contract.chunk", 4),
       kv_u32("kiln.contract.sink", 2)]
tensors = [("token_embd.weight", [E, V]), ("output_norm.weight", [E]), ("output.weight", [E, V]),
           ("blk.0.attn_norm.weight", [E]), ("blk.0.attn_q.weight", [E, E]),
           ("blk.0.attn_k.weight", [E, E // 2]), ("blk.0.attn_v.weight", [E, E // 2]),
           ("blk.0.attn_output.weight", [E, E]), ("blk.0.ffn_norm.weight", [E]),
           ("blk.0.ffn_gate.weight", [E, F]), ("blk.0.ffn_up.weight", [E, F]),
           ("blk.0.ffn_down.weight", [F, E])]
head = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs))
off, blobs = 0, []
for name, shape in tensors:
    n = int(np.prod(shape))
    head += gstr(name.encode()) + struct.pack("<I", len(shape))
    head += b"".join(struct.pack("<Q", x) for x in shape) + struct.pack("<IQ", 0, off)
    data = (rng.standard_normal(n).astype(np.float32) * 0.1).tobytes()
    blobs.append(data + bytes((-len(data)) % 32))
    off += len(blobs[-1])
head += bytes((-len(head)) % 32)
put("gguf", "tiny_llama.gguf", bytes(head) + b"".join(blobs))
print(f"fuzz seeds written under {root}")
