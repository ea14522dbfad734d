"""convert.export.quantize: Keras -> int8 TFLite, float heads, the atomic model + sidecar write."""

from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")

from convert.errors import ConvertError  # noqa: E402
from convert.export.quantize import check_sidecar_fields, quantize_int8, write_model_pair  # noqa: E402


def tiny_model():
    """A small detector-like model with two outputs of distinct shapes."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, 3), batch_size=1, name="input")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    reg = keras.layers.Reshape((64, 4), name="regressors")(keras.layers.Conv2D(4, 1)(x))
    sc = keras.layers.Reshape((64, 1), name="scores")(keras.layers.Conv2D(1, 1)(x))
    return keras.Model(inp, [reg, sc])


def rep(n=8, shape=(1, 16, 16, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(n)]


def sidecar():
    return {
        "kind": "detector",
        "name": "tiny",
        "input": {"height": 16, "width": 16, "channels": 3, "color": "RGB",
                  "normalization": {"mean": [127.5] * 3, "std": [127.5] * 3}, "resize": "letterbox"},
        "outputs": {"regressors": {"shape": [1, 64, 4]}, "scores": {"shape": [1, 64, 1]}},
        "decoding": {"type": "blazeface", "anchors": {}, "num_boxes": 64},
        "provenance": {"source_model": "tiny test model"},
    }


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def flat(model):
    return quantize_int8(model, rep())


def run_litert(flat_bytes, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat_bytes, num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    scale, zero = inp["quantization"]
    it.set_tensor(inp["index"], np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8))
    it.invoke()
    res = {}
    for o in it.get_output_details():
        v = it.get_tensor(o["index"]).astype(np.float32)
        if o["dtype"] != np.float32:
            s, z = o["quantization"]
            v = (v - z) * s
        res[tuple(o["shape"])] = (v, o["dtype"])
    return inp, res


def test_int8_model_runs_on_litert_and_tracks_float(model, flat):
    x = rep(1, seed=5)[0]
    inp, res = run_litert(flat, x)
    assert inp["dtype"] == np.int8
    ref = [np.asarray(o) for o in model(x)]
    for r in ref:
        v, dtype = res[r.shape]
        assert dtype == np.int8
        scale = np.abs(r).max() / 60 + 1e-3  # a few int8 steps of the output's range
        assert np.abs(v - r).mean() < scale


def test_float_outputs_make_that_head_float(model):
    flat = quantize_int8(model, rep(), float_outputs=["regressors"])
    _, res = run_litert(flat, rep(1, seed=5)[0])
    assert res[(1, 64, 4)][1] == np.float32
    assert res[(1, 64, 1)][1] == np.int8


def test_float_logits_of_a_dense_classifier():
    keras = pytest.importorskip("keras")
    inp = keras.Input((12, 12, 3), batch_size=1)
    x = keras.layers.Conv2D(6, 3, activation="relu")(inp)
    out = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    xs = rep(shape=(1, 12, 12, 3))
    flat = quantize_int8(model, xs, float_outputs=["logits"])
    _, res = run_litert(flat, xs[0])
    v, dtype = res[(1, 3)]
    assert dtype == np.float32
    assert np.allclose(v, np.asarray(model(xs[0])), atol=0.05)


def test_unknown_float_output(model):
    with pytest.raises(ConvertError, match="not outputs of the model"):
        quantize_int8(model, rep(), float_outputs=["boxes"])


def test_empty_representative_set(model):
    with pytest.raises(ConvertError, match="empty"):
        quantize_int8(model, iter([]))


def test_wrong_shape_representative_set(model):
    with pytest.raises(ConvertError, match=r"shape \(1, 8, 8, 3\)"):
        quantize_int8(model, rep(shape=(1, 8, 8, 3)))


def test_unsupported_op_is_a_clear_error():
    keras = pytest.importorskip("keras")
    inp = keras.Input((8, 8, 3), batch_size=1)
    out = keras.layers.Lambda(lambda t: tf.math.bessel_i0(t))(inp)  # no TFLite builtin, let alone int8
    with pytest.raises(ConvertError, match="conversion failed"):
        quantize_int8(keras.Model(inp, out), rep(shape=(1, 8, 8, 3)))


def test_write_model_pair_fills_sidecar_and_sums(tmp_path, flat):
    (tmp_path / "other.tflite").write_bytes(b"x")
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(b'x').hexdigest()}  other.tflite\n"
                                         f"{'0' * 64}  removed.tflite\n")
    mp, sp = write_model_pair(tmp_path, "tiny", flat, sidecar())
    side = json.loads(sp.read_text())
    assert side["schema"] == "maskwatch-model/1"
    assert side["model_file"] == "tiny.tflite"
    assert side["model_sha256"] == hashlib.sha256(mp.read_bytes()).hexdigest()
    assert side["input"]["dtype"] == "int8" and side["input"]["quantization"]["scale"] > 0
    for name in ("regressors", "scores"):
        assert side["outputs"][name]["dtype"] == "int8"
        assert side["outputs"][name]["quantization"]["scale"] > 0
    assert side["provenance"]["converter"].startswith("tensorflow ")
    assert side["provenance"]["date"].endswith("Z")
    sums = (tmp_path / "SHA256SUMS").read_text()
    assert "removed.tflite" not in sums and "other.tflite" in sums and "tiny.json" in sums
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path, check=True)
    assert not list(tmp_path.glob(".*tmp*"))


def test_rewriting_identical_bytes_keeps_the_version(tmp_path, flat, model):
    """The version alerts carry (and the build date) change with the model bytes, not with each rebuild."""
    _, sp = write_model_pair(tmp_path, "tiny", flat, sidecar())
    first = json.loads(sp.read_text())
    first["version"] = "2020.01.01.000000"  # as if built long ago
    first["provenance"]["date"] = "2020-01-01T00:00:00Z"
    sp.write_text(json.dumps(first))
    _, sp = write_model_pair(tmp_path, "tiny", flat, sidecar())
    again = json.loads(sp.read_text())
    assert again["version"] == "2020.01.01.000000" and again["provenance"]["date"] == "2020-01-01T00:00:00Z"
    other = quantize_int8(model, rep(seed=1))
    assert other != flat
    _, sp = write_model_pair(tmp_path, "tiny", other, sidecar())
    new = json.loads(sp.read_text())
    assert new["version"] != "2020.01.01.000000" and new["provenance"]["date"] != "2020-01-01T00:00:00Z"


def test_missing_sidecar_field_writes_nothing(tmp_path, flat):
    bad = sidecar()
    del bad["input"]["normalization"]
    with pytest.raises(ConvertError, match="input.normalization.mean"):
        write_model_pair(tmp_path, "tiny", flat, bad)
    assert list(tmp_path.iterdir()) == []


def test_sidecar_shape_mismatch_writes_nothing(tmp_path, flat):
    bad = sidecar()
    bad["outputs"]["scores"]["shape"] = [1, 65, 1]
    with pytest.raises(ConvertError, match="has shape"):
        write_model_pair(tmp_path, "tiny", flat, bad)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_model_bytes_write_nothing(tmp_path):
    with pytest.raises(ConvertError, match="not a valid TFLite model"):
        write_model_pair(tmp_path, "tiny", b"not a flatbuffer" * 10, sidecar())
    assert list(tmp_path.iterdir()) == []


def test_check_sidecar_fields_kind():
    with pytest.raises(ConvertError, match="'kind' must be"):
        check_sidecar_fields({**sidecar(), "kind": "segmenter"}, "x.json")
    with pytest.raises(ConvertError, match="x.json: missing required field 'labels'"):
        check_sidecar_fields({**sidecar(), "kind": "classifier"}, "x.json")
