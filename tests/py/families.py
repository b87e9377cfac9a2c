"""Small random-weight models of each architecture family, written both ways a user brings one:
a Hugging Face folder (config.json as transformers writes it for the class, BF16 safetensors)
and a GGUF laid out as llama.cpp's converter (convert_hf_to_gguf.py + conversion/*.py of the
llama.cpp pinned by llama-cpp-python==0.3.36) lays it out for that class: tensor names through
gguf-py's own TensorNameMap, the converter's Q/K permutation, its extra tensors (Llama 3's
rope_freqs, Phi-3's LongRoPE factors) and its metadata keys.

Everything is a function of the family's row and a seed, so the tests regenerate the very GGUF
whose llama.cpp logits scripts/make_arch_fixtures.py recorded (its sha256 is in the fixture)
instead of committing it.

A family is one row of FAMILIES: the config.json fields that differ from the common ones, the
GGUF architecture, whether the converter permutes Q/K, and which fused / extra tensors it has.
"""
import hashlib
import json
import math
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
VOCAB_GGUF = "models/stories260K/stories260K.gguf"  # under shared/: a loadable 512-token vocab
N_PROMPT = 9
N_GEN = 32

# Shared shape: 4 layers (SmolLM3 skips RoPE on the 4th; Gemma 3 has 6), GQA 4:2, widths a Q4/Q8
# block divides.
BASE = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
    "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    "hidden_act": "silu", "initializer_range": 0.02, "use_cache": True,
}

FAMILIES = {
    # Qwen3 dense: per-head RMSNorm on q and k before RoPE, NeoX RoPE, head_dim != hidden/heads.
    "qwen3": dict(
        arch="qwen3", permute=False,
        config={"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 32,
                "rope_theta": 1000000.0, "max_position_embeddings": 40960,
                "attention_bias": False, "attention_dropout": 0.0, "rope_scaling": None,
                "sliding_window": None, "use_sliding_window": False, "max_window_layers": 28,
                "tie_word_embeddings": True, "rms_norm_eps": 1e-6}),
    # Llama 3.x: rope_scaling llama3. original_max_position_embeddings is small so that the
    # frequency-dependent scaling moves angles a 41-token test can see.
    "llama3": dict(
        arch="llama", permute=True,
        config={"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "rope_theta": 500000.0, "max_position_embeddings": 131072,
                "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
                "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 64,
                                 "rope_type": "llama3"},
                "tie_word_embeddings": False, "head_dim": 16}),
    # SmolLM3: no RoPE in every 4th layer (llama.cpp: layer il skips it when (il + 1) % 4 == 0).
    "smollm3": dict(
        arch="smollm3", permute=True,
        config={"architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3",
                "rope_theta": 2000000.0, "max_position_embeddings": 65536,
                "attention_bias": False, "mlp_bias": False, "rope_scaling": None,
                "no_rope_layers": [1, 1, 1, 0], "no_rope_layer_interval": 4,
                "use_sliding_window": False, "sliding_window": None,
                "tie_word_embeddings": True}),
    # Phi-3.5-mini: fused qkv_proj and gate_up_proj, LongRoPE; a 512-token context is within
    # original_max_position_embeddings, so the short factors apply.
    "phi3": dict(
        arch="phi3", permute=False, fused=True, longrope=True,
        config={"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
                "num_key_value_heads": 4, "rope_theta": 10000.0,
                "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
                "attention_bias": False, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
                "sliding_window": 262144, "tie_word_embeddings": False,
                "rope_scaling": {"type": "longrope"}}),
    # Phi-4-mini: as Phi-3 with partial rotary (0.75 of the head), GQA, tied embeddings; the
    # original context (64) is below the 256/512-token windows, so the long factors apply.
    "phi4mini": dict(
        arch="phi3", permute=False, fused=True, longrope=True,
        config={"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
                "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                "max_position_embeddings": 131072, "original_max_position_embeddings": 64,
                "attention_bias": False, "sliding_window": 262144,
                "tie_word_embeddings": True, "rope_scaling": {"type": "longrope"}}),
    # Gemma 2: the Gemma block (embedding x sqrt(E), RMSNorm 1 + w, GeGLU, post norms) without
    # q/k norms, with soft-capped attention scores and logits, and a sliding window on layers
    # 0 and 2 (llama.cpp's pattern 2: layer il slides when il % 2 == 0). The caps are small
    # enough to bend these scores and logits (uncapped about +-4: capped at 3 they span +-2.6;
    # llama.cpp's greedy path changes with the attention cap), and the window (8) is shorter
    # than the 41 positions.
    "gemma2": dict(
        arch="gemma2", permute=False, gemma=True, embed_gain=0.1,
        config={"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
                "head_dim": 16, "query_pre_attn_scalar": 16, "rope_theta": 10000.0,
                "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
                "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
                "sliding_window": 8, "cache_implementation": "hybrid",
                "layer_types": ["sliding_attention", "full_attention"] * 2,
                "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
                "attention_bias": False, "attention_dropout": 0.0,
                "tie_word_embeddings": True}),
    # Gemma 3: as Gemma 2 with per-head q/k norms instead of the soft-caps, five sliding layers
    # to one global (6 layers here), and the sliding layers on their own RoPE base.
    "gemma3": dict(
        arch="gemma3", permute=False, gemma=True, embed_gain=0.1,
        config={"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                "num_hidden_layers": 6, "head_dim": 32, "query_pre_attn_scalar": 32,
                "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                "sliding_window": 8, "sliding_window_pattern": 6,
                "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
                "final_logit_softcapping": None, "attn_logit_softcapping": None,
                "hidden_activation": "gelu_pytorch_tanh", "rope_scaling": None,
                "attention_bias": False, "attention_dropout": 0.0,
                "tie_word_embeddings": True}),
}


