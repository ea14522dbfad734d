"""convert.export.parity: classifier parity on a real int8 model, report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convert.export.parity import write_parity_report


def test_write_parity_report(tmp_path, capsys):
    jp, mp = write_parity_report(tmp_path, "m", {"kind": "classifier", "latency_ms": {"threads_1": 0.2}, "notes": ["n1"]})
    assert json.loads(jp.read_text())["latency_ms"]["threads_1"] == 0.2
    md = mp.read_text()
    assert "| latency_ms.threads_1 | 0.2 |" in md and "- n1" in md
    assert "Parity report: m" in capsys.readouterr().out


@pytest.mark.tf
def test_classifier_parity_on_tiny_int8_model():
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from convert.export.parity import classifier_parity
    from convert.export.quantize import quantize_int8

    inp = keras.Input((12, 12, 3), batch_size=1)
    x = keras.layers.Conv2D(6, 3, activation="relu")(inp)
    out = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (20, 12, 12, 3)).astype(np.float32)
    flat = quantize_int8(model, [v[None] for v in xs])
    rep = classifier_parity(model, flat, xs, ["a", "b", "c"], y_true=np.zeros(20, int))
    assert rep["n_images"] == 20
    assert 0.0 <= rep["prob_diff_mean"] <= rep["prob_diff_max"] <= 1.0
    assert rep["top1_agreement"] >= 0.5
    assert set(rep["latency_ms"]) == {"threads_1", "threads_2"}
    assert rep["size_bytes"] == len(flat)
