"""convert.train.classifier: temperature and class weights, the network, and a tiny real run to int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convert.data import classifier as cd
from convert.evaluate import classifier as ev
from convert.evaluate.card import update_card
from convert.train import classifier as tc
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT

DATA = DEFAULT_DATA_ROOT
needs_data = pytest.mark.skipif(not (DATA / "scenes-ilc2021" / "boxes.csv").is_file(), reason=f"datasets not at {DATA}")


def test_fit_temperature_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 2.0, (4000, 4))
    # labels drawn from softmax(base): logits = 3 * base are over-confident by T = 3
    p = np.exp(base) / np.exp(base).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    assert tc.fit_temperature(3.0 * base, y) == pytest.approx(3.0, rel=0.1)
    assert tc.fit_temperature(base, y) == pytest.approx(1.0, rel=0.1)


def test_class_weights_favour_rare_classes_and_are_capped():
    y = np.array([0] * 100 + [1] * 10 + [2] * 100 + [3] * 1)
    w = tc.class_weights(y, cap=3.0)
    assert w[1] > w[0] and w[0] == pytest.approx(w[2])
    assert w.max() <= 3.0


def test_licence_line_points_a_pretrained_trunk_to_its_notice():
    assert "NOTICE" in tc.licence_line(pretrained=True)
    assert "NOTICE" not in tc.licence_line(pretrained=False)
    shipped = json.loads((Path(__file__).parents[3] / "models" / "mask_classifier.json").read_text())["provenance"]
    assert shipped["licence"] == tc.licence_line(pretrained="trained from scratch" not in shipped["source_model"])


def test_wilson_interval():
    lo, hi = ev.wilson(70, 78)
    assert lo < 70 / 78 < hi and 0.8 < lo and hi < 0.96
    assert ev.wilson(0, 10)[0] == 0.0 and ev.wilson(10, 10)[1] == 1.0
    assert all(np.isnan(v) for v in ev.wilson(0, 0))


def test_label_metrics_count_the_card_figures_from_probabilities():
    # labels: mask, incorrect_mask, no_mask, not_face
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 0, 2, 3, 1, 0, 2, 2, 3, 0])
    m = ev.label_metrics(np.eye(4)[pred], y)
    assert m["confusion"][0] == [2, 0, 1, 1] and m["confusion"][3] == [1, 0, 0, 1]
    assert m["per_class"]["mask"]["recall"] == 0.5 and m["per_class"]["mask"]["precision"] == 2 / 4
    assert m["face_accuracy"] == 5 / 8  # not_face crops are not faces
    assert m["mask_called_no_mask"] == 1 / 4 and m["faces_called_not_face"] == 1 / 8
    assert m["per_class"]["incorrect_mask"]["recall_ci95"] == ev.wilson(1, 2)


def test_regenerating_the_shipped_card_keeps_its_hand_written_notes(tmp_path):
    """`maskwatch-convert evaluate-classifier` rewrites the block between the classifier markers:
    the shipped card keeps in there only the headings card_section writes, and the notes after it
    (why the model ships, what was tried) and the detector sections survive a rewrite."""
    shipped = (REPO_ROOT / "models" / "MODEL_CARD.md").read_text()
    block = shipped.split(ev.START, 1)[1].split(ev.END, 1)[0]
    headings = [line for line in block.splitlines() if line.startswith("#") or line.startswith("**")]
    assert headings == ["## Mask classifier (`mask_classifier.tflite`)", "### Data",
                        "### Metrics (int8, LiteRT, scenes-ilc2021 `val` crops, annotator boxes)",
                        "### The alert decision (`alert.labels`: incorrect_mask, no_mask; `classifier.thresholds`)", "### Rebuild",
                        "### Known failure cases and limits"]
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(shipped)
    update_card(card, f"{ev.START}\n## Mask classifier (`mask_classifier.tflite`)\nregenerated\n{ev.END}\n", ev.START, ev.END)
    after = card.read_text()
    assert block not in after and "regenerated" in after
    assert after.replace(f"{ev.START}\n## Mask classifier (`mask_classifier.tflite`)\nregenerated\n{ev.END}",
                         ev.START + block + ev.END) == shipped
    for kept in ("### Why this model", "**Architecture and provenance.**", "### More known failure cases",
                 "### Tried here on the landmark trunk", "## Face detector (shipped default)"):
        assert kept in after


@pytest.mark.tf
def test_model_size_and_logits():
    pytest.importorskip("tensorflow")
    m = tc.build_model(64)
    assert 150_000 <= m.count_params() <= 300_000
    assert tuple(m.output_shape) == (None, 4)
    bn = [layer for layer in m.layers if layer.__class__.__name__ == "BatchNormalization"]
    assert bn and all(layer.momentum == pytest.approx(0.9) for layer in bn)


@pytest.mark.tf
def test_mixup_keeps_each_crops_own_label_leading():
    """Mixed batches: one-hot targets summing to 1 with the crop's own class >= 0.5, pixels and
    sample weights mixed by the same amount; alpha 0 gives plain one-hot targets."""
    pytest.importorskip("tensorflow")
    n = 32
    x = np.stack([np.full((4, 4, 3), float(i), np.float32) for i in range(n)])
    y = np.arange(n, dtype=np.int32) % 4
    w = np.arange(1, n + 1, dtype=np.float32)
    mx, my, mw = (v.numpy() for v in tc._mixup_fn(4, 0.4, seed=0)(x, y, w))
    np.testing.assert_allclose(my.sum(axis=1), 1.0, rtol=1e-6)
    own = my[np.arange(n), y]
    assert (own >= 0.5 - 1e-6).all() and (own < 1.0 - 1e-3).any()  # mixed, own label leading
    assert np.allclose(mx, mx[:, :1, :1, :1])  # one factor per crop
    # crop i is all i and weighs i + 1: mixed by the same factor, its weight stays its pixel + 1
    np.testing.assert_allclose(mw, mx[:, 0, 0, 0] + 1.0, rtol=1e-5)
    _, plain, same_w = (np.asarray(v) for v in tc._mixup_fn(4, 0.0, seed=0)(x, y, w))
    np.testing.assert_array_equal(plain, np.eye(4, dtype=np.float32)[y])
    np.testing.assert_array_equal(same_w, w)


@pytest.mark.slow  # ~30 s of CPU, but 90 s of wall time on the shared 2-core build machine
@pytest.mark.tf
@needs_data
def test_tiny_run_end_to_end_to_int8(tmp_path):
    """A few images, one epoch, 32 px: crops -> train -> temperature -> int8 -> sidecar, card, figures."""
    pytest.importorskip("tensorflow")
    from ai_edge_litert.interpreter import Interpreter

    models = tmp_path / "models"
    models.mkdir()
    crops = tmp_path / "crops.npz"
    data_args = ["--limit", "4", "--size", "32", "--no-faces"]
    if cd.DEFAULT_FACE_DETECTOR.is_file():  # synthetic masks need the face detector's keypoints
        assert cd.main(data_args + ["--synthetic", "10", "--out", str(crops)]) == 0
        assert cd.synthetic_path(crops).is_file()
        data_args.append("--synthetic")
    args = data_args + [
        "--epochs", "1", "--batch", "16", "--width", "0.5",
        "--crops", str(crops), "--out-model", str(tmp_path / "clf.keras"),
        "--export", "--models-dir", str(models),
    ]
    assert tc.main(args) == 0
    tfl, side = models / "mask_classifier.tflite", models / "mask_classifier.json"
    sidecar = json.loads(side.read_text())
    assert sidecar["kind"] == "classifier" and sidecar["labels"] == list(cd.LABELS)
    assert sidecar["non_face_labels"] == ["not_face"]
    assert sidecar["crop"] == {"scale": 1.3, "align": "eyes", "shift_y": 0.0}
    assert sidecar["input"]["height"] == 32 and sidecar["input"]["dtype"] == "int8"
    assert sidecar["output"]["temperature"] > 0
    assert sidecar["outputs"]["logits"]["shape"] == [1, 4]

    it = Interpreter(model_path=str(tfl), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8
    it.set_tensor(inp["index"], np.zeros(inp["shape"], np.int8))
    it.invoke()
    assert np.all(np.isfinite(it.get_tensor(out["index"])))

    card = (models / "MODEL_CARD.md").read_text()
    assert ev.START in card and ev.END in card and "incorrect_mask" in card
    assert (models / "figures" / "classifier_confusion.png").stat().st_size > 1000
    assert (models / "figures" / "classifier_reliability.png").stat().st_size > 1000
    assert json.loads((models / "mask_classifier.parity.json").read_text())["n_images"] > 0

    # the standalone evaluation reads the same files back
    assert ev.main(["--model", str(tfl), "--crops", str(crops), "--keras", str(tmp_path / "clf.keras"), "--no-write"]) == 0


def test_card_names_the_pretrained_trunk_and_its_own_rebuild_lines():
    recipe = ["maskwatch-convert classifier-data --size 96 --out c.npz", "maskwatch-convert landmark-classifier --backbone mobilenet_v2 --cut 10"]
    for source in ("convert/ports/mobilenet_keras.py: torchvision ImageNet MobileNetV2 ...", "convert/ports/landmark_keras.py: trunk of ..."):
        what, rebuild = ev._origin(source, {"recipe": recipe}, 96)
        assert source in what and "from scratch" not in what and rebuild == recipe
    what, rebuild = ev._origin("convert/ports/landmark_keras.py: trunk", {}, 96)  # exported before recipes were recorded
    assert "--models-dir build/cand_models/NAME" in rebuild[-1]
    what, rebuild = ev._origin("convert/train/classifier.py", {}, 64)
    assert "from scratch" in what and rebuild[1].startswith("maskwatch-convert train-classifier ")


def test_card_names_where_its_own_rebuild_lines_cache_the_crops():
    recipe = ["maskwatch-convert classifier-data --size 64 --out build/classifier_64/crops.npz",
              "maskwatch-convert landmark-classifier --crops build/classifier_64/crops.npz --backbone mobilenet_v2"]
    assert ev._crops_path(recipe) == "build/classifier_64/crops.npz"
    _, scratch = ev._origin("convert/train/classifier.py", {}, 64)
    assert ev._crops_path(scratch) == "build/classifier/crops.npz"  # classifier_data's default --out
