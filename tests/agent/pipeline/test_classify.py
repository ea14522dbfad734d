"""Mask classification: crops, one batched call, temperature, thresholds, non-face drop."""

from __future__ import annotations

import numpy as np
import pytest

from agent.pipeline.classify import ClassifierConfig, MaskClassifier, pick_label, softmax
from agent.pipeline.detect import DetectorConfig, FaceDetector
from agent.tools.demo import draw_mask
from agent.model import ModelError
from agent.types import Face

LABELS = ["mask", "incorrect_mask", "no_mask", "not_face"]


def test_softmax_and_temperature():
    p = softmax(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
    hot = softmax(np.array([[1.0, 2.0, 3.0]]), temperature=10.0)
    assert hot[0, 2] < p[0, 2] and hot[0, 0] > p[0, 0]  # higher temperature: flatter
    assert np.isfinite(softmax(np.array([[1e4, -1e4, 0.0]]))).all()


def test_pick_label_thresholds():
    p = np.array([0.15, 0.05, 0.7, 0.1])
    assert pick_label(p, LABELS, {}) == 2
    assert pick_label(p, LABELS, {"no_mask": 0.8}) == 0  # below its bar: next most likely label
    assert pick_label(p, LABELS, {"no_mask": 0.8, "mask": 0.9, "not_face": 0.5, "incorrect_mask": 0.5}) == 2


@pytest.fixture(scope="module")
def parts(detector_json, classifier_json):
    return FaceDetector(DetectorConfig(model=str(detector_json))), str(classifier_json)


def test_astronaut_is_no_mask_and_masked_astronaut_is_not(parts, astronaut):
    detector, side = parts
    clf = MaskClassifier(ClassifierConfig(model=side))
    (face,) = clf.classify(astronaut, detector.detect(astronaut))
    assert face.label == "no_mask", face.scores
    assert set(face.scores) == set(clf.face_labels) and face.score == face.scores["no_mask"]
    masked = draw_mask(astronaut)
    faces = clf.classify(masked, detector.detect(masked))
    assert len(faces) == 1 and faces[0].label != "no_mask", faces[0].scores


def crowd(astronaut, n=3):
    head = astronaut[20:240, 120:330]
    frame = np.full((260, 220 * n, 3), 110, np.uint8)
    for i in range(n):
        frame[20:240, 220 * i + 5 : 220 * i + 215] = draw_mask(astronaut)[20:240, 120:330] if i % 2 else head
    return frame


def test_batched_equals_one_by_one(parts, astronaut):
    detector, side = parts
    frame = crowd(astronaut)
    faces = detector.detect(frame)
    assert len(faces) == 3
    batched = MaskClassifier(ClassifierConfig(model=side, batching="resize")).classify(frame, faces)
    looped = MaskClassifier(ClassifierConfig(model=side, batching="loop")).classify(frame, faces)
    assert [f.label for f in batched] == [f.label for f in looped]
    for a, b in zip(batched, looped):
        for k in a.scores:
            assert a.scores[k] == pytest.approx(b.scores[k], abs=1e-5)
    # Batch size changes frame to frame: 1, 3, 2, 0 faces.
    clf = MaskClassifier(ClassifierConfig(model=side))
    for k in (1, 3, 2, 0):
        assert len(clf.classify(frame, faces[:k])) == k


def test_max_batch_keeps_largest(parts, astronaut):
    detector, side = parts
    small = Face(box=(0.0, 0.0, 30.0, 30.0), face_score=0.9)
    big = detector.detect(astronaut)[0]
    out = MaskClassifier(ClassifierConfig(model=side, max_batch=1)).classify(astronaut, [small, big])
    assert len(out) == 1 and out[0].box == big.box


def test_non_face_labels_dropped(parts, astronaut, copy_model, classifier_json):
    detector, _ = parts
    faces = detector.detect(astronaut)
    # Declare every label a non-face label: the face must be dropped, not reported.
    side = copy_model(classifier_json, lambda m: m.update(non_face_labels=list(m["labels"])))
    assert MaskClassifier(ClassifierConfig(model=str(side))).classify(astronaut, faces) == []


def test_temperature_from_sidecar(parts, astronaut, copy_model, classifier_json):
    detector, side = parts
    faces = detector.detect(astronaut)
    base = MaskClassifier(ClassifierConfig(model=side)).classify(astronaut, faces)[0]
    hot_side = copy_model(classifier_json, lambda m: m["output"].update(temperature=50.0))
    hot = MaskClassifier(ClassifierConfig(model=str(hot_side))).classify(astronaut, faces)[0]
    assert max(hot.scores.values()) < max(base.scores.values())


def test_thresholds_must_name_model_labels(classifier_json):
    with pytest.raises(ModelError, match="thresholds"):
        MaskClassifier(ClassifierConfig(model=str(classifier_json), thresholds={"nomask": 0.5}))


def test_config_checks():
    with pytest.raises(ValueError):
        ClassifierConfig(thresholds={"no_mask": 1.5})
    with pytest.raises(ValueError):
        ClassifierConfig(max_batch=0)


def test_batch_chunks_are_powers_of_two_summing_to_n():
    from agent.pipeline.classify import batch_chunks

    assert batch_chunks(11) == [8, 2, 1] and batch_chunks(16) == [16] and batch_chunks(1) == [1]
    for n in range(1, 40):
        parts = batch_chunks(n)
        assert sum(parts) == n and all(p & (p - 1) == 0 for p in parts) and parts == sorted(parts, reverse=True)
