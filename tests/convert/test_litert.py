"""convert.litert: convert/'s one LiteRT runner, on a real int8 flatbuffer quantized here."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

from convert.errors import ConvertError  # noqa: E402
from convert.export.quantize import quantize_int8  # noqa: E402
from convert.litert import TfliteRunner, latency_ms, median_invoke_ms, tflite_io  # noqa: E402
from tests.convert.export.tiny import rep, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    # seeded: with weights drawn from whatever state earlier tests left, one draw in a full run put an
    # output outside the calibrated range and the float comparison failed on clipping, not on the runner
    import keras

    keras.utils.set_random_seed(0)
    model = tiny_model()
    return model, quantize_int8(model, rep())


def test_tensor_details_and_a_corrupt_file(pair):
    _, flat = pair
    inp, outs = tflite_io(flat)
    assert list(inp["shape"]) == [1, 16, 16, 3] and np.dtype(inp["dtype"]) == np.int8
    assert sorted(tuple(o["shape"]) for o in outs) == [(1, 64, 1), (1, 64, 4)]
    with pytest.raises(ConvertError, match="not a valid TFLite model"):
        tflite_io(b"not a flatbuffer")


def test_runner_gives_dequantized_outputs_by_shape_close_to_the_float_model(pair):
    model, flat = pair
    x = rep(1, seed=3)[0]
    run = TfliteRunner(flat)
    got = run(x)
    assert set(got) == {(1, 64, 4), (1, 64, 1)} and all(v.dtype == np.float32 for v in got.values())
    want = {tuple(np.asarray(o).shape): np.asarray(o) for o in model(x, training=False)}
    for shape, v in got.items():
        assert np.abs(v - want[shape]).max() < 0.1 * (np.abs(want[shape]).max() + 1e-6) + 0.05
    for o in run.outs:  # dequantized exactly as the tensor's own scale and zero point say
        scale, zero = o["quantization"]
        raw = run.it.get_tensor(o["index"]).astype(np.float32)
        np.testing.assert_array_equal(got[tuple(int(d) for d in o["shape"])], (raw - zero) * scale)
    ordered = run.invoke(run.quantize_input(x))  # the model's output order, same values
    assert all(np.array_equal(v, got[tuple(int(d) for d in o["shape"])]) for o, v in zip(run.outs, ordered))


def test_latency_is_timed_per_thread_count(pair):
    _, flat = pair
    ms = latency_ms(flat, threads=(1, 2), runs=5, warmup=1)
    assert set(ms) == {"threads_1", "threads_2"} and all(v > 0 for v in ms.values())


@pytest.mark.parametrize("set_each_run", [False, True])
def test_median_invoke_runs_the_given_tensor(pair, set_each_run):
    """One timing loop for the card's invoke figures (zeros, set once) and the classifier's per-crop
    figure (a real crop set before every invoke): either way the model ran on the tensor given."""
    model, flat = pair
    run = TfliteRunner(flat)
    x = np.random.default_rng(3).uniform(-1, 1, (1, *run.inp["shape"][1:])).astype(np.float32)
    q = run.quantize_input(x)
    assert median_invoke_ms(run.it, q, runs=3, warmup=1, set_each_run=set_each_run) > 0
    def raw():
        return [run.it.get_tensor(o["index"]).copy() for o in run.outs]

    got = raw()
    run.invoke(np.zeros_like(q))
    zeros = raw()
    run.invoke(q)
    want = raw()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert not all(np.array_equal(a, b) for a, b in zip(zeros, want))  # the check can tell the inputs apart
