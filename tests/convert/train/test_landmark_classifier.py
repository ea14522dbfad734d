"""convert.train.landmark_classifier: the mask classifier on a pretrained trunk (landmark net or
MobileNetV2), its heads, and the rebuild lines it records in the sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")
pytest.importorskip("tflite")

from convert.cli import EXTERNAL  # noqa: E402
from convert.ports import landmark_keras as lk  # noqa: E402
from convert.ports import mobilenet_keras as mk  # noqa: E402
from convert.ports.blazeface_keras import mediapipe_dir  # noqa: E402
from convert.tf import keras_module  # noqa: E402
from convert.train import landmark_classifier as lc  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
MP_DIR = mediapipe_dir()  # $MASKWATCH_MEDIAPIPE_DIR or .cache/, filled by scripts/test.sh
needs_mp = pytest.mark.skipif(not (MP_DIR / lk.LANDMARK_FILE).is_file(),
                              reason=f"mediapipe 0.10.21 wheel not unpacked at {MP_DIR} (set MASKWATCH_MEDIAPIPE_DIR)")
WEIGHTS = mk.weights_dir() / "mobilenet_v2-b0353104.pth"  # fetched by scripts/test.sh
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} not fetched (run scripts/test.sh)")


def _command(line: str) -> list:
    """A recipe's command line as words, continuation backslashes dropped."""
    return line.replace("\\", " ").split()


def _trainer_words(lines: list) -> list:
    """The trainer's words (its continuation lines joined) from a recipe's lines."""
    return _command(" ".join(lines[1:]))


