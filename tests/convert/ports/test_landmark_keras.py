"""convert.ports.landmark_keras: MediaPipe face_landmark.tflite -> Keras, checked against the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")
pytest.importorskip("tflite")

from convert.ports import landmark_keras as lk  # noqa: E402
from convert.ports.blazeface_keras import mediapipe_dir  # noqa: E402
from convert.errors import ConvertError  # noqa: E402
from convert.tf import keras_module

MP_DIR = mediapipe_dir()  # $MASKWATCH_MEDIAPIPE_DIR or .cache/, filled by scripts/test.sh
DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
needs_mp = pytest.mark.skipif(
    not (MP_DIR / lk.LANDMARK_FILE).is_file(),
    reason=f"mediapipe 0.10.21 wheel not unpacked at {MP_DIR} (set MASKWATCH_MEDIAPIPE_DIR)",
)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Two real faces at 192 px: scenes-ilc2021 val faces, else skimage's astronaut."""
    if (DATA_ROOT / "scenes-ilc2021" / "boxes.csv").is_file():
        return lk.face_crops(DATA_ROOT, 2)
    import cv2

    skd = pytest.importorskip("skimage.data")
    return cv2.resize(skd.astronaut()[0:260, 120:380], (192, 192), interpolation=cv2.INTER_AREA)[None]


@needs_mp
@pytest.mark.parametrize("prelu,input_range", [("layer", lk.NATIVE_RANGE), ("dw", lk.PROJECT_RANGE)])
def test_rebuild_matches_original_on_real_faces(faces, prelu, input_range):
    data = (MP_DIR / lk.LANDMARK_FILE).read_bytes()
    model = lk.rebuild(data, "face_landmark.tflite", prelu=prelu, input_range=input_range)
    assert model.output_names == ["landmarks", "face_flag"]
    assert all(";" not in layer.name and "/" not in layer.name for layer in model.layers)
    diff = lk.parity(model, data, faces, input_range)
    assert diff["landmarks_max_abs_diff"] < 1e-3  # pixels of the 192 px input
    assert diff["face_flag_max_abs_diff"] < 1e-3


@needs_mp
def test_trunk_is_the_nets_own_features():
    data = (MP_DIR / lk.LANDMARK_FILE).read_bytes()
    full = lk.rebuild(data, prelu="layer")
    cut = lk.rebuild(data, size=192, stride=16, prelu="dw")
    x = np.random.default_rng(0).uniform(0, 1, (1, 192, 192, 3)).astype(np.float32)
    import keras

    inner = keras.Model(full.input, full.get_layer(lk.CUTS[16]).output)
    assert np.abs(np.asarray(cut(x)) - np.asarray(inner(x))).max() < 1e-4
    small = lk.trunk(MP_DIR, 96, 16)
    assert tuple(small.output.shape[1:]) == (6, 6, 128)


@needs_mp
def test_bad_cuts_are_clear_errors():
    data = (MP_DIR / lk.LANDMARK_FILE).read_bytes()
    with pytest.raises(ConvertError, match="not a trunk cut"):
        lk.rebuild(data, size=96, stride=64)
    with pytest.raises(ConvertError, match="multiple of the stride"):
        lk.rebuild(data, size=100, stride=16)
    with pytest.raises(ConvertError, match="give a stride"):
        lk.rebuild(data, size=96)


def test_missing_mediapipe_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConvertError, match="--mediapipe-dir"):
        lk.model_path(tmp_path)


@needs_mp
def test_gdc_head_starts_as_average_pooling_and_keeps_the_contract():
    """The GDC head begins as a plain average (its weights 1/(h*w)), so fine-tuning starts where the
    GAP head would, and both heads give the same 4 logits from a 96 px crop."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    keras = keras_module()
    pooled = {}
    for head, expand in (("gap", 0), ("gdc", 0), ("gdc", 32)):
        model, body = lk.build_classifier(MP_DIR, 96, 16, head=head, expand=expand)
        assert model.output.shape[-1] == 4
        pooled[(head, expand)] = keras.Model(model.input, model.get_layer("pool").output)(x, training=False).numpy()
        if head == "gdc":
            assert model.get_layer("gdc").kernel_size == (6, 6)  # one weight per position of the 6x6 map
    assert pooled[("gdc", 32)].shape == (2, 32)
    # BatchNorm at init (mean 0, var 1) only divides by sqrt(1 + eps)
    np.testing.assert_allclose(pooled[("gdc", 0)], pooled[("gap", 0)] / np.sqrt(1 + 1e-3), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="head"):
        lk.build_classifier(MP_DIR, 96, 16, head="max")


def test_recipe_parses_back_to_the_same_training():
    """The model card's rebuild lines are the trainer's own options: parsed again they train the same model."""
    argv = ["--crops", "build/classifier_96/crops.npz", "--head", "gdc", "--expand", "128", "--epochs", "7",
            "--lr", "5e-4", "--representative", "1000"]
    a = lk._arguments().parse_args(argv)
    lines = lk.recipe(a, 96)
    assert lines[0].startswith("python -m convert.data.classifier --size 96 --out build/classifier_96/crops.npz")
    trainer = " ".join(ln.rstrip("\\").strip() for ln in lines[1:]).split()
    assert trainer[:3] == ["python", "-m", "convert.ports.landmark_keras"]
    b = lk._arguments().parse_args(trainer[3:])
    for key in ("crops", "stride", "prelu", "head", "expand", "freeze_epochs", "epochs", "lr", "seed", "representative", "synthetic"):
        assert getattr(b, key) == getattr(a, key), key
    assert b.export
    assert "--agent-detector models/face_detector_door.json" in lk.recipe(a, 96, "face_detector_door.json")[0]


def test_tune_fold_holds_out_whole_images_by_hash():
    """--tune-fold: a fixed share of train images, every crop of an image on the same side."""
    from convert.data import classifier as cd

    names = np.array([f"img{i}.jpg" for i in range(2000)] * 2)
    held = cd.tune_fold_mask(names, 0.15)
    assert np.array_equal(held[:2000], held[2000:]) and 0.12 < held[:2000].mean() < 0.18
    assert np.array_equal(held, cd.tune_fold_mask(names, 0.15)) and not cd.tune_fold_mask(names, 0.0).any()
    a = lk._arguments().parse_args(["--crops", "c.npz", "--tune-fold", "0.15", "--synthetic"])
    lines = lk.recipe(a, 48, "face_detector_yunet.json", 3000)
    assert "--synthetic 3000" in lines[0] and "--tune-fold 0.15" in " ".join(lines)
