"""convert.evaluate.classifier feeds a classifier exactly what the agent feeds it, from the sidecar."""

from __future__ import annotations

import json

import cv2
import numpy as np

from agent.model import cv2_table, load_model, pixel_table
from convert.evaluate import classifier as ev


def _agent_logits(model, x: np.ndarray) -> np.ndarray:
    """Logits the agent's own path gives: its cv2 pixel table, then one invoke per crop."""
    table = cv2_table(model.pixel_lut())
    model.resize_batch(1)
    out = []
    for crop in x:
        tensor = cv2.LUT(crop, table)[None]
        out.append(model.run(tensor)["logits"])
    return np.concatenate(out)


def test_evaluation_tensors_and_logits_are_the_agents(classifier_json):
    """Shared and per-channel normalizations: the same table as the agent, and the same logits,
    so a sidecar that changes its normalization changes the card's figures too."""
    model = load_model(classifier_json, kind="classifier")
    w, h = model.input_size
    x = np.random.default_rng(0).integers(0, 256, (6, h, w, 3), dtype=np.uint8)
    clf = ev.Int8Classifier(model.model_path.read_bytes())
    shipped = json.loads(classifier_json.read_text())["input"]["normalization"]
    per_channel = {"mean": [110.0, 127.5, 140.0], "std": [60.0, 64.0, 70.0]}
    tables = []
    for norm in (shipped, per_channel):
        model.meta["input"]["normalization"] = norm
        tables.append(clf.pixel_lut(norm))
        assert np.array_equal(tables[-1], model.pixel_lut())
        np.testing.assert_array_equal(clf.logits_uint8(x, norm), _agent_logits(model, x))
    assert not np.array_equal(tables[0], tables[1])  # the normalization reached the tensors


def test_pixel_table_without_normalization_is_raw_pixels():
    t = pixel_table(None, np.float32, (0.0, 0))
    assert t.shape == (256, 3) and t.dtype == np.float32
    assert np.array_equal(t[:, 1], np.arange(256, dtype=np.float32))
    q = pixel_table({"mean": [127.5] * 3, "std": [127.5] * 3}, np.int8, (1 / 127.5, 0))
    # pixel 1 lands on -126.5: rounded half to even, as the agent rounds (float32 would not tie)
    assert q.dtype == np.int8 and q[0, 0] == -128 and q[1, 0] == -126 and q[255, 2] == 127


def test_float_master_is_the_one_the_sidecar_names(classifier_json):
    """Rewriting the card from the shipped files measures int8/float agreement against the shipped
    float master, not a build/ leftover (which a fresh checkout lacks)."""
    side = json.loads(classifier_json.read_text())
    model = classifier_json.with_suffix(".tflite")
    assert ev.float_master(model, side) == classifier_json.parent / side["provenance"]["float_model"]
    assert ev.float_master(model, side).is_file()
    assert ev.float_master(model, {"provenance": {}}) is None


def test_alert_curve_and_the_thresholds_chosen_on_it():
    """A `mask` threshold moves doubtful masked faces to their next label: more incorrect_mask faces
    alerted, more masked faces too; the choice never alerts on more masked faces than the arg-max."""
    prob = np.array([
        [0.9, 0.05, 0.05, 0.0],   # mask, sure
        [0.75, 0.2, 0.05, 0.0],   # mask, doubtful: alerted from T 0.8
        [0.6, 0.35, 0.05, 0.0],   # incorrect_mask called mask: alerted from T 0.7
        [0.45, 0.5, 0.05, 0.0],   # incorrect_mask, doubtful: lost at an alert-label threshold 0.6
        [0.05, 0.05, 0.9, 0.0],   # no_mask
        [0.0, 0.0, 0.1, 0.9],     # not_face: left out
    ])
    y = np.array([0, 0, 1, 1, 2, 3])
    points = ({}, {"mask": 0.7}, {"mask": 0.8}, {"incorrect_mask": 0.6, "no_mask": 0.6})
    curve = ev.alert_curve(prob, y, points)
    got = [(r["incorrect_alerted"]["k"], r["mask_alerted"]["k"], r["no_mask_alerted"]["k"]) for r in curve]
    assert got == [(1, 0, 1), (2, 0, 1), (2, 1, 1), (0, 0, 1)]
    assert ev.choose_thresholds(curve) == {"mask": 0.7}
    assert ev.choose_thresholds([curve[0], curve[2]]) == {}  # more masked alerts than the arg-max: not taken
    assert ev.thresholds_words({"mask": 0.7}) == "{mask: 0.7}" and ev.thresholds_words({}) == "{}"


def test_the_model_may_be_named_by_its_sidecar(classifier_json, tmp_path, capsys):
    """--model takes the sidecar the agent's config names, as well as the .tflite; a JSON that is
    no sidecar is one line naming it, not a traceback."""
    missing = tmp_path / "none.npz"
    assert ev.main(["--model", str(classifier_json), "--crops", str(missing), "--no-write"]) == 2
    err = capsys.readouterr().err
    assert f"{missing} not found" in err and "Traceback" not in err  # model and sidecar were found
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert ev.main(["--model", str(bad), "--crops", str(missing), "--no-write"]) == 2
    err = capsys.readouterr().err
    assert "x.json: not a classifier sidecar" in err and "Traceback" not in err


def test_a_tuning_fold_without_detector_framed_faces_chooses_on_the_annotators_boxes(classifier_json):
    """`landmark-classifier --tune-fold` on a crop cache cut without --agent-detector (the shipped
    recipe's): the fold holds only annotator-box crops. The export died there after training (an empty
    selection, cv2.LUT of nothing returned None); the thresholds are now chosen on those crops and the
    card says which framing."""
    from convert.data import classifier as cd

    model = load_model(classifier_json, kind="classifier")
    meta = json.loads(classifier_json.read_text())
    w, h = model.input_size
    rng = np.random.default_rng(0)

    def crops(n: int, source: str) -> "cd.CropSet":
        y = np.arange(n) % 4
        return cd.CropSet(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), y, np.array([source] * n),
                          np.array([f"i{k}.jpg" for k in range(n)]), np.full(n, 60.0, np.float32))

    tfl = model.model_path.read_bytes()
    m = ev.evaluate_bytes(tfl, crops(12, "scenes"), 1.0, meta["input"]["normalization"], tune_set=crops(16, "scenes"))
    assert m["tune_framing"] == "annotator boxes" and m["tune_crops"] == 12  # the 12 face crops, not the 4 not_face
    assert m["alert_curve_tune"] and "thresholds" in m
    assert "cut from the annotators' boxes" in "\n".join(ev._alert_lines(m))
    framed = crops(16, "detector")
    m = ev.evaluate_bytes(tfl, crops(12, "scenes"), 1.0, meta["input"]["normalization"], tune_set=framed)
    assert "tune_framing" not in m and m["tune_crops"] == 16 and "as the detector frames them" in "\n".join(ev._alert_lines(m))
    empty = ev.Int8Classifier(tfl).logits_uint8(framed.x[:0], meta["input"]["normalization"])
    assert empty.shape == (0, len(meta["labels"]))