@needs_mp
def test_gdc_head_starts_as_average_pooling_and_keeps_the_contract():
    """The GDC head begins as a plain average (its weights 1/(h*w)), so fine-tuning starts where the
    GAP head would, and both heads give the same 4 logits from a 96 px crop."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    keras = keras_module()
    pooled = {}
    for head, expand in (("gap", 0), ("gdc", 0), ("gdc", 32)):
        model, body = lc.build_classifier(MP_DIR, 96, 16, head=head, expand=expand)
        assert model.output.shape[-1] == 4
        pooled[(head, expand)] = keras.Model(model.input, model.get_layer("pool").output)(x, training=False).numpy()
        if head == "gdc":
            assert model.get_layer("gdc").kernel_size == (6, 6)  # one weight per position of the 6x6 map
    assert pooled[("gdc", 32)].shape == (2, 32)
    # BatchNorm at init (mean 0, var 1) only divides by sqrt(1 + eps)
    np.testing.assert_allclose(pooled[("gdc", 0)], pooled[("gap", 0)] / np.sqrt(1 + 1e-3), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="head"):
        lc.build_classifier(MP_DIR, 96, 16, head="max")


@needs_weights
def test_mobilenet_classifier_runs_the_cut_trunk_and_keeps_the_contract():
    body = mk.build(mk.read_state_dict(WEIGHTS), 96, 10)
    model, trunk = lc.build_classifier(None, 96, backbone="mobilenet_v2", cut=10)
    assert tuple(model.input.shape[1:]) == (96, 96, 3) and tuple(model.output.shape[1:]) == (4,)
    assert trunk.count_params() == body.count_params()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    assert np.allclose(np.asarray(trunk(x)), np.asarray(body(x)), atol=1e-5)


@needs_weights
def test_two_view_head_reads_the_whole_face_and_its_nose_mouth_window_with_one_trunk():
    import tensorflow as tf

    model, trunk = lc.build_classifier(None, 96, backbone="mobilenet_v2", cut=10, head="two-view")
    assert tuple(model.input.shape[1:]) == (96, 96, 3) and tuple(model.output.shape[1:]) == (4,)
    assert tuple(trunk.input.shape[1:]) == (48, 48, 3)  # half the side, shared by both views
    gap, _ = lc.build_classifier(None, 48, backbone="mobilenet_v2", cut=10)
    # one trunk's weights, a Dense head over twice the features (64 more inputs x 4 logits)
    assert model.count_params() == gap.count_params() + 64 * 4
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    top, left = lc.nose_mouth_window(96)
    face = x.reshape(2, 48, 2, 48, 2, 3).mean(axis=(2, 4))
    want = np.concatenate([np.asarray(trunk(face)).mean(axis=(1, 2)),
                           np.asarray(trunk(x[:, top:top + 48, left:left + 48])).mean(axis=(1, 2))], axis=1)
    pooled = tf.keras.Model(model.input, model.get_layer("pool").output)
    np.testing.assert_allclose(np.asarray(pooled(x)), want, atol=1e-4)
    # the window spans the lower face: below the eyes' line (~0.41 of the side) to near the chin
    assert 0.3 < top / 96 < 0.45 and top + 48 <= 96 and left + 48 <= 96
    lc.set_trunk_trainable(model, trunk, False)
    assert len(model.trainable_weights) == 2  # the Dense head only
    lc.set_trunk_trainable(model, trunk, True)
    assert len(model.trainable_weights) > 2
    with pytest.raises(ValueError, match="two-view"):
        lc.build_classifier(None, 95, backbone="mobilenet_v2", cut=10, head="two-view")


def test_a_cut_outside_mobilenet_is_a_usage_error():
    with pytest.raises(SystemExit):
        lc._arguments().parse_args(["--crops", "c.npz", "--backbone", "mobilenet_v2", "--cut", "30"])


def test_recipe_parses_back_to_the_same_training():
    """The model card's rebuild lines are the trainer's own options: parsed again they train the same model."""
    argv = ["--crops", "build/classifier_96/crops.npz", "--head", "gdc", "--expand", "128", "--epochs", "7",
            "--lr", "5e-4", "--representative", "1000"]
    a = lc._arguments().parse_args(argv)
    lines = lc.recipe(a, 96)
    assert lines[0].startswith("maskwatch-convert classifier-data --size 96 --out build/classifier_96/crops.npz")
    trainer = _trainer_words(lines)
    assert trainer[:2] == ["maskwatch-convert", "landmark-classifier"]
    b = lc._arguments().parse_args(trainer[2:])
    for key in ("crops", "stride", "prelu", "head", "expand", "freeze_epochs", "epochs", "lr", "seed", "representative", "synthetic"):
        assert getattr(b, key) == getattr(a, key), key
    assert b.export
    assert "--agent-detector models/face_detector_door.json" in lc.recipe(a, 96, "face_detector_door.json")[0]


def test_recipe_names_the_backbone():
    a = lc._arguments().parse_args(["--crops", "c.npz", "--backbone", "mobilenet_v2", "--cut", "10"])
    lines = lc.recipe(a, 96)
    assert "--backbone mobilenet_v2 --cut 10" in lines[1]
    again = lc._arguments().parse_args(_trainer_words(lines)[2:])
    assert again.backbone == "mobilenet_v2" and again.cut == 10


def test_tune_fold_holds_out_whole_images_by_hash():
    """--tune-fold: a fixed share of train images, every crop of an image on the same side."""
    from convert.data import classifier as cd

    names = np.array([f"img{i}.jpg" for i in range(2000)] * 2)
    held = cd.tune_fold_mask(names, 0.15)
    assert np.array_equal(held[:2000], held[2000:]) and 0.12 < held[:2000].mean() < 0.18
    assert np.array_equal(held, cd.tune_fold_mask(names, 0.15)) and not cd.tune_fold_mask(names, 0.0).any()
    a = lc._arguments().parse_args(["--crops", "c.npz", "--tune-fold", "0.15", "--synthetic"])
    lines = lc.recipe(a, 48, "face_detector_yunet.json", 3000)
    assert "--synthetic 3000" in lines[0] and "--tune-fold 0.15" in " ".join(lines)


@pytest.mark.parametrize("sidecar", ["mask_classifier.json", "mask_classifier.fp16.json"])
def test_shipped_sidecar_recipe_runs_commands_that_exist(sidecar):
    """The rebuild lines a shipped classifier records (the model card prints them) name maskwatch-convert
    commands this checkout has, and the trainer's line parses with the trainer's own options: a
    module moved or renamed cannot leave the card pointing at nothing."""
    from convert.evaluate import classifier as ev

    provenance = json.loads((REPO / "models" / sidecar).read_text())["provenance"]
    assert ev._pretrained(provenance["source_model"])  # else the regenerated card calls it the from-scratch CNN
    recipe = provenance["recipe"]
    data, trainer = _command(recipe[0]), _trainer_words(recipe)
    assert data[:2] == ["maskwatch-convert", "classifier-data"] and "classifier-data" in EXTERNAL
    assert trainer[:2] == ["maskwatch-convert", "landmark-classifier"]
    assert EXTERNAL["landmark-classifier"] == lc.__name__
    a = lc._arguments().parse_args(trainer[2:])
    assert a.backbone == "mobilenet_v2" and a.export and str(a.crops) == data[data.index("--out") + 1]
