"""agent/draw.py: faces, keypoints, track ids, the alert banner and the contact sheet, on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from agent.draw import (LABEL_COLORS, UNLABELLED_COLOR, contact_sheet, draw_banner, draw_overlay, ink_for,
                        label_color)
from agent.types import Face


def _frame(value: int = 128) -> np.ndarray:
    return np.full((720, 1280, 3), value, np.uint8)


def _near(pixel: np.ndarray, color, tol: int = 10) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(color)) <= tol))


def test_overlay_draws_unclassified_faces_and_handles_boxes_outside_the_frame():
    faces = [Face(box=(-50.0, -40.0, 30.0, 50.0), face_score=0.7),  # partly outside
             Face(box=(300.0, 200.0, 1900.0, 900.0), face_score=0.6, label="mask", score=0.99)]
    frame = _frame()
    out = draw_overlay(frame, faces, roi=None)
    assert out.shape == (720, 1280, 3) and out.dtype == np.uint8
    assert _near(out[1, 10], UNLABELLED_COLOR)  # unclassified: grey box, clipped to the frame
    assert _near(out[650, 301], LABEL_COLORS["mask"])
    assert np.array_equal(frame, _frame())  # input untouched


@pytest.mark.parametrize("count", [0, 5, 6, 7])
def test_keypoints_are_drawn_whatever_their_number(count):
    """Every keypoint the face carries gets a white dot ringed in the label's colour (detectors
    differ in how many they give)."""
    points = np.array([(400.0 + 40 * i, 400.0) for i in range(count)]).reshape(-1, 2)
    face = Face(box=(350.0, 300.0, 750.0, 600.0), face_score=0.9, keypoints=points, label="no_mask", score=0.9)
    out = draw_overlay(_frame(), [face])
    for x, y in points.astype(int):
        assert _near(out[y, x], (255, 255, 255)), (x, y)
        assert _near(out[y, x + 4], LABEL_COLORS["no_mask"]), (x, y)  # the ring (3 px lines at 1280 px)
    assert _near(out[450, 400], (128, 128, 128), 0)  # nothing drawn away from box and points


def test_track_id_goes_into_the_tag_of_its_face_only():
    a = Face(box=(100.0, 300.0, 300.0, 500.0), face_score=0.9, label="no_mask", score=0.9)
    b = Face(box=(700.0, 300.0, 900.0, 500.0), face_score=0.9, label="no_mask", score=0.9)
    plain = draw_overlay(_frame(), [a, b])
    tagged = draw_overlay(_frame(), [a, b], track_ids={id(a): 7})
    diff = np.abs(plain.astype(int) - tagged.astype(int)).sum(axis=2) > 0
    ys, xs = np.nonzero(diff)
    assert len(xs) and xs.max() < 700 and ys.max() < 300  # only a's tag, above a's box, changed


def test_banner_fills_the_top_band_in_the_colour():
    img = _frame()
    band = draw_banner(img, "ALERT #3 no_mask 0.99", LABEL_COLORS["no_mask"])
    assert band == 720 // 15
    assert _near(img[band // 2, 1200], LABEL_COLORS["no_mask"], 0)  # right of the text
    assert (img[band // 2, :400] == 255).all(axis=1).any()  # white text on red
    assert _near(img[band + 1, 640], (128, 128, 128), 0)


def test_ink_reads_on_every_label_colour():
    assert ink_for(UNLABELLED_COLOR) == (0, 0, 0)
    assert ink_for(LABEL_COLORS["no_mask"]) == (255, 255, 255)
    assert label_color(None) == label_color("not_face") == UNLABELLED_COLOR


def test_contact_sheet_places_tiles_in_rows_with_captions():
    tiles = [np.full((60, 80, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    colors = [LABEL_COLORS["no_mask"]] * 4
    sheet = contact_sheet(tiles, ["a", "b", "c", "d"], colors, columns=3)
    strip = (sheet.shape[0] - 2 * 60) // 2
    assert sheet.shape == (2 * (60 + strip), 3 * 80, 3)
    assert sheet[5, 5, 0] == 10 and sheet[5, 165, 0] == 30 and sheet[60 + strip + 5, 5, 0] == 40
    assert _near(sheet[60 + strip - 2, 78], LABEL_COLORS["no_mask"], 0)  # caption strip, right end
    with pytest.raises(ValueError):
        contact_sheet([], [], [])
