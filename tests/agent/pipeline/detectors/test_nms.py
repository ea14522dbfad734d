"""agent.pipeline.detectors.nms: weighted NMS against a plain reference, hard NMS, the method switch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.pipeline.detectors import nms


def _pair_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _random_boxes(rng, n, spread=0.3):
    xy = rng.uniform(0, 1, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0, spread, (n, 2))], 1).astype(np.float32)


def _reference_nms(boxes, scores, kps, iou_threshold, min_score):
    """MediaPipe's weighted NMS written plainly, one pair at a time."""
    left = sorted((i for i in range(len(scores)) if scores[i] >= min_score), key=lambda i: -scores[i])
    out = []
    while left:
        top = left[0]
        members = [i for i in left if i == top or _pair_iou(boxes[top], boxes[i]) > iou_threshold]
        w = np.array([scores[i] for i in members], np.float64)
        out.append((w @ boxes[members] / w.sum(), scores[top], np.tensordot(w, kps[members], 1) / w.sum()))
        left = [i for i in left if i not in members]
    return out


def test_weighted_nms_matches_the_plain_algorithm_on_crowded_anchors():
    """Hundreds of overlapping candidates, as a large face leaves: the same clusters, means and
    order as the pair-by-pair reference."""
    rng = np.random.default_rng(7)
    centres = rng.uniform(0.2, 0.8, (4, 2))
    boxes = np.concatenate([np.concatenate([c + rng.normal(0, 0.02, (150, 2)) - 0.1,
                                            c + rng.normal(0, 0.02, (150, 2)) + 0.1], 1) for c in centres])
    boxes = boxes.astype(np.float32)
    scores = rng.uniform(0.3, 1.0, len(boxes)).astype(np.float32)
    kps = rng.uniform(0, 1, (len(boxes), 6, 2)).astype(np.float32)
    b, s, k = nms.weighted(boxes, scores, kps, 0.3, 0.5)
    ref = _reference_nms(boxes, scores, kps, 0.3, 0.5)
    assert 4 <= len(b) == len(ref)
    for (rb, rs, rk), bb, ss, kk in zip(ref, b, s, k):
        assert ss == rs
        assert np.allclose(bb, rb, atol=1e-5) and np.allclose(kk, rk, atol=1e-5)


def test_weighted_nms_merges_overlaps_keeps_top_score():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8], [0.1, 0.1, 0.3, 0.3]], np.float32)
    scores = np.array([0.9, 0.6, 0.7, 0.2], np.float32)
    kps = np.zeros((4, 6, 2), np.float32)
    kps[0], kps[1] = 0.2, 0.23
    b, s, k = nms.weighted(boxes, scores, kps, iou_threshold=0.3, min_score=0.5)
    assert len(b) == 2  # the 0.2 box is below min_score; boxes 0 and 1 form one cluster
    assert np.allclose(s, [0.9, 0.7])
    w = np.array([0.9, 0.6]) / 1.5
    assert np.allclose(b[0], w @ boxes[:2], atol=1e-6)
    assert np.allclose(k[0], w[0] * 0.2 + w[1] * 0.23, atol=1e-6)
    assert np.allclose(b[1], boxes[2])


def test_weighted_nms_empty_and_threshold():
    kps = np.zeros((2, 6, 2), np.float32)
    boxes = np.array([[0, 0, 0.1, 0.1], [0.05, 0, 0.15, 0.1]], np.float32)
    b, s, k = nms.weighted(boxes, np.array([0.1, 0.2]), kps, 0.3, 0.5)
    assert b.shape == (0, 4) and s.shape == (0,) and k.shape == (0, 6, 2)
    # IoU of these two is 1/3: merged at threshold 0.3, separate at 0.4
    assert len(nms.weighted(boxes, np.array([0.9, 0.8]), kps, 0.3, 0.5)[0]) == 1
    assert len(nms.weighted(boxes, np.array([0.9, 0.8]), kps, 0.4, 0.5)[0]) == 2


def test_hard_keeps_the_top_box_as_it_is_and_drops_what_it_covers():
    boxes = np.array([[10, 10, 50, 50], [12, 10, 52, 50], [100, 100, 140, 140], [10, 10, 50, 50]], np.float64)
    scores = np.array([0.8, 0.9, 0.7, 0.3])
    kps = np.arange(4 * 5 * 2, dtype=np.float64).reshape(4, 5, 2)
    b, s, k = nms.hard(boxes, scores, kps, 0.45, 0.5)
    assert s.tolist() == [0.9, 0.7]
    np.testing.assert_array_equal(b, boxes[[1, 2]])
    np.testing.assert_array_equal(k, kps[[1, 2]])


def test_hard_on_whole_pixels_measures_overlap_as_face_detector_yn_does():
    # IoU 0.42 as drawn, 0.33 on whole pixels (x 0.9 -> 0, width 10.0 -> 10): at 0.4 the fractions
    # suppress the second box, FaceDetectorYN's Rect2i boxes keep it; either way the boxes come back unrounded
    boxes = np.array([[0.9, 0.0, 10.9, 10.0], [5.0, 0.0, 15.0, 10.0]])
    scores = np.array([0.9, 0.8])
    kps = np.zeros((2, 5, 2))
    drawn, _, _ = nms.hard(boxes, scores, kps, 0.4, 0.5)
    whole, _, _ = nms.suppress("hard", boxes, scores, kps, 0.4, 0.5, whole_pixels=True)
    np.testing.assert_array_equal(drawn, boxes[:1])
    np.testing.assert_array_equal(whole, boxes)
    as_rect2i = [[0, 0, 10, 10], [5, 0, 10, 10]]  # what FaceDetectorYN hands cv2.dnn.NMSBoxes
    assert sorted(np.asarray(cv2.dnn.NMSBoxes(as_rect2i, scores.tolist(), 0.5, 0.4)).reshape(-1).tolist()) == [0, 1]


def test_suppress_weighted_averages_the_group_hard_keeps_the_top():
    boxes = np.array([[10, 10, 50, 50], [14, 10, 54, 50]], np.float64)
    scores = np.array([0.9, 0.6])
    kps = np.zeros((2, 5, 2))
    hb, hs, _ = nms.suppress("hard", boxes, scores, kps, 0.45, 0.5)
    wb, ws, _ = nms.suppress("weighted", boxes, scores, kps, 0.45, 0.5)
    assert hs.tolist() == [0.9] and ws.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(hb[0], boxes[0])
    np.testing.assert_allclose(wb[0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5, atol=1e-4)
    assert wb.dtype == np.float64
