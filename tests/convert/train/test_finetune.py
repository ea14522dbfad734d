"""convert.train.finetune and convert.ports.tflite_keras: the float rebuild of the shipped classifier, a tiny real
fine-tuning run on real site crops, the config switch, and bad site data (exit 2, nothing written)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest

from agent.pipeline.crop import CropSpec, crop_face
from convert.data import classifier as cd
from convert.train import finetune as ft
from convert.cli import main as convert_main
from convert.paths import DEFAULT_DATA_ROOT

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "models" / "mask_classifier.json"
SCENES = DEFAULT_DATA_ROOT / "scenes-ilc2021"
needs_data = pytest.mark.skipif(not (SCENES / "boxes.csv").is_file(), reason=f"datasets not at {SCENES}")
needs_model = pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} not built")


def snapshot(folder: Path) -> Dict[str, str]:
    """sha256 of every file under ``folder`` (to show that nothing was written or changed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def site_src(tmp_path_factory) -> Path:
    """A site folder as collect + label leave it: real scene faces cut at 128 px by agent.pipeline.crop.crop_face,
    two frames per track, filed by their annotated label; train-split images the tiny base set does not use."""
    if not (SCENES / "boxes.csv").is_file():
        pytest.skip(f"datasets not at {SCENES}")
    out = tmp_path_factory.mktemp("site")
    with open(SCENES / "images.csv", newline="") as fh:
        split = {r["image"]: r["split"] for r in csv.DictReader(fh)}
    with open(SCENES / "boxes.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if split[r["image"]] == "train"]
    spec = CropSpec(128, 128, 1.3, "eyes", 0.0)
    for lab in cd.LABELS + ("unlabeled",):
        (out / lab).mkdir()
    track = 0
    for name in sorted({r["image"] for r in rows})[-12:]:
        img = cv2.imread(str(SCENES / "images" / name))
        for r in (r for r in rows if r["image"] == name):
            box = tuple(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            if box[3] - box[1] < 24:
                continue
            for f in range(2):  # two frames of one person: the box moved by a pixel
                b = (box[0] + f, box[1], box[2] + f, box[3])
                assert cv2.imwrite(str(out / r["label"] / f"ab12_t{track}_f{f}.png"), crop_face(img, b, None, spec))
            track += 1
    # background crops as not_face, and one crop nobody labelled yet
    bg = cv2.imread(str(SCENES / "images" / name))[:60, :60]
    cv2.imwrite(str(out / "not_face" / "ab12_t900_f0.png"), cv2.resize(bg, (128, 128)))
    cv2.imwrite(str(out / "unlabeled" / "ab12_t901_f0.png"), cv2.resize(bg, (128, 128)))
    (out / "collect.json").write_text(json.dumps({"crop": {"scale": 1.3, "align": "eyes", "shift_y": 0.0}, "size": 128}))
    assert track >= 15
    return out


@pytest.fixture
def site(tmp_path, site_src) -> Path:
    return Path(shutil.copytree(site_src, tmp_path / "site"))


@pytest.fixture
def models(tmp_path) -> Path:
    """A copy of the shipped classifier pair and SHA256SUMS (the test writes beside it)."""
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} not built")
    d = tmp_path / "models"
    d.mkdir()
    side = json.loads(SHIPPED.read_text())
    master = side.get("provenance", {}).get("float_model")
    for name in ("mask_classifier.json", side["model_file"], "SHA256SUMS") + ((master,) if master else ()):
        shutil.copy(REPO / "models" / name, d / name)
    return d


def finetune(capsys, *args):
    rc = convert_main(["finetune", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ---------------------------------------------------------------- pieces


def test_switched_config_edits_only_the_model_line():
    text = (REPO / "config.yaml").read_text()
    new = ft.switched_config_text(text, "models/mask_classifier_site.json", "config.yaml")
    old_lines, new_lines = text.splitlines(), new.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert len(old_lines) == len(new_lines) and len(changed) == 1
    assert changed[0][1] == "  model: models/mask_classifier_site.json   # sidecar of the int8 mask classifier"
    # the detector's model line is another section's: untouched
    assert "  model: models/face_detector_yunet.json" in new


@pytest.mark.parametrize("text, expected", [
    ("classifier:\n  thresholds: {}\nalerts:\n  min_score: 0.5\n",
     "classifier:\n  model: new.json\n  thresholds: {}\nalerts:\n  min_score: 0.5\n"),
    ("runtime:\n  camera: door\n", "runtime:\n  camera: door\nclassifier:\n  model: new.json\n"),
    ("classifier:  # ours\n    model: 'old one.json'  # keep\n", "classifier:  # ours\n    model: new.json  # keep\n"),
    ("classifier:\r\n  model: old.json\r\n", "classifier:\r\n  model: new.json\r\n"),
])
def test_switched_config_adds_or_replaces(text, expected):
    assert ft.switched_config_text(text, "new.json", "c.yaml") == expected


# ---------------------------------------------------------------- bad input: exit 2, nothing written


@needs_model
def test_bad_site_data_exits_2_and_writes_nothing(capsys, tmp_path, models):
    config = tmp_path / "config.yaml"
    shutil.copy(REPO / "config.yaml", config)
    empty = tmp_path / "empty"
    (empty / "mask").mkdir(parents=True)
    (empty / "unlabeled").mkdir()
    cv2.imwrite(str(empty / "unlabeled" / "a_t1_f1.png"), np.zeros((128, 128, 3), np.uint8))  # unlabelled: not used
    odd = tmp_path / "odd"
    (odd / "mask").mkdir(parents=True)
    cv2.imwrite(str(odd / "mask" / "a_t1_f1.png"), np.zeros((128, 128, 3), np.uint8))
    (odd / "masks").mkdir()
    (odd / "hat").mkdir()
    broken = tmp_path / "broken"
    (broken / "no_mask").mkdir(parents=True)
    (broken / "no_mask" / "a_t1_f1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    taken = tmp_path / "taken"
    shutil.copytree(odd, taken)
    shutil.rmtree(taken / "masks")
    shutil.rmtree(taken / "hat")
    (models / "mask_classifier_site.json").write_text("{}")  # an existing model of that stem
    before, config_before = snapshot(models), config.read_text()
    base = ["--base", models / "mask_classifier.json", "--switch-config", config]
    cases = [
        ([*base, "--data", empty, "--out-stem", "x"], f"{empty}: no labelled crop"),
        ([*base, "--data", tmp_path / "nowhere", "--out-stem", "x"], "site data folder not found"),
        ([*base, "--data", odd, "--out-stem", "x"], "unknown label folder(s) hat, masks; expected only mask, incorrect_mask, no_mask, not_face"),
        ([*base, "--data", broken, "--out-stem", "x"], "no labelled crop (1 unreadable)"),
        ([*base, "--data", taken], "mask_classifier_site.json: already exists; pass --force"),
        ([*base, "--data", taken, "--out-stem", "mask_classifier", "--force"], "that is the base model itself"),
        (["--base", models / "mask_classifier.json", "--data", taken, "--out-stem", "x", "--switch-config", tmp_path / "no.yaml"],
         "no.yaml: config file not found"),
        ([*base, "--data", taken, "--out-stem", "x", "--holdout", "1.5"], "--holdout must be in [0, 1)"),
    ]
    for args, msg in cases:
        rc, out, err = finetune(capsys, *args)
        assert rc == 2 and msg in err and "Traceback" not in err, (args, err)
        assert err.strip().splitlines()[-1].startswith("maskwatch-convert finetune: error:"), err
    assert "broken/no_mask/a_t1_f1.png: not a readable PNG; skipped (left in place)" in finetune(
        capsys, *base, "--data", broken, "--out-stem", "x")[2]
    assert (broken / "no_mask" / "a_t1_f1.png").is_file()  # never deleted or moved
    assert snapshot(models) == before and config.read_text() == config_before
    assert not (tmp_path / "config.yaml.bak").exists()


# ---------------------------------------------------------------- TensorFlow: rebuild and a tiny real run


@pytest.mark.tf
@needs_data
def test_keras_rebuild_agrees_with_its_int8_model(tmp_path):
    """A chain-shaped classifier (the from-scratch CNN, briefly trained on real crops) -> int8 ->
    rebuilt as float: top-1 agrees with the int8 model on >= 99 % of real crops, and its logits are
    as close to the int8 ones as the original float model's (the int8 rounding, nothing more)."""
    tf = pytest.importorskip("tensorflow")
    from convert.evaluate import classifier as ev
    from convert.export import quantize
    from convert.train import classifier as tc
    from convert.ports.tflite_keras import keras_from_tflite

    tr, va, _ = cd.build_crops(DEFAULT_DATA_ROOT, cd.DataConfig(limit=25), face_detector=None, log=lambda *a: None)
    x = np.concatenate([tr.x, va.x])
    assert len(x) > 300
    tf.keras.utils.set_random_seed(0)
    original = tc.build_model(64, width=0.5)
    original.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    original.fit(tc.normalize(tr.x), tr.y, epochs=3, batch_size=32, verbose=0)
    tfl = quantize.quantize_int8(original, (tc.normalize(tr.x[k : k + 1]) for k in range(120)), float_outputs=("logits",))
    path = tmp_path / "chain.tflite"
    path.write_bytes(tfl)
    model = keras_from_tflite(path)
    assert model.output_names == ["logits"] and tuple(model.input_shape) == (None, 64, 64, 3)
    zf = np.asarray(model.predict(tc.normalize(x), batch_size=256, verbose=0))
    zo = np.asarray(original.predict(tc.normalize(x), batch_size=256, verbose=0))
    zq = ev.Int8Classifier(tfl).logits_uint8(x, tc.normalization())
    assert (zf.argmax(1) == zq.argmax(1)).mean() >= 0.99
    assert np.abs(zf - zq).mean() <= 1.5 * np.abs(zo - zq).mean()


@pytest.mark.tf
def test_float_master_bytes_hold_weights_not_the_optimizer(tmp_path):
    """keras_bytes of a compiled, trained model: the same outputs back, and no optimizer state
    (Keras 3's clone_model copies a compiled model's optimizer, which tripled the shipped master)."""
    import io
    import zipfile

    import h5py

    tf = pytest.importorskip("tensorflow")
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 3))
    model = tf.keras.Model(inp, tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(tf.keras.layers.Conv2D(4, 3)(inp))))
    model.compile(optimizer="adamw", loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    model.fit(x, np.zeros((16, 3), np.float32), epochs=1, verbose=0)
    data = ft.keras_bytes(model)
    with zipfile.ZipFile(io.BytesIO(data)) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
        assert "optimizer" not in h5
    path = tmp_path / "master.keras"
    path.write_bytes(data)
    back = tf.keras.models.load_model(path)
    assert np.array_equal(np.asarray(back(x)), np.asarray(model(x)))


@pytest.mark.tf
def test_keras_rebuild_names_an_unsupported_op(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from convert.errors import ConvertError
    from convert.ports.tflite_keras import keras_from_tflite

    inp = tf.keras.Input((8, 8, 3))
    out = tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(tf.keras.layers.MaxPooling2D()(inp)))
    path = tmp_path / "pool.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    with pytest.raises(ConvertError, match=r"pool\.tflite: op #0 MAX_POOL_2D is not supported"):
        keras_from_tflite(path)
    path.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ConvertError, match="not a readable TFLite flatbuffer"):
        keras_from_tflite(path)


@pytest.mark.tf
@needs_data
def test_tiny_finetune_writes_a_new_model_and_switches_the_config(capsys, tmp_path, site, models):
    pytest.importorskip("tensorflow")
    from agent.pipeline.classify import ClassifierConfig, MaskClassifier
    from agent.config import load

    (site / "mask" / "ab12_t999_f0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a corrupt crop
    config = tmp_path / "config.yaml"  # its models/... paths resolve to the models fixture's folder
    shutil.copy(REPO / "config.yaml", config)
    old = {k: v for k, v in snapshot(models).items() if k.startswith("mask_classifier.")}
    config_before = config.read_text()

    rc, out, err = finetune(capsys, "--data", site, "--base", models / "mask_classifier.json", "--base-limit", 4,
                            "--epochs", 1, "--batch", 32, "--switch-config", config, "--crops", tmp_path / "no-cache.npz")
    assert rc == 0, err
    # progress, the unreadable crop named (and left there), the comparison table
    assert "training set:" in out and "converting to int8" in out
    assert "float master mask_classifier.keras" in out  # started from the shipped float weights
    assert "mask/ab12_t999_f0.png: not a readable PNG; skipped" in err and (site / "mask" / "ab12_t999_f0.png").is_file()
    assert "site held-out" in out and "base val" in out and "recall incorrect_mask" in out

    new_side = json.loads((models / "mask_classifier_site.json").read_text())
    base_side = json.loads((models / "mask_classifier.json").read_text())
    assert new_side["version"] != base_side["version"] and new_side["model_file"] == "mask_classifier_site.tflite"
    assert new_side["labels"] == base_side["labels"] and new_side["crop"] == base_side["crop"]
    prov = new_side["provenance"]
    assert prov["base_model"]["sha256"] == base_side["model_sha256"] and prov["site_data"]["unreadable"] == 1
    assert sum(prov["site_data"]["train"].values()) + sum(prov["site_data"]["held_out"].values()) >= 30
    assert "ab12" not in json.dumps(new_side)  # counts, not file names
    assert new_side["metrics"]["site_holdout"]["n"] == sum(prov["site_data"]["held_out"].values()) > 0

    report = json.loads((models / "mask_classifier_site.finetune.json").read_text())
    assert set(report["sets"]) == {"site held-out", "base val"}
    for s in report["sets"].values():
        assert set(s) == {"old", "new"} and s["old"]["n"] == s["new"]["n"] > 0
    assert "| recall no_mask |" in (models / "mask_classifier_site.finetune.md").read_text()

    # the old model untouched, the sums cover old and new, and the agent loads the new model
    assert {k: v for k, v in snapshot(models).items() if k.startswith("mask_classifier.")} == old
    sums = dict(reversed(line.split("  ")) for line in (models / "SHA256SUMS").read_text().splitlines())
    for name in ("mask_classifier.tflite", "mask_classifier_site.tflite", "mask_classifier_site.json",
                 "mask_classifier_site.keras"):
        assert sums[name] == hashlib.sha256((models / name).read_bytes()).hexdigest()
    assert prov["float_model"] == "mask_classifier_site.keras"  # the next finetune starts from it
    MaskClassifier(ClassifierConfig(model=str(models / "mask_classifier_site.json")))

    # --switch-config: one line changed, the old file kept as .bak, and the config loads with the new model
    new_lines, old_lines = config.read_text().splitlines(), config_before.splitlines()
    assert [(a, b) for a, b in zip(old_lines, new_lines) if a != b] == [
        ("  model: models/mask_classifier.json   # sidecar of the int8 mask classifier",
         "  model: models/mask_classifier_site.json   # sidecar of the int8 mask classifier")]
    assert (tmp_path / "config.yaml.bak").read_text() == config_before
    assert Path(load(config).classifier.model) == (models / "mask_classifier_site.json")