def config(fam):
    c = dict(BASE)
    c.update(FAMILIES[fam]["config"])
    return c


def head_dim(c):
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def rope_dims(c):
    return int(head_dim(c) * c.get("partial_rotary_factor", 1.0))


def bf16_round(x):
    """float32 values a BF16 checkpoint holds exactly (round to nearest even)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    return r.view(np.float32)


def hf_weights(fam, seed=0):
    """(config dict, {HF tensor name: float32 array}) with BF16-exact random weights."""
    c = config(fam)
    row = FAMILIES[fam]
    rng = np.random.default_rng([seed, sum(map(ord, fam))])
    E, F, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    H, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c)

    def mat(rows, cols, gain=1.0):
        return bf16_round(rng.standard_normal((rows, cols)) * gain / math.sqrt(cols))

    def norm(n):
        # Gemma's folders hold w of RMSNorm (1 + w): the same scales, stored offset by 1
        return bf16_round((0.0 if row.get("gemma") else 1.0) + 0.2 * rng.standard_normal(n))

    # Gemma multiplies the embedding by sqrt(E): a smaller one keeps the blocks' share of the
    # residual (and the tied classifier's logits) in the range of the other families
    eg = row.get("embed_gain", 0.5)
    w = {"model.embed_tokens.weight": bf16_round(eg * rng.standard_normal((c["vocab_size"], E))),
         "model.norm.weight": norm(E)}
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(c["vocab_size"], E, 2.0)
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(E)
        w[p + "post_attention_layernorm.weight"] = norm(E)
        q, k, v = mat(H * D, E, 2.0), mat(Hkv * D, E, 2.0), mat(Hkv * D, E)
        gate, up = mat(F, E, 2.0), mat(F, E)
        if row.get("fused"):
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate([q, k, v])
            w[p + "mlp.gate_up_proj.weight"] = np.concatenate([gate, up])
        else:
            w[p + "self_attn.q_proj.weight"] = q
            w[p + "self_attn.k_proj.weight"] = k
            w[p + "self_attn.v_proj.weight"] = v
            w[p + "mlp.gate_proj.weight"] = gate
            w[p + "mlp.up_proj.weight"] = up
        w[p + "self_attn.o_proj.weight"] = mat(E, H * D)
        w[p + "mlp.down_proj.weight"] = mat(E, F)
        if fam in ("qwen3", "gemma3"):
            w[p + "self_attn.q_norm.weight"] = norm(D)
            w[p + "self_attn.k_norm.weight"] = norm(D)
        if row.get("gemma"):
            # Gemma's post_attention_layernorm is the post-attention norm; the FFN's is
            # pre_feedforward_layernorm
            w[p + "pre_feedforward_layernorm.weight"] = norm(E)
            w[p + "post_feedforward_layernorm.weight"] = norm(E)
    if row.get("longrope"):
        n = rope_dims(c) // 2
        rs = dict(c["rope_scaling"])
        rs["short_factor"] = [float(x) for x in bf16_round(1.0 + 0.5 * rng.random(n))]
        rs["long_factor"] = [float(x) for x in bf16_round(1.0 + 7.0 * rng.random(n))]
        c["rope_scaling"] = rs
    return c, w


def tokenizer_json(shared):
    """The stories260K vocabulary as a tokenizer.json (HF `tokenizers`: BPE, byte fallback, no
    merges: the HF-folder proof compares logits of given ids and never tokenizes)."""
    from tokenizers import Tokenizer, models
    toks, _, _ = vocab_fields(shared)
    vocab = {t.decode("utf-8"): i for i, t in enumerate(toks)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    return tok.to_str()


def write_hf_folder(fam, folder, shared, seed=0):
    """The family as a Hugging Face folder: config.json + model.safetensors (BF16) +
    tokenizer.json."""
    c, w = hf_weights(fam, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header, blobs, off = {}, [], 0
    for name, t in w.items():
        b = (np.ascontiguousarray(t, np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    (folder / "config.json").write_text(json.dumps(c, indent=2) + "\n")
    (folder / "tokenizer.json").write_text(tokenizer_json(shared))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2}) + "\n")
    return folder


def permute(w, n_head):
    """convert_hf_to_gguf's LlamaModel.permute: HF halves -> GGUF adjacent pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_freqs(c):
    """conversion/llama.py's LlamaModel.generate_extra_tensors for rope_type llama3."""
    rs, D = c["rope_scaling"], head_dim(c)
    base = c["rope_theta"]
    freqs = 1.0 / (base ** (np.arange(0, D, 2, dtype=np.float32) / D))
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    lo_w, hi_w = old / lo, old / hi
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < hi_w:
            out.append(1)
        elif wl > lo_w:
            out.append(factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, np.float32)


