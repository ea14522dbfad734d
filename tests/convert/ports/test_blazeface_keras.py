"""convert.ports.blazeface_keras: MediaPipe BlazeFace .tflite -> Keras, checked against the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")
pytest.importorskip("tflite")

from convert.ports.blazeface_keras import MODEL_FILES, FACE_DIR, load_blazeface, load_keras, mediapipe_dir, parity_vs_tflite, skip_blocks  # noqa: E402
from convert.errors import ConvertError  # noqa: E402

MP_DIR = mediapipe_dir()
SCENES = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "scenes-ilc2021" / "images"
needs_mp = pytest.mark.skipif(
    not (MP_DIR / FACE_DIR / MODEL_FILES["full"]).is_file(),
    reason=f"mediapipe 0.10.21 wheel not unpacked at {MP_DIR} (set MASKWATCH_MEDIAPIPE_DIR)",
)


@needs_mp
@pytest.mark.parametrize("variant,outputs", [("full", (2304, 16)), ("short", (896, 16))])
def test_rebuild_matches_original_on_real_images(variant, outputs, tmp_path):
    model, data, sha = load_blazeface(MP_DIR, variant)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [outputs, (outputs[0], 1)]
    assert model.output_names == ["regressors", "scores"]
    assert all(";" not in layer.name and "/" not in layer.name for layer in model.layers)
    diff = parity_vs_tflite(model, data, SCENES, n_images=4)
    assert diff["n_images"] >= 1
    assert diff["max_abs_diff"] < 1e-3
    # the .keras round trip keeps the custom layers and weights
    path = tmp_path / f"blazeface_{variant}.keras"
    model.save(path)
    again = load_keras(path)
    x = np.random.default_rng(0).uniform(-1, 1, model.inputs[0].shape).astype(np.float32)
    for a, b in zip(model(x), again(x)):
        assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_skip_blocks_routes_a_block_output_to_its_skip_input():
    import keras

    x = keras.Input((8, 8, 4), batch_size=1)
    branch = keras.layers.Conv2D(4, 3, padding="same", name="branch")(x)
    y = keras.layers.Add(name="res")([x, branch])
    out = keras.layers.Conv2D(2, 1, name="head")(keras.layers.Activation("relu", name="act")(y))
    model = keras.Model(x, out)
    slim = skip_blocks(model, ["res"])
    names = [layer.name for layer in slim.layers]
    assert "branch" not in names and "res" not in names and "head" in names
    v = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype(np.float32)
    head = model.get_layer("head")
    assert np.allclose(slim(v), head(np.maximum(v, 0)), atol=1e-6)  # same head weights, on relu(x)
    with pytest.raises(ValueError, match="not Add layers"):
        skip_blocks(model, ["branch"])


@needs_mp
def test_skip_blocks_on_the_full_range_graph_drops_their_convolutions():
    model, _, _ = load_blazeface(MP_DIR, "full", (144, 192))
    adds = ["model_1_model_activation_2_Relu", "model_1_model_activation_4_Relu", "model_1_model_activation_10_Relu"]
    slim = skip_blocks(model, adds)

    def count(m, kind):
        return sum(type(layer).__name__ == kind for layer in m.layers)

    assert count(model, "Conv2D") - count(slim, "Conv2D") == 2 * len(adds)  # two 1x1 convolutions per block
    assert count(model, "Add") - count(slim, "Add") == len(adds)
    assert [tuple(o.shape) for o in slim.outputs] == [tuple(o.shape) for o in model.outputs]
    out = slim(np.zeros((1, 144, 192, 3), np.float32))
    assert all(np.isfinite(np.asarray(o)).all() for o in out)


@needs_mp
@pytest.mark.parametrize("variant,hw,anchors", [("short", (144, 192), 1512), ("full", (144, 192), 1728),
                                                ("full", (136, 184), 1564)])
def test_rebuild_at_another_input_size(variant, hw, anchors):
    """Same weights on a 4:3 input: one output row per anchor of the new grid, and the original
    short-range weights still find the astronaut's face where they find it at their own size.
    At 184x136 the encoder's 17-row stage halves to 9 rows, which the scaled upsampling size
    (12 * 136/192 = 8.5, rounded) misses: each upsampling goes back to its encoder stage's size."""
    import cv2
    from skimage.data import astronaut

    from convert.evaluate.detector import KerasModel, make_detector
    from convert.export.face_detector import sidecar_template

    own, _, _ = load_blazeface(MP_DIR, variant)
    model, _, _ = load_blazeface(MP_DIR, variant, hw)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(anchors, 16), (anchors, 1)]
    assert tuple(model.inputs[0].shape[1:3]) == hw
    for a, b in zip(own.get_weights(), model.get_weights()):
        assert np.array_equal(a, b)
    if variant != "short":
        return
    bgr = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    faces = {}
    for name, m, wh in (("own", own, None), ("4:3", model, (hw[1], hw[0]))):
        side = sidecar_template(variant, MODEL_FILES[variant], "", wh)
        found = make_detector(KerasModel(m, side, name), 0.5).detect(bgr)
        assert found, name
        faces[name] = np.array(found[0].box)
    from agent.pipeline.boxes import iou_matrix

    assert iou_matrix(faces["own"][None], faces["4:3"][None])[0, 0] > 0.7


