"""The IoU tracker: stable ids, matching walkers, label decided over a window."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.pipeline.track import Tracker, TrackerConfig, decide
from agent.types import Face

LABELS = ("mask", "incorrect_mask", "no_mask")


def face(x: float, y: float = 100.0, size: float = 80.0, label: str = "no_mask", p: float = 0.9) -> Face:
    rest = (1.0 - p) / 2
    scores = {lab: (p if lab == label else rest) for lab in LABELS}
    return Face(box=(x, y, x + size, y + size), face_score=0.9, label=label, score=p, scores=scores)


def test_one_walker_keeps_one_id_and_gets_decided():
    tr = Tracker(TrackerConfig(min_hits=3, window=5))
    ids = set()
    for i in range(20):
        tracks = tr.update([face(10 + 12 * i)], i / 15)
        assert len(tracks) == 1
        ids.add(tracks[0].track_id)
        if tracks[0].hits < 3:
            assert tracks[0].label is None
        else:
            assert tracks[0].label == "no_mask" and tracks[0].score == pytest.approx(0.9)
    assert ids == {1} and tracks[0].hits == 20


def test_fast_walker_followed_by_velocity_prediction():
    # 60 px per frame with an 80 px face: consecutive boxes overlap by only IoU 0.14.
    cfg = TrackerConfig(iou_threshold=0.3, max_centre_distance=0)
    with_v = Tracker(cfg)
    ids = {with_v.update([face(10 + 60 * i)], i)[0].track_id for i in range(10)}
    assert len(ids) == 1
    no_v = Tracker(TrackerConfig(iou_threshold=0.3, velocity=False, max_centre_distance=0))
    ids = {t.track_id for i in range(10) for t in no_v.update([face(10 + 60 * i)], i)}
    assert len(ids) > 1


def test_gappy_detections_with_a_bad_box_stay_one_track():
    """A weak detector: the face is found in some frames only, and one box is off."""
    tr = Tracker(TrackerConfig())
    seen = [0, 1, 2, 3, 4, 8, 9, 11, 13, 14, 15, 20, 21, 22, 23, 26, 27]
    ids = set()
    for i in range(30):
        faces = []
        if i in seen:
            faces = [face(20 + 14 * i, size=60.0 if i == 15 else 85.0)]  # frame 15: shrunken, off-centre box
        ids |= {t.track_id for t in tr.update(faces, i)}
    assert ids == {1}


def test_centre_fallback_needs_similar_size():
    tr = Tracker(TrackerConfig(velocity=False))
    tr.update([face(100, size=80)], 0)
    tracks = tr.update([face(150, size=200)], 1)  # nearby but far bigger: someone else
    assert sorted(t.track_id for t in tracks) == [1, 2]


def test_two_people_crossing_paths_keep_their_ids():
    tr = Tracker(TrackerConfig())
    for i in range(15):
        tracks = tr.update([face(20 + 10 * i, y=50), face(400 - 10 * i, y=300)], i)
    by_id = {t.track_id: t.box[1] for t in tracks}
    assert by_id == {1: 50.0, 2: 300.0}


def test_track_survives_missed_frames_then_ends():
    tr = Tracker(TrackerConfig(max_missed=3, velocity=False))
    tr.update([face(100)], 0)
    for i in range(3):
        assert len(tr.update([], i + 1)) == 1
    assert tr.update([face(100)], 5)[0].track_id == 1  # found again within max_missed
    for i in range(4):
        tracks = tr.update([], 6 + i)
    assert tracks == []
    assert tr.update([face(100)], 20)[0].track_id == 2  # a new person


def test_label_decided_by_median_ignores_a_few_bad_frames():
    tr = Tracker(TrackerConfig(min_hits=3, window=9, aggregate="median"))
    for i in range(9):
        label = "mask" if i in (2, 5, 7) else "no_mask"  # three flickers
        tracks = tr.update([face(100 + i, label=label, p=0.95)], i)
    assert tracks[0].label == "no_mask"
    assert set(tracks[0].scores) == set(LABELS)


def test_decide_mean_and_empty():
    window = [{"a": 0.9, "b": 0.1}, {"a": 0.2, "b": 0.8}, {"a": 0.1, "b": 0.9}]
    assert decide(window, "median")[0] == "b"
    label, score, scores = decide(window, "mean")
    assert label == "b" and score == pytest.approx(0.6)
    assert decide([], "median") == (None, 0.0, {})


def test_track_label_follows_the_classifier_thresholds():
    """classifier.thresholds decide a track's label as they decide a frame's: a doubtful `mask`
    below its threshold gives way to the next label (the alert decision of the whole pipeline)."""
    window = [{"mask": 0.6, "incorrect_mask": 0.3, "no_mask": 0.1}] * 3
    assert decide(window)[0] == "mask"
    label, score, _ = decide(window, "median", {"mask": 0.7})
    assert label == "incorrect_mask" and score == pytest.approx(0.3)
    tr = Tracker(TrackerConfig(min_hits=1, window=3), thresholds={"mask": 0.7})
    f = face(100, label="mask", p=0.6)
    tracks = tr.update([replace(f, scores=window[0])], 0)
    assert tracks[0].label == "incorrect_mask"


def test_config_checks():
    with pytest.raises(ValueError):
        TrackerConfig(iou_threshold=0)
    with pytest.raises(ValueError):
        TrackerConfig(window=0)
