"""convert.export.parity: matching helpers, classifier parity on a real int8 model, report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.pipeline.boxes import iou_matrix
from convert.export.parity import greedy_match, write_parity_report


def test_iou_matrix_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    b = np.array([[20, 20, 30, 31], [0, 0, 10, 10], [100, 100, 110, 110]], float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 1] == pytest.approx(1.0) and iou[1, 0] == pytest.approx(100 / 110)
    assert greedy_match(iou, 0.95) == [(0, 1)]
    assert sorted(greedy_match(iou, 0.5)) == [(0, 1), (1, 0)]
    assert greedy_match(iou_matrix(a[:0], b), 0.5) == []


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