@needs_mp
def test_full_range_sparse_weights_are_densified():
    from convert.ports.graph import Graph

    g = Graph((MP_DIR / FACE_DIR / MODEL_FILES["full"]).read_bytes(), "full")
    sparse = [i for i in range(g.sg.TensorsLength()) if g.tensor(i).Sparsity() is not None]
    assert len(sparse) == 46
    w = g.constant(sparse[0])
    assert list(w.shape) == g.shape(sparse[0])
    assert 0 < np.count_nonzero(w) < w.size  # zeros filled in, stored values placed


def test_missing_mediapipe_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConvertError, match="--mediapipe-dir"):
        load_blazeface(tmp_path, "full")


def test_ensure_mediapipe_fetches_when_the_landmark_graph_is_missing(tmp_path, monkeypatch):
    """A cache holding only the detection graphs is refetched: landmark-classifier needs the landmark one."""
    import convert.ports.blazeface_keras as bk

    for f in MODEL_FILES.values():
        (tmp_path / FACE_DIR).mkdir(parents=True, exist_ok=True)
        (tmp_path / FACE_DIR / f).write_bytes(b"x")
    fetched = []
    monkeypatch.setattr(bk, "fetch_mediapipe", lambda dest: fetched.append(dest) or dest)
    assert bk.ensure_mediapipe(tmp_path) == tmp_path and fetched == [tmp_path]
    (tmp_path / bk.LANDMARK_FILE).parent.mkdir(parents=True)
    (tmp_path / bk.LANDMARK_FILE).write_bytes(b"x")
    assert bk.ensure_mediapipe(tmp_path) == tmp_path and fetched == [tmp_path]  # complete: no fetch


def test_corrupt_tflite_is_a_clear_error():
    from convert.ports.blazeface_keras import tflite_to_keras

    with pytest.raises(ConvertError, match="not a readable TFLite flatbuffer"):
        tflite_to_keras(b"\x00" * 64, "junk.tflite")


@needs_mp
def test_detector_parity_of_the_rebuild_against_its_original():
    """The Keras rebuild against the original float .tflite (same network, so parity is ~perfect):
    every float detection is kept and the by-height counts add up to the float detections."""
    import cv2

    from agent.pipeline.detect import letterbox
    from convert.export.face_detector import sidecar_template
    from convert.export.parity import HEIGHT_BINS, detector_parity

    model, data, _ = load_blazeface(MP_DIR, "short")
    decoding = sidecar_template("short", "face_detector_short", "test")["decoding"]
    images = sorted(SCENES.glob("*.jpg"))[:12] if SCENES.is_dir() else []
    if not images:
        pytest.skip("scenes-ilc2021 images not available")
    xs = []
    for p in images:
        canvas, _ = letterbox(cv2.imread(str(p)), 128, 128)
        xs.append(((cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) - 127.5) / 127.5)[None])
    rep = detector_parity(model, data, xs, decoding, min_score=0.5)
    assert rep["detections_float"] > 0
    assert rep["kept_fraction"] == 1.0 and rep["lost"] == 0 and rep["gained"] == 0
    assert rep["matched_iou_min"] > 0.99 and rep["raw_box_abs_err_mean_px"] < 0.05
    bins = rep["kept_by_height_px"]
    assert set(bins) <= {name for name, _, _ in HEIGHT_BINS}
    assert sum(int(v.split("/")[1]) for v in bins.values()) == rep["detections_float"]
    assert all(v.split("/")[0] == v.split("/")[1] for v in bins.values())


def test_head_correction_fit_recovers_a_linear_bias():
    from convert.export.face_detector import fit_head_correction

    class Conv:  # only the name is read
        name = "head"

    rng = np.random.default_rng(0)
    q = rng.normal(0, 30, (400, 16))
    a, b = rng.uniform(0.8, 1.1, 16), rng.normal(0, 3, 16)
    f = q * a + b
    anchor = rng.integers(0, 100, 400)
    corr = fit_head_correction(f, q, anchor, [(0, 50, 2, Conv())])["head"]
    sel = anchor < 50
    assert corr["anchors"] == int(sel.sum())
    assert np.allclose(corr["a"], a, atol=1e-5) and np.allclose(corr["b"], b, atol=1e-4)
    # too few rows: identity
    few = fit_head_correction(f[:5], q[:5], np.zeros(5, int), [(0, 50, 2, Conv())])["head"]
    assert few["a"] == [1.0] * 16 and few["b"] == [0.0] * 16


@needs_mp
def test_head_correction_folds_into_the_short_range_heads():
    from convert.export.face_detector import fold_head_correction, regressor_heads

    model, _, _ = load_blazeface(MP_DIR, "short")
    heads = regressor_heads(model, 896)
    assert [(lo, hi, k, conv.name) for lo, hi, k, conv in heads] == [(0, 512, 2, "regressor_8"), (512, 896, 6, "regressor_16")]
    x = np.random.default_rng(1).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    before = np.asarray(model(x)[0])[0]
    a = np.linspace(0.8, 1.2, 16)
    b = np.linspace(-2, 2, 16)
    fold_head_correction(heads, {name: {"a": a.tolist(), "b": b.tolist()} for name in ("regressor_8", "regressor_16")})
    after = np.asarray(model(x)[0])[0]
    assert np.allclose(after, before * a + b, atol=1e-3)
    # full range's head goes through DEPTH_TO_SPACE: no straight channel-to-anchor mapping, no correction
    full, _, _ = load_blazeface(MP_DIR, "full")
    assert regressor_heads(full, 2304) == []
