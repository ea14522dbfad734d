"""convert.data.site: crops of one person grouped by their track, a holdout that keeps tracks whole,
a warning when collect cut the crops with another geometry."""

from __future__ import annotations

import json

import numpy as np

from convert.data import site


def test_track_key_groups_frames_of_one_person():
    assert site.track_key("ab12_t7_f31.png") == site.track_key("ab12_t7_f2.png") == "ab12_t7"
    assert site.track_key("ab12_t7_f2.png") != site.track_key("cd34_t7_f2.png")  # another collect run
    assert site.track_key("face.png") == "face"


def test_holdout_keeps_tracks_whole_and_is_deterministic():
    groups = [f"r_t{t}" for t in range(40) for _ in range(3)]
    m = site.holdout_mask(groups, 0.25)
    assert np.array_equal(m, site.holdout_mask(list(reversed(groups)), 0.25)[::-1])  # by name, not by order
    by_track = {}
    for g, h in zip(groups, m):
        by_track.setdefault(g, set()).add(bool(h))
    assert all(len(v) == 1 for v in by_track.values())
    assert 3 <= sum(v == {True} for v in by_track.values()) <= 20
    # tiny sets: both sides get a track; one track cannot be split
    assert site.holdout_mask(["a", "b"], 0.01).sum() == 1 and site.holdout_mask(["a", "b"], 0.99).sum() == 1
    assert not site.holdout_mask(["a", "a"], 0.5).any() and not site.holdout_mask(["a", "b"], 0.0).any()


def test_collect_geometry_mismatch_warns(tmp_path):
    (tmp_path / "collect.json").write_text(json.dumps({"crop": {"scale": 1.5, "align": "eyes", "shift_y": 0.0}}))
    said = []
    site.check_collect_geometry(tmp_path, {"scale": 1.3, "align": "eyes", "shift_y": 0.0}, said.append)
    assert len(said) == 1 and "scale=1.5" in said[0] and "scale=1.3" in said[0]
    said.clear()
    site.check_collect_geometry(tmp_path, {"scale": 1.5, "align": "eyes", "shift_y": 0.0}, said.append)
    assert said == []
