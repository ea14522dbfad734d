"""Alert policy: one event per unmasked person, cooldown, thumbnails, stable ids."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.pipeline.alert import AlertConfig, AlertPolicy
from agent.types import Track


def track(tid: int, label="no_mask", hits=10, score=0.9, first_seen=100.0, missed=0) -> Track:
    return Track(track_id=tid, box=(10.0, 20.0, 90.0, 100.0), first_seen=first_seen, last_seen=first_seen,
                 hits=hits, missed=missed, label=label, score=score)


def test_one_event_per_track_while_it_lasts():
    pol = AlertPolicy(AlertConfig(cooldown_s=120), "door", {"det": "1"})
    events = []
    for i in range(100):
        events += pol.update([track(1), track(2, label="incorrect_mask")], 100.0 + i / 15)
    assert [(e.track_id, e.label) for e in events] == [(1, "no_mask"), (2, "incorrect_mask")]
    e = events[0]
    assert e.camera == "door" and e.models == {"det": "1"} and e.score == pytest.approx(0.9)
    assert e.event_id == "door-100000-1-1"
    assert len({ev.event_id for ev in events}) == 2


def test_masked_undecided_young_or_unsure_tracks_do_not_alert():
    pol = AlertPolicy(AlertConfig(min_track_age=5, min_score=0.6), "door")
    assert pol.update([track(1, label="mask"), track(2, label=None), track(3, hits=4), track(4, score=0.55),
                       track(5, missed=1)], 0.0) == []


def test_cooldown_re_alerts_a_lingering_person():
    pol = AlertPolicy(AlertConfig(cooldown_s=10), "door")
    times = [0.0, 5.0, 9.9, 10.0, 15.0, 20.5]
    fired = [t for t in times if pol.update([track(1)], t)]
    assert fired == [0.0, 10.0, 20.5]


def test_ended_track_forgotten_and_new_one_alerts():
    pol = AlertPolicy(AlertConfig(), "door")
    assert len(pol.update([track(1)], 0)) == 1
    assert pol.update([], 1) == []
    ev = pol.update([track(2, first_seen=2.0)], 2)
    assert len(ev) == 1 and ev[0].event_id == "door-2000-2-1"


def test_labels_configurable():
    pol = AlertPolicy(AlertConfig(labels=["no_mask"]), "door")
    assert pol.update([track(1, label="incorrect_mask")], 0) == []


def test_crop_attached_as_jpeg():
    img = np.full((120, 160, 3), 128, np.uint8)
    pol = AlertPolicy(AlertConfig(include_crop=True, crop_size=64), "door")
    (ev,) = pol.update([track(1)], 0.0, img)
    assert ev.frame_width == 160 and ev.frame_height == 120
    crop = cv2.imdecode(np.frombuffer(ev.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (64, 64, 3)
    (ev,) = AlertPolicy(AlertConfig(), "door").update([track(1)], 0.0, img)
    assert ev.crop_jpeg is None


def test_config_checks():
    for bad in (dict(min_track_age=0), dict(min_score=1.5), dict(cooldown_s=-1), dict(crop_size=8)):
        with pytest.raises(ValueError):
            AlertConfig(**bad)
