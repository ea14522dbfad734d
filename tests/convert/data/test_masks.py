"""convert.data.masks: where a mask sits by placement, frontal faces, a pasted mask covers the lower face only."""

from __future__ import annotations


import numpy as np
import pytest

from convert.data import masks
from convert.paths import DEFAULT_DATA_ROOT

DATA = DEFAULT_DATA_ROOT
needs_data = pytest.mark.skipif(not (DATA / "scenes-ilc2021" / "boxes.csv").is_file(), reason=f"datasets not at {DATA}")


def _frontal_keypoints() -> np.ndarray:
    # right eye, left eye, nose tip, mouth centre, right ear, left ear (image coordinates)
    return np.array([[80, 100], [120, 100], [100, 125], [100, 150], [55, 110], [145, 110]], float)


def test_mask_points_place_the_top_edge_by_placement():
    rng = np.random.default_rng(0)
    kps = _frontal_keypoints()
    nose_y, mouth_y = kps[2, 1], kps[3, 1]
    for _ in range(50):
        ok, low, chin = (masks.mask_points(kps, p, rng) for p in ("correct", "under_nose", "chin"))
        assert ok[1, 1] < nose_y  # covers the nose
        assert nose_y < low[1, 1] < mouth_y  # nose uncovered, mouth covered
        assert chin[1, 1] > mouth_y  # mouth uncovered
        for pts in (ok, low, chin):
            assert pts[0, 0] < pts[1, 0] < pts[2, 0] and pts[4, 1] > pts[1, 1]
    with pytest.raises(ValueError):
        masks.mask_points(kps, "forehead", rng)


def test_yunet_keypoints_place_the_mask_like_blazeface_ones():
    """YuNet's 5 keypoints (eyes, nose tip, mouth corners): the mouth centre is the corners' midpoint
    and, without ears, the mask is about as wide as the cheeks; the placements hold as with 6."""
    six = _frontal_keypoints()
    five = np.array([six[0], six[1], six[2], six[3] + [-15, 0], six[3] + [15, 0]])
    re, le, nose, mouth, ears = masks.face_points(five)
    assert ears is None and np.allclose(mouth, six[3])
    for p in ("correct", "under_nose", "chin"):
        a, b = masks.mask_points(five, p, np.random.default_rng(1)), masks.mask_points(six, p, np.random.default_rng(1))
        assert np.allclose(a[:, 1], b[:, 1])  # same heights: same eyes, nose and mouth
        assert 0.8 < (a[2, 0] - a[0, 0]) / (b[2, 0] - b[0, 0]) < 1.25  # about as wide
    with pytest.raises(ValueError, match="keypoints"):
        masks.face_points(six[:3])


def test_is_frontal():
    kps = _frontal_keypoints()
    assert masks.is_frontal(kps)
    side = kps.copy()
    side[2, 0] = 130  # nose beyond the left eye: a profile
    assert not masks.is_frontal(side)


@needs_data
def test_paste_mask_covers_the_lower_face_only():
    templates = masks.load_mask_templates(DATA)
    assert {t.name for t in templates} == set(masks.FRONTAL_TEMPLATES)
    img = np.full((240, 200, 3), 128, np.uint8)
    out = masks.paste_mask(img, _frontal_keypoints(), templates[0], "correct", np.random.default_rng(0))
    changed = np.any(out != img, axis=2)
    ys = np.nonzero(changed.any(axis=1))[0]
    assert changed.sum() > 1500
    assert 100 < ys.min() < 125 and 150 < ys.max() < 200  # from the nose bridge to under the chin
