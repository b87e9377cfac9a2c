"""Random-weight models of real shapes for the speed benchmark (bench/speed.py).

    .venv/bin/python scripts/make_bench_models.py gguf tinyllama --quant q4_0,q4_k_m \\
        --llama-quantize .cache/llamacpp-build/native-noamx/bin/llama-quantize
    .venv/bin/python scripts/make_bench_models.py hf mistral        # bf16 Hugging Face folder

Shapes (llama architecture; weights N(0, 0.02), norms near 1; a fixed seed per tensor name, so
the same command writes the same bytes):
    tinyllama  TinyLlama-1.1B: E 2048, L 22, H 32, Hkv 4, F 5632, V 32000
    mistral    Mistral-7B:     E 4096, L 32, H 32, Hkv 8, F 14336, V 32000
    tiny       a test shape:   E 64, L 2, H 4, Hkv 2, F 160, V 32000

Tokenizer: SmolLM2-135M-Instruct's byte-level BPE (scripts/fetch_models.sh), cut to the first V
tokens and the merges among them (BPE ids follow merge order, so this is the vocabulary a
V-token training run of the same merges would give), with SmolLM2's chat template; llama.cpp
and kiln both load it.

gguf: gguf-py writes an F16 GGUF tensor by tensor (never more than one tensor in memory), then
the llama-quantize given (llama.cpp's own quantizer) makes each requested type: q4_0 with
--pure (every matrix Q4_0, as a Q4_0 kernel benchmark wants), q4_k_m as llama.cpp mixes it
(Q4_K with Q6_K for the output and half the ffn_down / attn_v). f16 keeps the F16 file. The F16
intermediate is removed unless asked for. Outputs: DIR/<shape>-<quant>.gguf, written to a
temporary name and renamed, and skipped when already there.

hf: DIR/<shape>-hf/: config.json as transformers writes it (LlamaForCausalLM for tinyllama,
MistralForCausalLM for mistral), bf16 safetensors in shards of at most 5 GB with
model.safetensors.index.json, tokenizer.json (built with HF `tokenizers`),
tokenizer_config.json, generation_config.json. Streamed tensor by tensor.
"""
import argparse
import functools
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".cache" / "bench-models"

SHAPES = {
    "tinyllama": dict(title="TinyLlama-1.1B shape", E=2048, L=22, H=32, Hkv=4, F=5632, V=32000,
                      ctx=2048, theta=10000.0, eps=1e-5, hf_arch="LlamaForCausalLM"),
    "mistral": dict(title="Mistral-7B shape", E=4096, L=32, H=32, Hkv=8, F=14336, V=32000,
                    ctx=32768, theta=10000.0, eps=1e-5, hf_arch="MistralForCausalLM"),
    "tiny": dict(title="tiny test shape", E=64, L=2, H=4, Hkv=2, F=160, V=32000,
                 ctx=2048, theta=10000.0, eps=1e-5, hf_arch="LlamaForCausalLM"),
}
QUANTS = {"f16": None, "q4_0": ("Q4_0", ["--pure"]), "q4_k_m": ("Q4_K_M", [])}
SHARD_BYTES = 5_000_000_000     # transformers' default max_shard_size


def smollm2_gguf():
    return Path(subprocess.check_output([str(ROOT / "scripts" / "fetch_models.sh")],
                                        text=True).strip())


@functools.lru_cache(maxsize=None)
def tokenizer(n_vocab):
    """SmolLM2's vocabulary cut to n_vocab: tokens, types, merges, ids, chat template."""
    import gguf
    r = gguf.GGUFReader(str(smollm2_gguf()))

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    if n_vocab > len(tokens):
        sys.exit(f"make_bench_models: SmolLM2 has {len(tokens)} tokens, {n_vocab} asked for")
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data][:n_vocab]
    tokens = tokens[:n_vocab]
    kept = set(tokens)
    merges = []
    for m in strings("tokenizer.ggml.merges"):
        a, b = m.split(" ", 1)
        if a in kept and b in kept and a + b in kept:
            merges.append(m)

    def u32(key):
        return int(r.fields[key].contents())

    return dict(tokens=tokens, types=types, merges=merges, bos=u32("tokenizer.ggml.bos_token_id"),
                eos=u32("tokenizer.ggml.eos_token_id"), unk=u32("tokenizer.ggml.unknown_token_id"),
                pad=u32("tokenizer.ggml.padding_token_id"),
                pre=r.fields["tokenizer.ggml.pre"].contents(),
                template=r.fields["tokenizer.chat_template"].contents())


