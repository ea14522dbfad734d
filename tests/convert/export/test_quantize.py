"""convert.export.quantize: Keras -> int8 TFLite, float heads."""

from __future__ import annotations


import numpy as np
import pytest

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")

from convert.errors import ConvertError  # noqa: E402
from convert.export.quantize import quantize_int8  # noqa: E402
from tests.convert.export.tiny import rep  # noqa: E402


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


def test_open_input_size_converts_to_a_model_of_any_size():
    """A fully convolutional model opened to (1, None, None, C), calibrated at one size, runs at
    others in LiteRT (resized strictly: only the open dimensions move) and agrees with Keras there."""
    from ai_edge_litert.interpreter import Interpreter

    from convert.export.quantize import open_input_size

    keras = pytest.importorskip("keras")
    inp = keras.Input((32, 32, 3), name="input")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    out = keras.layers.Reshape((-1, 4), name="boxes")(keras.layers.Conv2D(4, 1)(x))
    fixed = keras.Model(inp, out)
    opened = open_input_size(fixed)
    assert tuple(opened.inputs[0].shape) == (1, None, None, 3) and opened.output_names == ["boxes"]
    flat = quantize_int8(opened, rep(shape=(1, 32, 32, 3)))
    it = Interpreter(model_content=flat)
    d = it.get_input_details()[0]
    assert list(d["shape_signature"]) == [1, -1, -1, 3]
    x = rep(n=1, shape=(1, 16, 24, 3), seed=3)[0]
    it.resize_tensor_input(d["index"], [1, 16, 24, 3], strict=True)
    it.allocate_tensors()
    scale, zero = d["quantization"]
    it.set_tensor(d["index"], np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8))
    it.invoke()
    o = it.get_output_details()[0]
    got = (it.get_tensor(o["index"]).astype(np.float32) - o["quantization"][1]) * o["quantization"][0]
    want = np.asarray(opened(x))
    assert got.shape == want.shape == (1, 8 * 12, 4)
    assert np.abs(got - want).max() < 0.1 * (np.abs(want).max() + 1e-6) + 0.05