def vocab_fields(shared):
    """The tokenizer of shared/models/stories260K (a 512-token SentencePiece vocab llama.cpp
    loads), as (key, value, type) for GGUFWriter."""
    r = gguf.GGUFReader(str(Path(shared) / VOCAB_GGUF))
    f = r.fields
    toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]) for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0])
             for i in f["tokenizer.ggml.token_type"].data]
    return toks, scores, types


def write_gguf(fam, path, shared, seed=0):
    """The family as llama.cpp's converter writes it (F32 tensors: --outtype f32)."""
    c, w = hf_weights(fam, seed)
    row = FAMILIES[fam]
    arch = row["arch"]
    E, H, Hkv, D = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], head_dim(c)
    L = c["num_hidden_layers"]
    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_type(gguf.GGUFType.MODEL)
    wr.add_name("kiln random weights")  # a name with "phi3" in it makes llama.cpp look up "</s>"
    wr.add_block_count(L)
    wr.add_context_length(c["max_position_embeddings"])
    wr.add_embedding_length(E)
    wr.add_feed_forward_length(c["intermediate_size"])
    wr.add_head_count(H)
    wr.add_head_count_kv(Hkv)
    wr.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if arch != "gemma2":  # conversion/gemma.py's Gemma2Model writes no RoPE base (10000)
        wr.add_rope_freq_base(c["rope_theta"])
    wr.add_file_type(gguf.LlamaFileType.ALL_F32)
    if "head_dim" in c and arch != "phi3":
        wr.add_key_length(D)
        wr.add_value_length(D)
    if arch == "llama":
        wr.add_vocab_size(c["vocab_size"])
        wr.add_rope_dimension_count(D)
    if arch == "smollm3":
        wr.add_vocab_size(c["vocab_size"])
        wr.add_rope_dimension_count(D)
    if arch == "phi3":
        wr.add_rope_scaling_orig_ctx_len(c["original_max_position_embeddings"])
        wr.add_rope_dimension_count(int(c.get("partial_rotary_factor", 1.0) * E) // H)
        wr.add_sliding_window(c.get("sliding_window") or 0)
        scale = c["max_position_embeddings"] / c["original_max_position_embeddings"]
        orig = c["original_max_position_embeddings"]
        wr.add_rope_scaling_attn_factors(
            math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0)
    if arch == "gemma2":  # Gemma2Model.set_gguf_parameters
        wr.add_attn_logit_softcapping(c["attn_logit_softcapping"])
        wr.add_final_logit_softcapping(c["final_logit_softcapping"])
        wr.add_sliding_window(c["sliding_window"])
    if arch == "gemma3":  # Gemma3Model.set_gguf_parameters and TextModel's local RoPE base
        wr.add_rope_freq_base_swa(c["rope_local_base_freq"])
        if c.get("final_logit_softcapping"):
            wr.add_final_logit_softcapping(c["final_logit_softcapping"])
        if c.get("sliding_window_pattern") != 1:
            wr.add_sliding_window(c["sliding_window"])
    toks, scores, types = vocab_fields(shared)
    if row.get("gemma"):
        wr.add_add_space_prefix(False)
    wr.add_tokenizer_model("llama")
    wr.add_tokenizer_pre("default")
    wr.add_token_list(toks)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], L)
    out = {}
    if arch == "llama" and (c.get("rope_scaling") or {}).get("rope_type") == "llama3":
        out["rope_freqs.weight"] = llama3_rope_freqs(c)
    for name, t in w.items():
        if row["permute"] and name.endswith("q_proj.weight"):
            t = permute(t, H)
        elif row["permute"] and name.endswith("k_proj.weight"):
            t = permute(t, Hkv)
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new, f"gguf-py has no name for {name} in {arch}"
        if row.get("gemma") and name.endswith("norm.weight"):
            t = t + np.float32(1.0)  # the converter's norm shift: GGUF stores 1 + w
        out[new] = t
    if row.get("longrope"):
        out["rope_factors_long.weight"] = np.array(c["rope_scaling"]["long_factor"], np.float32)
        out["rope_factors_short.weight"] = np.array(c["rope_scaling"]["short_factor"], np.float32)
    for name, t in out.items():
        wr.add_tensor(name, np.ascontiguousarray(t, np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


def prompt_ids(fam, seed=0):
    rng = np.random.default_rng([seed, 7, sum(map(ord, fam))])
    return [1] + [int(x) for x in rng.integers(3, 512, N_PROMPT - 1)]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
