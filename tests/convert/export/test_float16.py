"""convert.export.float16: the float16 variant beside an int8 model, pinned by its sidecar, with a parity row."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")

from convert.errors import ConvertError  # noqa: E402
from convert.export.float16 import DEFAULT_DATA_ROOT, build, main, variant_sidecar  # noqa: E402
from convert.export.quantize import quantize_float16, quantize_int8  # noqa: E402
from convert.export.sidecar import write_model_pair  # noqa: E402
from convert.litert import tflite_io  # noqa: E402

LABELS = ["mask", "incorrect_mask", "no_mask", "not_face"]


def tiny_classifier():
    """Weights from fixed seeds: drawn from whatever state earlier tests left the global generator in,
    a model whose logits sit close together made the parity row's top-1 agreement flaky."""
    keras = pytest.importorskip("keras")
    init = keras.initializers.GlorotUniform
    inp = keras.Input((16, 16, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", kernel_initializer=init(seed=1))(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="logits", kernel_initializer=init(seed=2))(x))


def classifier_sidecar():
    return {
        "kind": "classifier", "name": "tiny",
        "input": {"height": 16, "width": 16, "channels": 3, "color": "RGB",
                  "normalization": {"mean": [127.5] * 3, "std": [127.5] * 3}, "resize": "stretch"},
        "outputs": {"logits": {"shape": [1, 4]}},
        "labels": LABELS, "non_face_labels": ["not_face"],
        "output": {"name": "logits", "activation": "softmax", "temperature": 1.5},
        "crop": {"scale": 1.3, "align": "eyes", "shift_y": 0.0},
        "provenance": {"source_model": "tiny test model", "float_model": "tiny.keras",
                       "representative_data": "8 random tensors"},
        "metrics": {"int8_figure": 1.0},
    }


@pytest.fixture(scope="module")
def model():
    return tiny_classifier()


@pytest.fixture
def int8_dir(tmp_path, model):
    """A models folder holding an int8 classifier with its float master, as the shipped ones are."""
    rng = np.random.default_rng(0)
    flat = quantize_int8(model, [rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(8)])
    model.save(tmp_path / "tiny.keras")
    write_model_pair(tmp_path, "tiny", flat, classifier_sidecar())
    return tmp_path


def test_float16_model_has_float_input_and_tracks_the_float_model(model):
    flat = quantize_float16(model)
    inp, outs = tflite_io(flat)
    assert np.dtype(inp["dtype"]) == np.float32 and [np.dtype(o["dtype"]) for o in outs] == [np.float32]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat)
    it.allocate_tensors()
    x = np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    it.set_tensor(inp["index"], x)
    it.invoke()
    assert np.abs(it.get_tensor(outs[0]["index"]) - model(x).numpy()).max() < 1e-2


def test_variant_sidecar_copies_the_model_fields_and_drops_the_int8_ones():
    primary = {**classifier_sidecar(), "model_file": "tiny.tflite", "model_sha256": "a" * 64, "version": "v",
               "variants": {"float16": {"sidecar": "x", "model_sha256": "b" * 64}}}
    primary["outputs"]["logits"].update(dtype="int8", quantization={"scale": 0.1, "zero_point": 0})
    side = variant_sidecar(primary, "tiny")
    assert side["precision"] == "float16" and side["labels"] == LABELS and side["crop"] == primary["crop"]
    assert not {"model_file", "model_sha256", "version", "variants", "metrics"} & set(side)
    assert side["outputs"] == {"logits": {"shape": [1, 4]}}  # dtypes are the new model's, filled on write
    assert side["provenance"]["variant_of"] == "tiny.json" and "representative_data" not in side["provenance"]


@pytest.mark.skipif(not (DEFAULT_DATA_ROOT / "scenes-ilc2021" / "images.csv").is_file(), reason="needs scenes-ilc2021")
def test_build_writes_the_variant_pins_it_and_adds_a_parity_row(int8_dir):
    from agent.variants import choose_model

    before = json.loads((int8_dir / "tiny.json").read_text())
    build(int8_dir, "tiny", val_images=4, threads=1, log=lambda s: None)
    primary = json.loads((int8_dir / "tiny.json").read_text())
    variant = json.loads((int8_dir / "tiny.fp16.json").read_text())
    flat = (int8_dir / "tiny.fp16.tflite").read_bytes()
    sha = hashlib.sha256(flat).hexdigest()
    assert primary["variants"] == {"float16": {"sidecar": "tiny.fp16.json", "model_sha256": sha}}
    assert {k: v for k, v in primary.items() if k != "variants"} == before  # nothing else of the int8 sidecar changes
    assert variant["model_sha256"] == sha and variant["input"]["dtype"] == "float32" and variant["precision"] == "float16"
    sums = dict(reversed(line.split("  ")) for line in (int8_dir / "SHA256SUMS").read_text().splitlines())
    assert sums["tiny.fp16.tflite"] == sha
    assert sums["tiny.json"] == hashlib.sha256((int8_dir / "tiny.json").read_bytes()).hexdigest()
    row = json.loads((int8_dir / "tiny.parity.json").read_text())["float16"]
    assert row["top1_agreement"] > 0.9 and "accuracy_float16" in row and row["latency_ms"]["threads_1"] > 0
    assert "| float16.top1_agreement |" in (int8_dir / "tiny.parity.md").read_text()
    assert variant["metrics"]["parity"]["top1_agreement"] == row["top1_agreement"]
    # and the agent runs it
    assert choose_model(int8_dir / "tiny.json", "classifier", precision="float16").model.precision == "float16"


def test_rewriting_the_int8_model_drops_the_pin(int8_dir, model):
    """A fine-tune or rebuild starts from the old sidecar: the variant of the old master must not stay pinned."""
    side = json.loads((int8_dir / "tiny.json").read_text())
    side["variants"] = {"float16": {"sidecar": "tiny.fp16.json", "model_sha256": "b" * 64}}
    write_model_pair(int8_dir, "tiny", quantize_float16(model), side)
    assert "variants" not in json.loads((int8_dir / "tiny.json").read_text())


def test_a_missing_float_master_names_the_file_and_key_and_writes_nothing(int8_dir, capsys):
    (int8_dir / "tiny.keras").unlink()
    before = sorted(p.name for p in int8_dir.iterdir())
    assert main(["--stem", "tiny", "--models-dir", str(int8_dir)]) == 2
    err = capsys.readouterr().err
    assert str(int8_dir / "tiny.keras") in err and "`provenance.float_model`" in err and "fix:" in err
    assert sorted(p.name for p in int8_dir.iterdir()) == before


def test_an_unknown_stem_names_the_sidecar_and_the_stems_there(tmp_path, int8_dir):
    with pytest.raises(ConvertError, match="nope.json: model sidecar not found"):
        build(tmp_path, "nope")
    with pytest.raises(ConvertError, match=r"--stem nope.*\n  fix: give the stem of an int8 model pair there: tiny$"):
        build(int8_dir, "nope")


def test_yunet_builds_the_float16_variant_when_asked():
    """`maskwatch-convert yunet --float16`: the int8 rebuild drops the old pin, the flag builds the new one."""
    import argparse

    from convert.export.yunet_detector import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--float16"]).float16 and not p.parse_args([]).float16
