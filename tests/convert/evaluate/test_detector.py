"""The detector scorer: greedy matching, recall / false detections, threshold choice."""

from __future__ import annotations

import numpy as np
import pytest

from convert.evaluate import detector as de


def _result(scores, matched, labels, heights):
    n = len(scores)
    return de.ImageResult(np.asarray(scores, float), np.asarray(matched), np.zeros((n, 6, 2), np.float32),
                          np.zeros((n, 4)), tuple(labels), np.asarray(heights, float), np.asarray(heights, float))


def test_match_is_greedy_by_score_and_one_to_one():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    det = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [50, 50, 60, 60]], float)
    order, matched = de.match(det, np.array([0.6, 0.9, 0.7, 0.8]), gt)
    assert order.tolist() == [1, 3, 2, 0]
    # the best-scored box takes face 0, its duplicate is a false detection, the far box is false
    assert matched.tolist() == [0, -1, 1, -1]


def test_match_needs_iou_half():
    gt = np.array([[0, 0, 10, 10]], float)
    _, matched = de.match(np.array([[5, 0, 15, 10]], float), np.array([0.9]), gt)  # IoU 1/3
    assert matched.tolist() == [-1]


def test_metrics_per_label_size_and_false():
    results = [
        _result([0.9, 0.4, 0.3], [0, 1, -1], ["mask", "no_mask", "incorrect_mask"], [50, 45, 60]),
        _result([0.8, 0.7], [-1, 0], ["mask", "mask"], [30, 80]),
    ]
    m = de.metrics_at(results, 0.35)
    r = m["recall_ge40px"]
    assert r["mask"]["found"] == 1 and r["mask"]["faces"] == 2  # the 30 px mask face is not counted
    assert r["no_mask"]["recall"] == 1.0 and r["incorrect_mask"]["recall"] == 0.0
    assert m["recall_all_sizes"]["mask"]["faces"] == 3
    assert m["false"] == 1 and m["false_per_image"] == 0.5
    lo, hi = r["all"]["interval95"]
    assert lo < r["all"]["recall"] < hi


def test_choose_threshold_respects_false_budget():
    # 20 images; false detections scored 0.9, 0.6, 0.3; true ones 0.95, 0.5, 0.2
    results = [_result([0.95, 0.9], [0, -1], ["mask"], [50]),
               _result([0.6, 0.5], [-1, 0], ["no_mask"], [50]),
               _result([0.3, 0.2], [-1, 0], ["mask"], [50])] + [_result([], [], [], []) for _ in range(17)]
    # budget 0.05 / image x 20 images = 1 false detection allowed: threshold between 0.6 and 0.9
    t = de.choose_threshold(results, 0.05)
    assert 0.6 < t <= 0.9
    assert de.metrics_at(results, t)["false"] == 1
    # budget 0.1 -> 2 allowed: between 0.3 and 0.5 (keeps the 0.5 true face)
    t2 = de.choose_threshold(results, 0.1)
    assert 0.3 < t2 <= 0.5 and de.metrics_at(results, t2)["false"] == 2


def test_curve_is_monotonic():
    rng = np.random.default_rng(0)
    results = []
    for _ in range(30):
        n = 5
        results.append(_result(np.sort(rng.random(n))[::-1], rng.choice([-1, 0], n), ["mask"], [60]))
    c = de.curve(results)
    assert np.all(np.diff(c["false_per_image"]) >= 0) and np.all(np.diff(c["all"]) >= 0)


def test_wilson_interval():
    lo, hi = de.wilson(196, 200)
    assert 0.94 < lo < 0.98 < hi <= 1.0
    assert np.isnan(de.wilson(0, 0)[0])


@pytest.mark.tf
def test_keras_model_runs_in_agent_detector():
    """A Keras detector scored through the agent's FaceDetector (the one scorer)."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from tests.convert.data.test_detector import META

    inp = tf.keras.Input((192, 192, 3))
    feat = tf.keras.layers.AveragePooling2D(4)(inp)
    reg = tf.keras.layers.Reshape((2304, 16))(tf.keras.layers.Conv2D(16, 1)(feat))
    sc = tf.keras.layers.Reshape((2304, 1))(tf.keras.layers.Conv2D(1, 1)(feat))
    model = tf.keras.Model(inp, [reg, sc])
    meta = {**META, "input": {**META["input"], "channels": 3, "color": "RGB",
                              "normalization": {"mean": [127.5] * 3, "std": [127.5] * 3}, "resize": "letterbox"},
            "outputs": {"regressors": {"shape": [1, 2304, 16]}, "scores": {"shape": [1, 2304, 1]}},
            "decoding": {**META["decoding"], "nms": {"method": "weighted", "iou_threshold": 0.3},
                         "default_min_score": 0.5}}
    det = de.make_detector(de.KerasModel(model, meta), 0.01)
    faces = det.detect(np.zeros((120, 160, 3), np.uint8))
    assert isinstance(faces, list)
    assert all(0.01 <= f.face_score <= 1 for f in faces)


def test_false_detection_kinds_by_best_overlap():
    from convert.data.detector import Scene

    gt = np.array([[0, 0, 10, 10], [100, 100, 140, 140]], float)
    scene = Scene("s.jpg", None, 200, 200, gt, ("mask", "no_mask"))
    boxes = np.array([[0, 0, 10, 10],  # the hit
                      [0, 0, 10, 11],  # a duplicate of it (IoU 0.91)
                      [90, 90, 150, 155],  # loose box around face 1 (IoU 0.41)
                      [2, 5, 12, 15],  # near face 0 (IoU 0.25)
                      [170, 170, 190, 190]], float)  # background
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.55])
    r = de.ImageResult(scores, np.array([0, -1, -1, -1, -1]), np.zeros((5, 6, 2), np.float32), boxes,
                       scene.labels, gt[:, 3] - gt[:, 1], gt[:, 2] - gt[:, 0])
    assert de.false_detection_kinds([r], [scene], 0.5) == {"duplicate": 1, "loose_box": 1, "near_face": 1, "background": 1}
    assert de.false_detection_kinds([r], [scene], 0.75) == {"duplicate": 1, "loose_box": 0, "near_face": 0, "background": 0}


def test_recall_by_input_size_uses_the_letterbox_scale():
    from convert.data.detector import Scene

    # 800x600 photo into 192x144: scale 0.24; faces 45 px (10.8 at the input) and 200 px (48)
    gt = np.array([[0, 0, 45, 45], [300, 300, 500, 500]], float)
    scene = Scene("s.jpg", None, 800, 600, gt, ("mask", "no_mask"))
    r = _result([0.9], [1], scene.labels, [45, 200])
    rows = de.recall_by_input_size([r], [scene], 0.5, (192, 144))
    assert [row["input_px"][0] for row in rows] == list(de.SIZE_BINS)
    small, big = rows[0], rows[-1]
    assert (small["faces"], small["found"], big["faces"], big["found"]) == (1, 0, 1, 1)
    assert sum(row["faces"] for row in rows) == 2 and big["recall"] == 1.0
    # the same photo into a 192x192 letterbox: scale 0.24 too (width-bound)
    assert de.recall_by_input_size([r], [scene], 0.5, (192, 192))[0]["faces"] == 1
