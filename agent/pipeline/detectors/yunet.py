"""YuNet detector family (libfacedetection): anchor-free grid outputs per stride, hard NMS.

The converted model (``maskwatch-convert yunet``) gives three outputs, every stride's cells
concatenated in the order of ``decoding.strides``, each stride's cells row-major:
``scores`` (1, N, 2) = (cls, obj) probabilities, ``boxes`` (1, N, 4) and ``keypoints`` (1, N, 2K)
as offsets in cells. Decoding follows OpenCV's ``cv2.FaceDetectorYN`` (the reference the tests
hold the Keras port and this decoder to): for the cell at column c, row r of stride s,
score = sqrt(cls * obj), centre = ((c + dx) s, (r + dy) s), size = (exp(dw) s, exp(dh) s),
keypoint k = ((c + kx) s, (r + ky) s). NMS is ``decoding.nms.method``: ``hard`` is OpenCV's
(``cv2.dnn.NMSBoxes``), as the authors use; ``weighted`` averages each overlapping group's boxes
(:mod:`agent.pipeline.detectors.nms`).
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Tuple

import numpy as np

from agent.pipeline.detectors import nms
from agent.pipeline.detectors.base import Decoded, OutputReader

# Keypoints of the published model, in its output order (the person's right eye first).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")


def grid(width: int, height: int, strides: List[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 2) cell (column, row) and (N,) stride of every output row, in output order."""
    check_input_size(width, height, strides)
    cells, steps = [], []
    for s in strides:
        rows, cols = np.mgrid[0 : height // s, 0 : width // s]
        cells.append(np.stack([cols.reshape(-1), rows.reshape(-1)], axis=1))
        steps.append(np.full(cells[-1].shape[0], s))
    return np.concatenate(cells).astype(np.float64), np.concatenate(steps).astype(np.float64)


def decode_boxes(codes: np.ndarray, cells: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(..., N, 4) box outputs (dx, dy, dw, dh in cells) at (N, 2) cells of (N,) strides -> x1y1x2y2
    input pixels; also what fine-tuning decodes its teacher's boxes with."""
    s = steps[:, None]
    centre = (cells + codes[..., :2]) * s
    size = np.exp(np.minimum(codes[..., 2:], 20.0)) * s  # a bound far above any face, below overflow
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)


class Decoder:
    """The ``yunet`` family; raises KeyError / ValueError on a bad ``decoding``."""

    outputs = ("scores", "boxes", "keypoints")

    def __init__(self, decoding: Mapping[str, Any], input_wh: Tuple[int, int]) -> None:
        strides = [int(s) for s in decoding["strides"]]
        if not strides or any(s <= 0 for s in strides):
            raise ValueError(f"`decoding.strides` must be positive integers, not {decoding['strides']!r}")
        self.keypoint_names: List[str] = [str(n) for n in decoding["keypoint_names"]]
        if len(self.keypoint_names) != int(decoding["num_keypoints"]):
            raise ValueError(f"`decoding.keypoint_names` has {len(self.keypoint_names)} names but"
                             f" `decoding.num_keypoints` is {decoding['num_keypoints']}")
        self.default_min_score = float(decoding["default_min_score"])
        self.default_iou = float(decoding["nms"]["iou_threshold"])
        self.nms_method = nms.method_of(decoding, "hard")  # OpenCV's, the authors'
        self.cells, self.steps = grid(int(input_wh[0]), int(input_wh[1]), strides)
        self.rows = len(self.cells)

    def decode(self, read: OutputReader, raw: Mapping[str, np.ndarray], min_score: float, iou: float) -> Decoded:
        """Faces of one input: boxes (N, 4) x1y1x2y2, scores (N,), keypoints (N, K, 2), input pixels."""
        k = len(self.keypoint_names)
        probs = np.clip(read("scores", raw["scores"]).reshape(-1, 2), 0.0, 1.0)
        score = np.sqrt(probs[:, 0] * probs[:, 1])
        keep = np.flatnonzero(score >= min_score)
        if keep.size == 0:
            return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, k, 2))
        # Only the cells above the threshold are dequantized and decoded: a few of ~1700.
        cell, step = self.cells[keep], self.steps[keep, None]
        boxes = decode_boxes(read("boxes", raw["boxes"].reshape(-1, 4)[keep]).astype(np.float64), cell, self.steps[keep])
        pts = read("keypoints", raw["keypoints"].reshape(-1, 2 * k)[keep]).astype(np.float64).reshape(-1, k, 2)
        kps = (cell[:, None, :] + pts) * step[:, :, None]
        # input pixels, measured on whole pixels as cv2.FaceDetectorYN does (the parity reference)
        return nms.suppress(self.nms_method, boxes, score[keep].astype(np.float64), kps, iou, min_score,
                            whole_pixels=True)


def check_input_size(width: int, height: int, strides: List[int]) -> None:
    """Raise ValueError unless the input's sides are multiples of the largest stride (then of all:
    YuNet's strides are powers of two)."""
    m = max(strides)
    if width % m or height % m:
        raise ValueError(f"input {width}x{height}: YuNet's sides must be multiples of {m}"
                         f" (e.g. {int(math.ceil(width / m) * m)}x{int(math.ceil(height / m) * m)})")


__all__ = ("Decoder", "KEYPOINT_NAMES", "check_input_size", "decode_boxes", "grid")
