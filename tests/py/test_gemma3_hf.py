"""A Gemma 3 Hugging Face folder (Gemma3ForCausalLM, config.json as transformers'
Gemma3TextConfig writes it, F32 and BF16 safetensors) baked by kiln equals, tensor for tensor, the
GGUF llama.cpp's converter would write from it: names from gguf-py's own TensorNameMap for
MODEL_ARCH.GEMMA3 (so Gemma's post_attention_layernorm is the post-attention norm, not the FFN
norm as in Llama folders), 1 added to every norm (convert_hf_to_gguf.py's Gemma3Model.norm_shift:
GGUF stores 1 + w), no Q/K permutation. The forward pass itself is proven on the real model
(test_gemma3_reference.py); this proves the folder reaches it as llama.cpp's converter would."""
import json

import gguf
import numpy as np
import pytest

from conftest import run_kiln
from test_bake import tensors, f32_of, write_bf16_safetensors, to_bf16_bits

from safetensors.numpy import save_file

L, E, H, HKV, D, F, V = 8, 64, 4, 2, 32, 128, 96


def gemma_config(**over):
    cfg = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": E, "intermediate_size": F, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": HKV, "head_dim": D,
        "vocab_size": V, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": D,
        "sliding_window": 16, "sliding_window_pattern": 6,
        "layer_types": ["full_attention" if l % 6 == 5 else "sliding_attention"
                        for l in range(L)],
        "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": None,
        "attn_logit_softcapping": None, "rope_scaling": None,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "torch_dtype": "bfloat16",
    }
    cfg.update(over)
    return cfg


def random_weights(seed=0):
    rng = np.random.default_rng(seed)
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, E)),
         "model.norm.weight": rng.normal(0, 0.3, (E,))}
    for l in range(L):
        p = f"model.layers.{l}."
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.2, (H * D, E))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.2, (HKV * D, E))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.2, (HKV * D, E))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.2, (E, H * D))
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.2, (F, E))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.2, (F, E))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.2, (E, F))
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            w[p + n + ".weight"] = rng.normal(0, 0.3, (E,))
        w[p + "self_attn.q_norm.weight"] = rng.normal(0, 0.3, (D,))
        w[p + "self_attn.k_norm.weight"] = rng.normal(0, 0.3, (D,))
    return {k: v.astype(np.float32) for k, v in w.items()}


def converter_view(hf):
    """What llama.cpp's converter makes of these tensors: gguf-py names, norms + 1."""
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, L)
    out = {}
    for name, w in hf.items():
        new = tmap.get_name(name, try_suffixes=(".weight",))
        assert new, name
        out[new] = w + 1.0 if name.endswith("norm.weight") else w
    return out


def write_folder(folder, hf, dtype, cfg):
    folder.mkdir()
    if dtype == "f32":
        save_file({k: np.ascontiguousarray(v) for k, v in hf.items()},
                  str(folder / "model.safetensors"))
    else:
        write_bf16_safetensors(hf, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_gemma3_folder_bakes_as_llamacpp_converts(tmp_path, dtype):
    hf = random_weights()
    if dtype == "bf16":  # the folder holds bf16; the converter widens it back to f32
        hf = {k: (to_bf16_bits(v).astype(np.uint32) << 16).view(np.float32) for k, v in hf.items()}
    write_folder(tmp_path / "hf", hf, dtype, gemma_config())
    r = run_kiln("bake", tmp_path / "hf", "-o", tmp_path / "off", "--quant", "keep", "--quiet",
                 "--window", 64, "--chunk", 16)
    assert r.returncode == 0, r.stderr
    want = converter_view(hf)
    rd, got = tensors(tmp_path / "off" / "model.gguf")
    assert set(got) == set(want)
    for name, w in want.items():
        g = f32_of(got[name]).reshape(w.shape)
        assert np.array_equal(g, w.astype(np.float32)), name
    f = lambda k: rd.fields[k].contents()
    assert f("general.architecture") == "gemma3"
    assert f("gemma3.attention.sliding_window") == 16
    assert f("gemma3.attention.key_length") == D
    assert f("gemma3.rope.freq_base") == 1e6 and f("gemma3.rope.freq_base_swa") == 1e4
    r = run_kiln("inspect", tmp_path / "off", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["contract"]["layer_window"] == \
        [0 if l % 6 == 5 else 16 for l in range(L)]


@pytest.mark.parametrize("over, what", [
    ({"query_pre_attn_scalar": 48}, "query_pre_attn_scalar"),
    ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ({"hidden_activation": "gelu"}, "hidden_activation"),
    ({"layer_types": ["sliding_attention"] * L}, "layer_types"),
])
def test_gemma3_folder_kiln_cannot_state_is_refused(tmp_path, over, what):
    write_folder(tmp_path / "hf", random_weights(), "f32", gemma_config(**over))
    r = run_kiln("bake", tmp_path / "hf", "-o", tmp_path / "off", "--quiet")
    assert r.returncode == 2, r.stderr
    assert what in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "off").exists()
