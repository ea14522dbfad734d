"""Non-maximum suppression shared by the detector families: which of many overlapping cells is the face.

``hard`` keeps the best-scored box of each overlapping group as it is (OpenCV's ``cv2.dnn.NMSBoxes``,
what YuNet's authors use); ``weighted`` (MediaPipe's, BlazeFace's own) replaces it by the
score-weighted mean of the group's boxes and keypoints, so one badly drawn top box does not decide
the face's box alone.
"""

from __future__ import annotations

from typing import Any, Mapping, Tuple

import cv2
import numpy as np

from agent.pipeline.boxes import iou_matrix

METHODS = ("hard", "weighted")


def weighted(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float, min_score: float
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe weighted NMS over detections with score >= ``min_score``.

    The best remaining detection and every remaining one overlapping it by IoU > ``iou_threshold``
    form a cluster; the cluster becomes one detection: score-weighted mean box and keypoints, with
    the top score. Output is sorted by decreasing score.
    """
    scores = np.asarray(scores, np.float32).reshape(-1)
    keep = np.flatnonzero(scores >= min_score)
    k = keypoints.shape[1] if keypoints.ndim == 3 else 0
    if keep.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, k, 2), np.float32)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    b, s, kp = boxes[order].astype(np.float32), scores[order], keypoints[order].astype(np.float32)
    out_b, out_s, out_k = [], [], []
    # One IoU row per cluster, against the detections still left: a large face leaves hundreds of
    # anchors above the threshold (a median 80, up to 600 in real 640x480 photos), so a full IoU
    # matrix would cost N^2 (0.4 ms median, 1.4 ms mean there) where this costs N per face.
    remaining = np.arange(len(order))
    while remaining.size:
        top = remaining[0]
        in_cluster = iou_matrix(b[top], b[remaining])[0] > iou_threshold
        in_cluster[0] = True  # a degenerate (zero-area) top box still forms its own cluster
        members = remaining[in_cluster]
        w = s[members]
        total = float(w.sum())
        out_b.append((b[members] * w[:, None]).sum(0) / total)
        out_k.append((kp[members] * w[:, None, None]).sum(0) / total)
        out_s.append(s[top])
        remaining = remaining[~in_cluster]
    return np.asarray(out_b, np.float32), np.asarray(out_s, np.float32), np.asarray(out_k, np.float32).reshape(-1, k, 2)


def hard(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float, min_score: float,
         whole_pixels: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's NMS over detections with score >= ``min_score``: the kept ones, best first.

    ``whole_pixels``: overlaps are measured on each box's x, y, width and height truncated to whole
    pixels, as ``cv2.FaceDetectorYN`` does (it hands NMS ``Rect2i`` boxes), so a YuNet decoder keeps
    the faces its reference keeps; the boxes returned keep their fractions.
    """
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # OpenCV takes arrays as Rect2d
    if whole_pixels:
        xywh = np.trunc(xywh.astype(np.float32))  # C's int(float) of FaceDetectorYN's float32 rows
    picked = np.asarray(cv2.dnn.NMSBoxes(xywh, np.asarray(scores, np.float32), float(min_score), float(iou_threshold)),
                        np.int64).reshape(-1)
    picked = picked[np.argsort(-scores[picked], kind="stable")]
    return boxes[picked], scores[picked], keypoints[picked]


def method_of(decoding: Mapping[str, Any], default: str) -> str:
    """A sidecar ``decoding``'s ``nms.method`` (``default`` where absent: what files written before the
    field was read were scored with); ValueError naming the field for another value."""
    method = str((decoding.get("nms") or {}).get("method", default))
    if method not in METHODS:
        raise ValueError(f"`decoding.nms.method` must be one of {', '.join(METHODS)}, not {method!r}")
    return method


def suppress(method: str, boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float,
             min_score: float, whole_pixels: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``hard`` or ``weighted`` NMS (see the module); boxes (N, 4) x1y1x2y2, keypoints (N, K, 2);
    ``whole_pixels`` as in :func:`hard` (``weighted`` averages the boxes as they are)."""
    if method == "weighted":
        b, s, k = weighted(boxes, scores, keypoints, iou_threshold, min_score)
        return b.astype(np.float64), s.astype(np.float64), k.astype(np.float64)
    return hard(boxes, scores, keypoints, iou_threshold, min_score, whole_pixels)


__all__ = ("METHODS", "hard", "method_of", "suppress", "weighted")
