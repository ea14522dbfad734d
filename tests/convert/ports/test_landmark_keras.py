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

MP_DIR = mediapipe_dir()  # $MASKWATCH_MEDIAPIPE_DIR or .cache/, filled by scripts/test.sh
DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
needs_mp = pytest.mark.skipif(
    not (MP_DIR / lk.LANDMARK_FILE).is_file(),
    reason=f"mediapipe 0.10.21 wheel not unpacked at {MP_DIR} (set MASKWATCH_MEDIAPIPE_DIR)",
)


def _scene_face_crops(n: int, size: int = 192) -> np.ndarray:
    """The ``n`` largest scenes-ilc2021 val faces (RGB uint8) cut by the agent's crop function at scale
    1.5, about the framing MediaPipe gives the landmark net."""
    import cv2

    from agent.pipeline.crop import CropSpec, crop_face
    from convert.data.classifier import read_scene_faces

    faces = sorted((f for f in read_scene_faces(DATA_ROOT) if f.split == "val"), key=lambda f: -(f.box[3] - f.box[1]))
    spec = CropSpec(width=size, height=size, scale=1.5, align="eyes", shift_y=0.0)
    out = [crop_face(cv2.imread(str(DATA_ROOT / "scenes-ilc2021" / "images" / f.image)), f.box, None, spec) for f in faces[:n]]
    return np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in out])


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Two real faces at 192 px: scenes-ilc2021 val faces, else skimage's astronaut."""
    if (DATA_ROOT / "scenes-ilc2021" / "boxes.csv").is_file():
        return _scene_face_crops(2)
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