def rand(name, shape, norm=False):
    """The tensor's values: a generator seeded by its name (float32)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if norm:
        return (1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(0.02)
    return x


def gguf_tensors(s):
    """(GGUF name, numpy shape [rows, cols], is_norm) in the order llama.cpp's converter writes."""
    E, F, V, D = s["E"], s["F"], s["V"], s["E"] // s["H"]
    out = [("token_embd.weight", (V, E), False)]
    for i in range(s["L"]):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (E,), True),
                (b + "attn_q.weight", (s["H"] * D, E), False),
                (b + "attn_k.weight", (s["Hkv"] * D, E), False),
                (b + "attn_v.weight", (s["Hkv"] * D, E), False),
                (b + "attn_output.weight", (E, s["H"] * D), False),
                (b + "ffn_norm.weight", (E,), True),
                (b + "ffn_gate.weight", (F, E), False),
                (b + "ffn_up.weight", (F, E), False),
                (b + "ffn_down.weight", (E, F), False)]
    out += [("output_norm.weight", (E,), True), ("output.weight", (V, E), False)]
    return out


def write_f16_gguf(shape, path):
    """An F16 GGUF (norms F32) of the shape, streamed: header and tensor infos first, then one
    tensor at a time."""
    import gguf
    s = SHAPES[shape]
    tok = tokenizer(s["V"])
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"{s['title']}, random weights (kiln scripts/make_bench_models.py)")
    w.add_description("random N(0, 0.02) weights for speed benchmarks; tokenizer: SmolLM2-135M "
                      f"cut to {s['V']} tokens")
    w.add_block_count(s["L"])
    w.add_context_length(s["ctx"])
    w.add_embedding_length(s["E"])
    w.add_feed_forward_length(s["F"])
    w.add_head_count(s["H"])
    w.add_head_count_kv(s["Hkv"])
    w.add_rope_freq_base(s["theta"])
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_rope_dimension_count(s["E"] // s["H"])
    w.add_vocab_size(s["V"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    w.add_bos_token_id(tok["bos"])
    w.add_eos_token_id(tok["eos"])
    w.add_unk_token_id(tok["unk"])
    w.add_pad_token_id(tok["pad"])
    w.add_add_bos_token(False)
    w.add_chat_template(tok["template"])
    specs = gguf_tensors(s)
    for name, shp, norm in specs:
        n = int(np.prod(shp))
        dt = np.float32 if norm else np.float16
        w.add_tensor_info(name, shp, np.dtype(dt), n * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shp, norm in specs:
        x = rand(name, shp, norm)
        w.write_tensor_data(x if norm else x.astype(np.float16))
        del x
    w.close()


def ensure_gguf(shape, quant, out=DEFAULT_OUT, llama_quantize=None, keep_f16=False, log=print):
    """DIR/<shape>-<quant>.gguf, made when missing. Returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / f"{shape}-{quant}.gguf"
    if dst.exists():
        return dst
    f16 = out / f"{shape}-f16.gguf"
    if not f16.exists():
        log(f"make_bench_models: writing {f16} (random F16 weights)")
        tmp = f16.with_suffix(".gguf.part")
        write_f16_gguf(shape, tmp)
        os.replace(tmp, f16)
    if quant == "f16":
        return dst
    if not llama_quantize:
        sys.exit("make_bench_models: --llama-quantize is needed for " + quant)
    qtype, extra = QUANTS[quant]
    log(f"make_bench_models: llama-quantize {' '.join(extra + [f16.name, dst.name, qtype])}")
    tmp = dst.with_suffix(".gguf.part")
    r = subprocess.run([str(llama_quantize), *extra, str(f16), str(tmp), qtype,
                        str(min(os.cpu_count() or 1, 2))], capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        sys.exit(f"make_bench_models: llama-quantize failed ({r.returncode}):\n{r.stderr[-2000:]}")
    os.replace(tmp, dst)
    return dst


def drop_f16(shape, out=DEFAULT_OUT):
    (Path(out) / f"{shape}-f16.gguf").unlink(missing_ok=True)


# ---- Hugging Face folder ----

HF_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
            "output": "lm_head", "attn_norm": "input_layernorm",
            "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
            "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
            "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_tensors(s):
    """The same tensors under Hugging Face names ([out, in] either way: GGUF lists ne reversed)."""
    out = []
    for name, shp, norm in gguf_tensors(s):
        parts = name.split(".")
        if parts[0] == "blk":
            hf = f"model.layers.{parts[1]}.{HF_NAMES[parts[2]]}.weight"
        else:
            hf = HF_NAMES[parts[0]] + ".weight"
        out.append((hf, shp, norm))
    return out


def bf16_bytes(x):
    """float32 -> bfloat16 bits, round to nearest even (as torch converts)."""
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)) \
        .astype(np.uint16)


def hf_config(s):
    D = s["E"] // s["H"]
    cfg = {"architectures": [s["hf_arch"]], "attention_dropout": 0.0,
           "bos_token_id": 1, "eos_token_id": 2, "head_dim": D, "hidden_act": "silu",
           "hidden_size": s["E"], "initializer_range": 0.02, "intermediate_size": s["F"],
           "max_position_embeddings": s["ctx"],
           "model_type": "mistral" if s["hf_arch"].startswith("Mistral") else "llama",
           "num_attention_heads": s["H"], "num_hidden_layers": s["L"],
           "num_key_value_heads": s["Hkv"], "rms_norm_eps": s["eps"],
           "rope_theta": s["theta"], "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "transformers_version": "4.46.3", "use_cache": True, "vocab_size": s["V"]}
    if cfg["model_type"] == "mistral":
        cfg["sliding_window"] = 4096
    else:
        cfg.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
                    "rope_scaling": None})
    return dict(sorted(cfg.items()))


def tokenizer_json(tok):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(tok["tokens"])}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in tok["merges"]]))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(x, special=True)
                          for x, ty in zip(tok["tokens"], tok["types"]) if ty == 3])
    return t.to_str()


def write_hf(shape, folder):
    s = SHAPES[shape]
    tok = tokenizer(s["V"])
    folder.mkdir(parents=True)
    specs = hf_tensors(s)
    shards, cur, size = [], [], 0
    for name, shp, norm in specs:
        nb = int(np.prod(shp)) * 2
        if cur and size + nb > SHARD_BYTES:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shp, norm))
        size += nb
    shards.append(cur)
    n = len(shards)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = "model.safetensors" if n == 1 else f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        header, off = {}, 0
        for name, shp, _ in shard:
            nb = int(np.prod(shp)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[name] = fname
        total += off
        header["__metadata__"] = {"format": "pt"}
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(folder / fname, "wb") as f:
            f.write(len(h).to_bytes(8, "little"))
            f.write(h)
            for name, shp, norm in shard:
                bf16_bytes(rand(name, shp, norm)).tofile(f)
    if n > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    (folder / "config.json").write_text(json.dumps(hf_config(s), indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.46.3"}, indent=2) + "\n")
    (folder / "tokenizer.json").write_text(tokenizer_json(tok))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": False, "bos_token": tok["tokens"][tok["bos"]],
         "eos_token": tok["tokens"][tok["eos"]], "unk_token": tok["tokens"][tok["unk"]],
         "pad_token": tok["tokens"][tok["pad"]], "chat_template": tok["template"],
         "model_max_length": s["ctx"], "tokenizer_class": "GPT2Tokenizer"}, indent=2) + "\n")


def ensure_hf(shape, out=DEFAULT_OUT, log=print):
    """DIR/<shape>-hf/, written when missing. Returns its path."""
    out = Path(out)
    dst = out / f"{shape}-hf"
    if (dst / "config.json").exists():
        return dst
    import shutil
    tmp = out / f"{shape}-hf.part"
    shutil.rmtree(tmp, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    log(f"make_bench_models: writing {dst} (random bf16 weights)")
    write_hf(shape, tmp)
    os.replace(tmp, dst)
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["gguf", "hf"])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--quant", default="q4_0", help="comma list of " + ", ".join(QUANTS))
    ap.add_argument("-o", "--out", default=str(DEFAULT_OUT))
    ap.add_argument("--llama-quantize", help="llama.cpp's llama-quantize (for q4_0, q4_k_m)")
    ap.add_argument("--keep-f16", action="store_true", help="keep the F16 intermediate")
    a = ap.parse_args()
    if a.kind == "hf":
        print(ensure_hf(a.shape, a.out, log=lambda m: print(m, file=sys.stderr)))
        return
    quants = a.quant.split(",")
    for q in quants:
        if q not in QUANTS:
            ap.error(f"--quant: {q!r} is not one of {', '.join(QUANTS)}")
    for q in quants:
        print(ensure_gguf(a.shape, q, a.out, a.llama_quantize,
                          log=lambda m: print(m, file=sys.stderr)))
    if not a.keep_f16 and "f16" not in quants:
        drop_f16(a.shape, a.out)


if __name__ == "__main__":
    main()
