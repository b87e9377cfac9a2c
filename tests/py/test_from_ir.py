"""`kiln bake --from-ir`: an IR written with OpenVINO's own Python API in the shape optimum-intel
exports (input_ids, attention_mask, position_ids, beam_idx, past_key_values as 4-D inputs, all
dynamic) is locked to static shapes; OpenVINO reads it back with every input static and runs it,
and the locked model computes what the dynamic one computes."""
import json

import numpy as np
import openvino as ov
import pytest
from openvino import opset13 as op

from conftest import run_kiln

V, E, H, D, LAYERS = 32, 16, 2, 8, 2


def param(name, shape, t):
    p = op.parameter(shape, t, name=name)
    p.output(0).set_names({name})
    return p


def optimum_like_ir(path):
    """A toy decoder with optimum-intel's input and output names and dynamic dims."""
    rng = np.random.default_rng(0)
    ids = param("input_ids", [-1, -1], ov.Type.i64)
    mask = param("attention_mask", [-1, -1], ov.Type.i64)
    pos = param("position_ids", [-1, -1], ov.Type.i64)
    beam = param("beam_idx", [-1], ov.Type.i32)
    params, results = [ids, mask, pos, beam], []
    emb = op.constant(rng.standard_normal((V, E)).astype(np.float32))
    x = op.gather(emb, ids, 0)                                       # [B, T, E]
    pemb = op.constant(rng.standard_normal((4096, E)).astype(np.float32) * 0.1)
    x = op.add(x, op.gather(pemb, pos, 0))
    for l in range(LAYERS):
        pk = param(f"past_key_values.{l}.key", [-1, H, -1, D], ov.Type.f32)
        pv = param(f"past_key_values.{l}.value", [-1, H, -1, D], ov.Type.f32)
        params += [pk, pv]
        wk = op.constant(rng.standard_normal((E, H * D)).astype(np.float32) * 0.3)
        k = op.matmul(x, wk, False, False)                           # [B, T, H*D]
        k = op.reshape(k, op.constant(np.array([0, 0, H, D], np.int64)), True)
        k = op.transpose(k, op.constant(np.array([0, 2, 1, 3], np.int64)))  # [B, H, T, D]
        kk = op.concat([op.gather(pk, beam, 0), k], 2)
        vv = op.concat([op.gather(pv, beam, 0), k], 2)
        r1, r2 = op.result(kk), op.result(vv)
        r1.output(0).set_names({f"present.{l}.key"})
        r2.output(0).set_names({f"present.{l}.value"})
        results += [r1, r2]
        # attention of the new tokens over past + new, masked by attention_mask
        q = k
        sc = op.matmul(q, kk, False, True)                           # [B, H, T, P+T]
        m = op.convert(op.unsqueeze(op.unsqueeze(mask, op.constant(np.array([1], np.int64))),
                                    op.constant(np.array([1], np.int64))), ov.Type.f32)
        sc = op.add(sc, op.multiply(op.subtract(op.constant(np.float32(1)), m),
                                    op.constant(np.float32(-1e9))))
        a = op.matmul(op.softmax(sc, -1), vv, False, False)          # [B, H, T, D]
        a = op.reshape(op.transpose(a, op.constant(np.array([0, 2, 1, 3], np.int64))),
                       op.constant(np.array([0, 0, H * D], np.int64)), True)
        wo = op.constant(rng.standard_normal((H * D, E)).astype(np.float32) * 0.3)
        x = op.add(x, op.matmul(a, wo, False, False))
    logits = op.result(op.matmul(x, emb, False, True))
    logits.output(0).set_names({"logits"})
    model = ov.Model([logits] + results, params, "optimum_like")
    ov.save_model(model, str(path), compress_to_fp16=False)
    return model


def feeds(W, C, n_past, n_new, seed=1):
    rng = np.random.default_rng(seed)
    f = {"input_ids": rng.integers(0, V, (1, C)).astype(np.int64),
         "attention_mask": np.zeros((1, W + C), np.int64),
         "position_ids": np.arange(W, W + C, dtype=np.int64)[None, :] * 0 + np.arange(C)[None, :] + n_past,
         "beam_idx": np.zeros(1, np.int32)}
    f["attention_mask"][0, :n_past] = 1
    f["attention_mask"][0, W:W + n_new] = 1
    for l in range(LAYERS):
        for kind in ("key", "value"):
            f[f"past_key_values.{l}.{kind}"] = rng.standard_normal((1, H, W, D)).astype(np.float32)
    return f


def test_from_ir_locks_every_input_and_runs(tmp_path):
    src = tmp_path / "src" / "openvino_model.xml"
    src.parent.mkdir()
    dyn = optimum_like_ir(src)
    assert dyn.is_dynamic()
    W, C = 24, 4
    off = tmp_path / "off"
    r = run_kiln("bake", "--from-ir", src, "-o", off, "--window", W, "--chunk", C, "--quiet")
    assert r.returncode == 0, r.stderr
    core = ov.Core()
    locked = core.read_model(str(off / "openvino_model.xml"))
    assert not locked.is_dynamic()
    shapes = {p.get_any_name(): list(p.get_partial_shape().to_shape()) for p in locked.inputs}
    assert shapes["input_ids"] == [1, C] and shapes["position_ids"] == [1, C]
    assert shapes["attention_mask"] == [1, W + C] and shapes["beam_idx"] == [1]
    for l in range(LAYERS):
        assert shapes[f"past_key_values.{l}.key"] == [1, H, W, D]
    manifest = json.loads((off / "manifest.json").read_text())
    got = {i["name"]: i["shape"] for i in manifest["contract"]["graphs"][0]["inputs"]}
    assert got == shapes
    # the static model computes what the dynamic one computes on the same data
    f = feeds(W, C, n_past=10, n_new=3)
    out_s = core.compile_model(locked, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).infer_new_request(f)
    out_d = core.compile_model(dyn, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).infer_new_request(f)
    a = out_s["logits"]
    b = out_d["logits"]
    assert a.shape == (1, C, V)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    insp = run_kiln("inspect", off, "--json")
    assert insp.returncode == 0 and json.loads(insp.stdout)["source_kind"] == "openvino-ir"
    text = run_kiln("inspect", off).stdout
    assert "past_key_values.1.value" in text and "[1, 2, 24, 8]" in text


def test_from_ir_refuses_what_it_cannot_place(tmp_path):
    ids = param("input_ids", [-1, -1], ov.Type.i64)
    odd = param("mystery", [-1, 3], ov.Type.f32)
    m = ov.Model([op.result(op.convert(ids, ov.Type.f32)), op.result(odd)], [ids, odd], "m")
    ov.save_model(m, str(tmp_path / "m.xml"))
    r = run_kiln("bake", "--from-ir", tmp_path / "m.xml", "-o", tmp_path / "off")
    assert r.returncode == 2 and "mystery" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "off").exists()


def test_from_ir_bad_files(tmp_path):
    (tmp_path / "x.xml").write_text("<html>nope</html>")
    r = run_kiln("bake", "--from-ir", tmp_path / "x.xml", "-o", tmp_path / "off")
    assert r.returncode == 2 and "not an OpenVINO IR" in r.stderr
    (tmp_path / "y.xml").write_text('<?xml version="1.0"?><net name="n" version="11"><layers>'
                                    '</layers></net>')
    r = run_kiln("bake", "--from-ir", tmp_path / "y.xml", "-o", tmp_path / "off")
    assert r.returncode == 2 and "y.bin" in r.stderr
