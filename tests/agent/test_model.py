"""Model loading from the sidecar: runtime chain, hash and shape checks, quantization, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from agent.model import ModelError, cv2_table, find_interpreter, load_model, pixel_mapper, read_sidecar

AGENT_ROOT = Path(__file__).resolve().parents[2] / "agent"
AGENT_MODULES = ["agent." + ".".join(p.relative_to(AGENT_ROOT).with_suffix("").parts) for p in AGENT_ROOT.rglob("*.py")
                 if p.stem != "__init__"]

# Run in a subprocess: makes the named top-level packages unimportable.
BLOCKER = textwrap.dedent(
    """
    import sys
    class _Block:
        def __init__(self, names): self.names = names
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(name + " blocked by the test")
            return None
    sys.meta_path.insert(0, _Block(BLOCKED))
    """
)


def test_loads_detector_by_shape_with_light_runtime(detector_json):
    m = load_model(detector_json, kind="detector")
    assert m.runtime == "ai_edge_litert.interpreter"
    assert set(m.output_index) == set(m.meta["outputs"])
    w, h = m.input_size
    x = np.zeros((1, h, w, 3), m.input_dtype)
    out = m.run(x)
    for name, spec in m.meta["outputs"].items():
        assert list(out[name].shape) == spec["shape"] and out[name].dtype == np.float32


def test_pixel_lut_matches_sidecar_normalization_and_interpreter_quantization(detector_json, classifier_json):
    for sidecar in (detector_json, classifier_json):
        m = load_model(sidecar)
        lut = m.pixel_lut()
        norm = m.meta["input"]["normalization"]
        expected = (np.arange(256)[:, None] - np.array(norm["mean"])) / np.array(norm["std"])
        scale, zero = m.input_quant
        if scale:
            expected = np.clip(np.round(expected / scale + zero), np.iinfo(m.input_dtype).min, np.iinfo(m.input_dtype).max)
        assert lut.dtype == m.input_dtype and lut.shape == (256, 3)
        np.testing.assert_allclose(lut.astype(float), expected, atol=1e-5)


def test_cv2_table_gives_the_per_channel_lookup():
    """One shared table when the channels agree, the per-channel one otherwise; either way cv2.LUT
    maps each channel through its own column."""
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    shared = np.repeat((np.arange(256) - 128).astype(np.int8)[:, None], 3, axis=1)
    own = shared.copy()
    own[:, 2] = np.clip(np.arange(256) - 100, -128, 127).astype(np.int8)
    for lut, shape in ((shared, (1, 256)), (own, (1, 256, 3))):
        table = cv2_table(lut)
        assert table.shape == shape and table.dtype == np.int8
        expected = np.stack([lut[image[..., c], c] for c in range(3)], axis=-1)
        assert np.array_equal(cv2.LUT(image, table), expected)


def test_wrong_kind_and_schema(detector_json, copy_model):
    with pytest.raises(ModelError, match="is a 'detector' model, expected a 'classifier'"):
        load_model(detector_json, kind="classifier")
    bad = copy_model(detector_json, lambda m: m.update(schema="other/2"))
    with pytest.raises(ModelError, match="schema"):
        read_sidecar(bad)


def test_missing_sidecar_and_model(tmp_path, detector_json, copy_model):
    with pytest.raises(ModelError, match=r"sidecar not found\n  fix:"):
        load_model(tmp_path / "nope.json")
    side = copy_model(detector_json)
    (side.parent / json.loads(side.read_text())["model_file"]).unlink()
    with pytest.raises(ModelError, match="is missing"):
        load_model(side)
    side.write_text("{not json")
    with pytest.raises(ModelError, match="not a readable JSON sidecar"):
        load_model(side)


def test_sha256_mismatch_names_both_files(detector_json, copy_model):
    side = copy_model(detector_json, lambda m: m.update(model_sha256="0" * 64))
    with pytest.raises(ModelError) as e:
        load_model(side)
    msg = str(e.value)
    assert "sha256" in msg and str(side) in msg and ".tflite" in msg and "fix:" in msg


def test_corrupt_model_is_a_clear_error(detector_json, copy_model):
    side = copy_model(detector_json)
    model = side.parent / json.loads(side.read_text())["model_file"]
    model.write_bytes(model.read_bytes()[:1000])
    meta = json.loads(side.read_text())
    meta.pop("model_sha256")
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        load_model(side)


def test_output_shape_mismatch_names_both_files(detector_json, copy_model):
    side = copy_model(detector_json, lambda m: m["outputs"]["scores"].update(shape=[1, 999, 1]))
    with pytest.raises(ModelError) as e:
        load_model(side)
    msg = str(e.value)
    assert "[1, 999, 1]" in msg and str(side) in msg and ".tflite" in msg


def test_input_shape_mismatch(copy_model):
    door = Path(__file__).resolve().parents[2] / "models" / "face_detector_door.json"  # a fixed-size model
    side = copy_model(door, lambda m: m["input"].update(height=128))
    with pytest.raises(ModelError, match="input shape"):
        load_model(side)


def test_open_size_model_runs_at_the_sidecar_size_and_others(detector_json, copy_model):
    """An adaptive detector (height and width left open in the file) loads at the sidecar's size, runs
    at smaller ones on their own interpreters, and a sidecar whose size disagrees with its outputs fails."""
    m = load_model(detector_json, kind="detector")
    assert {1, 2} <= set(m.open_dims) and m.input_shape == (1, m.input_size[1], m.input_size[0], 3)
    full = m.run(np.zeros(m.input_shape, m.input_dtype))
    small = m.run(np.zeros((1, 192, 320, 3), m.input_dtype))
    assert small["scores"].shape[1] == (40 * 24 + 20 * 12 + 10 * 6) < full["scores"].shape[1]
    assert m.input_shape == (1, 192, 320, 3)
    m.use_input_shape((1, m.input_size[1], m.input_size[0], 3))  # back: the kept interpreter
    assert m.run(np.zeros(m.input_shape, m.input_dtype))["scores"].shape == full["scores"].shape
    side = copy_model(detector_json, lambda meta: meta["input"].update(height=128))
    with pytest.raises(ModelError, match="scores"):
        load_model(side)


def test_interpreters_are_kept_per_shape_at_most_pool_size(classifier_json, monkeypatch):
    import agent.model as am

    monkeypatch.setattr(am, "POOL_SIZE", 2)
    m = load_model(classifier_json, kind="classifier")
    one = m.input_shape
    w, h = m.input_size
    for n in (1, 2, 3, 2):
        m.run(np.zeros((n, h, w, 3), m.input_dtype))
    assert m.kept_shapes == [(3, h, w, 3), (2, h, w, 3)] and one not in m.kept_shapes  # least recently used dropped
    m.resize_batch(3)
    assert m.batch == 3 and m.run(np.zeros(m.input_shape, m.input_dtype))[next(iter(m.meta["outputs"]))].shape[0] == 3


def test_the_load_time_interpreter_goes_when_frames_run_at_another_size(detector_json):
    """A 16:9 camera: the sidecar-size interpreter (only checked at load) is not kept beside the one it runs."""
    m = load_model(detector_json, kind="detector")
    for _ in range(3):
        m.run(np.zeros((1, 192, 320, 3), m.input_dtype))
    assert m.kept_shapes == [(1, 192, 320, 3)]


def test_classifier_batch_resize(classifier_json):
    m = load_model(classifier_json, kind="classifier")
    w, h = m.input_size
    x = np.zeros((3, h, w, 3), m.input_dtype)
    m.resize_batch(3)
    out = m.run(x)[next(iter(m.meta["outputs"]))]
    assert out.shape[0] == 3


def run_blocked(blocked, code):
    src = f"BLOCKED = {set(blocked)!r}\n" + BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)


def test_no_runtime_gives_one_error_naming_all_three():
    r = run_blocked(
        {"ai_edge_litert", "tflite_runtime", "tensorflow"},
        """
        from agent.model import ModelError, find_interpreter
        try:
            find_interpreter()
        except ModelError as e:
            print(e)
        """,
    )
    assert r.returncode == 0, r.stderr
    for name in ("ai_edge_litert", "tflite_runtime", "tensorflow", "pip install ai-edge-litert"):
        assert name in r.stdout


def test_falls_back_past_a_missing_runtime():
    _, name = find_interpreter((("no_such_runtime_xyz", "Interpreter", "x"), ("ai_edge_litert.interpreter",
                                                                              "Interpreter", "ai-edge-litert")))
    assert name == "ai_edge_litert.interpreter"


def test_agent_never_imports_tensorflow():
    """Every agent module imports, and a detector runs, with TensorFlow made unimportable."""
    import os

    models = os.environ.get("MASKWATCH_TEST_MODELS") or str(Path(__file__).resolve().parents[2] / "models")
    r = run_blocked(
        {"tensorflow", "keras", "convert"},
        f"""
        import importlib, os, sys
        for name in {AGENT_MODULES!r}:
            importlib.import_module(name)
        side = os.path.join({models!r}, "face_detector.json")
        if os.path.exists(side):
            import numpy as np
            from agent.pipeline.detect import DetectorConfig, FaceDetector
            FaceDetector(DetectorConfig(model=side)).detect(np.zeros((480, 640, 3), np.uint8))
            print("ran detector")
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "convert"))
        print("imported:", bad)
        """,
    )
    assert r.returncode == 0, r.stderr
    assert "imported: []" in r.stdout
    if (Path(models) / "face_detector.json").exists():
        assert "ran detector" in r.stdout


def test_sidecar_documents_the_interpreters_quantization(detector_json, classifier_json):
    """The sidecar's copy of the quantization parameters matches the model (the run-time truth)."""
    for sidecar in (detector_json, classifier_json):
        m = load_model(sidecar)
        q = m.meta["input"].get("quantization")
        scale, zero = m.input_quant
        if q is None:
            assert scale == 0.0
        else:
            assert q["scale"] == pytest.approx(scale, rel=1e-6) and q["zero_point"] == zero
        details = {d["index"]: d for d in m.interpreter.get_output_details()}
        for name, spec in m.meta["outputs"].items():
            d = details[m.output_index[name]]
            assert np.dtype(d["dtype"]).name == spec["dtype"], name
            oq = spec.get("quantization")
            if oq is not None:
                assert oq["scale"] == pytest.approx(d["quantization"][0], rel=1e-6)
                assert oq["zero_point"] == d["quantization"][1]


@pytest.mark.parametrize("sidecar", ["face_detector_yunet", "face_detector_door", "mask_classifier"])
def test_pixel_mapper_gives_the_table_s_numbers(sidecar):
    """The XOR fast path (YuNet's pixel - 128) and cv2.LUT give exactly the pixel table's values."""
    m = load_model(Path(__file__).resolve().parents[2] / "models" / f"{sidecar}.json")
    px = np.random.default_rng(0).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    lut = m.pixel_lut()
    got = pixel_mapper(lut)(px)
    assert got.dtype == m.input_dtype and np.array_equal(got, lut[px, np.arange(3)])
