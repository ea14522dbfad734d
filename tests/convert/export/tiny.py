"""A tiny detector-like Keras model, its calibration set and sidecar fields: what the export tests
convert and write."""

from __future__ import annotations

import numpy as np
import pytest


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
