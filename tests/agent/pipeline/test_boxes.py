"""agent.pipeline.boxes: the one IoU, as a pair and as a matrix, and the two forms agree."""

from __future__ import annotations

import numpy as np
import pytest

from agent.pipeline.boxes import greedy_match, iou, iou_matrix


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_iou_matrix_counts_boxes_without_area_as_empty():
    flat = np.array([[5, 5, 5, 15], [8, 8, 2, 2]], float)  # zero width; inverted corners
    face = np.array([[0, 0, 10, 10]], float)
    assert iou_matrix(flat, face).tolist() == [[0.0], [0.0]]
    assert iou_matrix(flat, flat).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert iou((8, 8, 2, 2), (0, 0, 10, 10)) == 0.0  # the pair form too


def test_pair_and_matrix_forms_agree_on_every_pair():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(-5, 40, (40, 2))], 1)  # some inverted or empty
    boxes[5, 2:] = boxes[5, :2]
    m = iou_matrix(boxes, boxes)
    assert m.shape == (40, 40)
    for i in range(40):
        for j in range(40):
            assert m[i, j] == pytest.approx(iou(boxes[i], boxes[j]), abs=1e-12)
    assert iou_matrix(boxes[0], boxes).shape == (1, 40)  # one box reads as a row


def test_iou_matrix_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    b = np.array([[20, 20, 30, 31], [0, 0, 10, 10], [100, 100, 110, 110]], float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 1] == pytest.approx(1.0) and iou[1, 0] == pytest.approx(100 / 110)
    assert greedy_match(iou, 0.95) == [(0, 1)]
    assert sorted(greedy_match(iou, 0.5)) == [(0, 1), (1, 0)]
    assert greedy_match(iou_matrix(a[:0], b), 0.5) == []
