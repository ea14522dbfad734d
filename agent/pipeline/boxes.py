"""Intersection over union of x1, y1, x2, y2 boxes: the one definition the tracker, NMS, scoring and convert/ share,
and the one-to-one pairing by IoU that convert/'s parity and evaluation checks use.

Two forms of the same rule: :func:`iou` for one pair in plain Python (the tracker and the scorer
call it per pair, where numpy's per-call overhead would cost more than the arithmetic) and
:func:`iou_matrix` for many at once (NMS rows, convert's matching). A box without area counts as
empty in both (IoU 0), so degenerate boxes never match anything; a test holds the two to agreement.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes (0 when either has no area)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): an (N, M) float64 array.

    Written per coordinate (not with (N, M, 2) corner arrays) because weighted NMS calls it once per
    cluster on a single row, where numpy's per-call overhead is most of the cost.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax1, ay1, ax2, ay2 = (c[:, None] for c in a.T)
    bx1, by1, bx2, by2 = b.T
    inter = (np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0.0)
             * np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0.0))
    union = (np.maximum(ax2 - ax1, 0.0) * np.maximum(ay2 - ay1, 0.0)
             + np.maximum(bx2 - bx1, 0.0) * np.maximum(by2 - by1, 0.0) - inter)
    # inter never exceeds the smaller area, so union is 0 only where inter is: those pairs give 0
    return inter / np.maximum(union, 1e-12)


def greedy_match(iou: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """One-to-one pairs (i, j) by decreasing IoU, each with IoU >= threshold."""
    pairs: List[Tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
    used_a, used_b = set(), set()
    for i, j in order:
        if iou[i, j] < threshold:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(int(i))
        used_b.add(int(j))
        pairs.append((int(i), int(j)))
    return pairs


__all__ = ("greedy_match", "iou", "iou_matrix")
