"""agent.pipeline.detectors.blazeface: MediaPipe SSD anchors, box/keypoint decoding and weighted NMS."""

from __future__ import annotations

import numpy as np
import pytest

from agent.pipeline.detectors import blazeface

FULL = {
    "num_layers": 1, "min_scale": 0.1484375, "max_scale": 0.75,
    "input_size_height": 192, "input_size_width": 192,
    "anchor_offset_x": 0.5, "anchor_offset_y": 0.5,
    "strides": [4], "aspect_ratios": [1.0],
    "fixed_anchor_size": True, "interpolated_scale_aspect_ratio": 0.0,
    "reduce_boxes_in_lowest_layer": False,
}
SHORT = {
    **FULL, "num_layers": 4, "input_size_height": 128, "input_size_width": 128,
    "strides": [8, 16, 16, 16], "interpolated_scale_aspect_ratio": 1.0,
}
DECODING = {"scale": [192, 192, 192, 192], "num_keypoints": 6, "keypoint_offset": 4,
            "score_activation": "sigmoid", "score_clipping": 100.0, "box_format": "xywh_center"}


def test_anchor_counts_and_grid():
    full = blazeface.generate_anchors(FULL)
    short = blazeface.generate_anchors(SHORT)
    assert full.shape == (2304, 4)
    assert short.shape == (896, 4)
    # full range: one anchor per cell of a 48x48 grid, row-major, centres at (i + 0.5) / 48
    assert np.allclose(full[0], [0.5 / 48, 0.5 / 48, 1.0, 1.0])
    assert np.allclose(full[1], [1.5 / 48, 0.5 / 48, 1.0, 1.0])
    assert np.allclose(full[48], [0.5 / 48, 1.5 / 48, 1.0, 1.0])
    # short range: 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors (3 layers of stride 16, x2)
    assert np.allclose(short[0], short[1])
    assert np.allclose(short[0, :2], [0.5 / 16, 0.5 / 16])
    assert np.allclose(short[512, :2], [0.5 / 8, 0.5 / 8])
    assert np.allclose(short[512:518, :2], short[512, :2])


def test_anchors_not_fixed_size_use_scales():
    opts = {**FULL, "fixed_anchor_size": False, "interpolated_scale_aspect_ratio": 1.0}
    a = blazeface.generate_anchors(opts)
    assert a.shape == (2 * 2304, 4)
    scale = (0.1484375 + 0.75) / 2  # one layer: midpoint
    assert np.allclose(a[0, 2:], [scale, scale])
    assert np.allclose(a[1, 2:], [1.0 * np.sqrt(scale * 1.0)] * 2)  # interpolated with next scale 1.0


def test_decode_known_vector():
    anchors = np.array([[0.5, 0.25, 1.0, 1.0]], np.float32)
    raw = np.zeros((1, 16), np.float32)
    raw[0, :4] = [19.2, -9.6, 48.0, 96.0]  # dx = +0.1, dy = -0.05, w = 0.25, h = 0.5 (of 192)
    raw[0, 4:6] = [-19.2, 0.0]  # right eye at (0.4, 0.25)
    boxes, scores, kps = blazeface.decode(raw, np.array([0.0]), anchors, DECODING)
    cx, cy = 0.6, 0.2
    assert np.allclose(boxes[0], [cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25], atol=1e-6)
    assert scores[0] == pytest.approx(0.5)
    assert kps.shape == (1, 6, 2)
    assert np.allclose(kps[0, 0], [0.4, 0.25], atol=1e-6)
    assert np.allclose(kps[0, 1:], [0.5, 0.25], atol=1e-6)  # zero offsets sit on the anchor centre


def test_score_clipping_and_sigmoid():
    s = blazeface.sigmoid_scores(np.array([-1000.0, 0.0, 1000.0]), {"score_clipping": 100.0})
    assert np.all(np.isfinite(s))
    assert s[1] == pytest.approx(0.5) and s[0] < 1e-40 and s[2] == pytest.approx(1.0)


@pytest.mark.parametrize("decoding", [{"score_clipping": 100.0}, {}, {"score_activation": "none"}])
@pytest.mark.parametrize("min_score", [0.5, 0.3, 0.9, 0.999])
def test_score_floor_keeps_every_anchor_the_probabilities_keep(decoding, min_score):
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0, 4, 5000), [-1.5e-8, 0.0, 1e-8]]).astype(np.float32)
    if decoding.get("score_activation") == "none":
        logits = logits / 8 + 0.5
    kept = blazeface.sigmoid_scores(logits, decoding) >= min_score
    candidates = logits >= blazeface.score_floor(min_score, decoding)
    assert not (kept & ~candidates).any()  # nothing the exact test keeps is skipped (-1.5e-8 -> 0.5 too)
    assert (candidates & ~kept).sum() <= 0.002 * len(logits)  # and only a sliver more is decoded


def test_score_floor_beyond_the_clipping():
    assert blazeface.score_floor(0.5, {"score_clipping": 1e-4}) == -np.inf  # every clipped score is 0.5
    assert blazeface.score_floor(0.99, {"score_clipping": 1.0}) == np.inf  # sigmoid(1) < 0.99


def test_bad_anchor_options():
    with pytest.raises(ValueError, match="strides"):
        blazeface.generate_anchors({**FULL, "num_layers": 2})
