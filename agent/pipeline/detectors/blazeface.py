"""BlazeFace detector family: SSD anchors, box/keypoint decoding; NMS by the sidecar (MediaPipe's weighted).

Follows MediaPipe's SsdAnchorsCalculator, TensorsToDetectionsCalculator (reverse_output_order,
i.e. x before y) and NonMaxSuppressionCalculator (WEIGHTED). Every parameter comes from the
detector sidecar's ``decoding`` (docs/model-contract.md), nothing here describes one model.
Coordinates are normalized to the model input (0..1); the caller undoes the letterbox.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from agent.pipeline.detectors import nms
from agent.pipeline.detectors.base import Decoded, OutputReader

# Logit margin of score_floor: far above float32 rounding, far below any score that matters.
_FLOOR_MARGIN = 1e-3
# NMS overlap when a sidecar names none: MediaPipe's face detection graphs use 0.3.
DEFAULT_NMS_IOU = 0.3


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    """MediaPipe CalculateScale: linear from min to max over the layers (midpoint for one layer)."""
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def generate_anchors(options: Mapping[str, Any]) -> np.ndarray:
    """SSD anchors (N, 4) as (cx, cy, w, h), normalized, from SsdAnchorsCalculatorOptions fields."""
    num_layers = int(options["num_layers"])
    strides = [int(s) for s in options["strides"]]
    if len(strides) != num_layers:
        raise ValueError(f"anchors: {len(strides)} strides for num_layers {num_layers}")
    min_s, max_s = float(options["min_scale"]), float(options["max_scale"])
    in_h, in_w = int(options["input_size_height"]), int(options["input_size_width"])
    off_x, off_y = float(options.get("anchor_offset_x", 0.5)), float(options.get("anchor_offset_y", 0.5))
    ratios_opt = [float(r) for r in options.get("aspect_ratios", [1.0])]
    interp = float(options.get("interpolated_scale_aspect_ratio", 1.0))
    fixed = bool(options.get("fixed_anchor_size", False))
    reduce_lowest = bool(options.get("reduce_boxes_in_lowest_layer", False))

    parts: List[np.ndarray] = []
    layer = 0
    while layer < num_layers:
        ratios: List[float] = []
        scales: List[float] = []
        last = layer
        # consecutive layers with the same stride share one feature map
        while last < num_layers and strides[last] == strides[layer]:
            scale = _scale(min_s, max_s, last, num_layers)
            if last == 0 and reduce_lowest:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for r in ratios_opt:
                    ratios.append(r)
                    scales.append(scale)
                if interp > 0.0:
                    nxt = 1.0 if last == num_layers - 1 else _scale(min_s, max_s, last + 1, num_layers)
                    scales.append(math.sqrt(scale * nxt))
                    ratios.append(interp)
            last += 1
        sq = np.sqrt(np.asarray(ratios))
        heights, widths = np.asarray(scales) / sq, np.asarray(scales) * sq
        fh, fw = math.ceil(in_h / strides[layer]), math.ceil(in_w / strides[layer])
        ys, xs = np.meshgrid((np.arange(fh) + off_y) / fh, (np.arange(fw) + off_x) / fw, indexing="ij")
        k = len(ratios)
        cx = np.repeat(xs.reshape(-1), k)
        cy = np.repeat(ys.reshape(-1), k)
        if fixed:
            w = np.ones_like(cx)
            h = np.ones_like(cy)
        else:
            w = np.tile(widths, fh * fw)
            h = np.tile(heights, fh * fw)
        parts.append(np.stack([cx, cy, w, h], axis=1))
        layer = last
    return np.concatenate(parts).astype(np.float32)


def sigmoid_scores(raw_scores: np.ndarray, decoding: Mapping[str, Any]) -> np.ndarray:
    """Score logits -> probabilities (clipped like MediaPipe's score_clipping_thresh)."""
    s = np.asarray(raw_scores, np.float32).reshape(-1)
    clip = decoding.get("score_clipping")
    if clip is not None:
        s = np.clip(s, -float(clip), float(clip))
    if decoding.get("score_activation", "sigmoid") == "sigmoid":
        e = np.exp(-np.abs(s))  # never overflows, unlike exp(-s) for very negative logits
        return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    return s


def score_floor(min_score: float, decoding: Mapping[str, Any]) -> float:
    """A raw score (logit) below which no probability reaches ``min_score``: thresholding the raw
    scores with it keeps every anchor that thresholding the probabilities keeps (the activation and
    the clipping are monotonic), and a few at the edge that the exact test then drops, without
    computing thousands of probabilities. The margin covers the float32 rounding of the activation
    (a logit of -1.5e-8 gives a probability of exactly 0.5)."""
    floor = float(min_score)
    if decoding.get("score_activation", "sigmoid") == "sigmoid":
        floor = math.log(min_score / (1.0 - min_score))
    floor -= _FLOOR_MARGIN
    clip = decoding.get("score_clipping")
    if clip is not None:
        if floor > float(clip):
            return math.inf  # even a clipped maximum stays below min_score
        if floor <= -float(clip):
            return -math.inf  # every clipped score reaches it
    return floor


def decode(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, decoding: Mapping[str, Any]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode raw regressors (N, 4 + 2K) and score logits (N,) against ``anchors`` (N, 4).

    Returns boxes (N, 4) x1y1x2y2, scores (N,) probabilities and keypoints (N, K, 2) (x, y),
    all normalized to the model input.
    """
    raw = np.asarray(raw_boxes, np.float32).reshape(len(anchors), -1)
    xs, ys, ws, hs = (float(v) for v in decoding.get("scale", [1.0, 1.0, 1.0, 1.0]))
    if decoding.get("box_format", "xywh_center") != "xywh_center":
        raise ValueError(f"decoding.box_format {decoding.get('box_format')!r} is not supported (xywh_center)")
    ax, ay, aw, ah = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
    cx = raw[:, 0] / xs * aw + ax
    cy = raw[:, 1] / ys * ah + ay
    w = raw[:, 2] / ws * aw
    h = raw[:, 3] / hs * ah
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    k = int(decoding.get("num_keypoints", 0))
    off = int(decoding.get("keypoint_offset", 4))
    kp = raw[:, off : off + 2 * k].reshape(len(anchors), k, 2)
    kpx = kp[..., 0] / xs * aw[:, None] + ax[:, None]
    kpy = kp[..., 1] / ys * ah[:, None] + ay[:, None]
    keypoints = np.stack([kpx, kpy], axis=-1)
    return boxes, sigmoid_scores(raw_scores, decoding), keypoints


class Decoder:
    """The ``blazeface`` family: outputs ``regressors`` (1, N, 4 + 2K) and ``scores`` (1, N, 1)
    against SSD anchors; the sidecar's NMS (weighted where it names none). Raises KeyError / ValueError
    on a bad ``decoding``."""

    outputs = ("regressors", "scores")

    def __init__(self, decoding: Mapping[str, Any], input_wh: Tuple[int, int]) -> None:
        self.decoding: Dict[str, Any] = dict(decoding)
        self.anchors = generate_anchors(self.decoding["anchors"])
        self.rows = len(self.anchors)
        if len(self.anchors) != int(self.decoding.get("num_boxes", len(self.anchors))):
            raise ValueError(f"{len(self.anchors)} anchors from `decoding.anchors` but `decoding.num_boxes` is"
                             f" {self.decoding.get('num_boxes')}")
        self.keypoint_names: List[str] = list(self.decoding.get("keypoint_names", []))
        self.default_min_score = float(self.decoding.get("default_min_score", 0.5))
        self.default_iou = float((self.decoding.get("nms") or {}).get("iou_threshold", DEFAULT_NMS_IOU))
        self.nms_method = nms.method_of(self.decoding, "weighted")  # MediaPipe's
        self._size = np.array(input_wh, np.float64)

    def decode(self, read: OutputReader, raw: Mapping[str, np.ndarray], min_score: float, iou: float) -> Decoded:
        """Faces of one input: boxes (N, 4) x1y1x2y2, scores (N,), keypoints (N, K, 2), input pixels."""
        logits = read("scores", raw["scores"]).reshape(-1)
        keep = np.flatnonzero(logits >= score_floor(min_score, self.decoding))
        k = len(self.keypoint_names) or int(self.decoding.get("num_keypoints", 0))
        if keep.size == 0:
            return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, k, 2))
        # Dequantize and decode only the anchors that can survive: a handful instead of thousands.
        reg = read("regressors", raw["regressors"].reshape(len(self.anchors), -1)[keep])
        boxes, scores, kps = decode(reg, logits[keep], self.anchors[keep], self.decoding)
        boxes, scores, kps = nms.suppress(self.nms_method, boxes, scores, kps, iou, min_score)
        size = self._size
        return (np.asarray(boxes, np.float64) * np.tile(size, 2), np.asarray(scores, np.float64),
                np.asarray(kps, np.float64) * size)


__all__ = ("Decoder", "generate_anchors", "decode", "score_floor", "sigmoid_scores")
