"""Fixtures of the export tests: the tiny model and its int8 flatbuffer, built once per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("tensorflow")
    from tests.convert.export.tiny import tiny_model

    return tiny_model()


@pytest.fixture(scope="module")
def flat(model):
    from convert.export.quantize import quantize_int8
    from tests.convert.export.tiny import rep

    return quantize_int8(model, rep())
