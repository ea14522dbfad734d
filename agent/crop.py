"""The one face-crop function, used at run time and by convert/ when it makes training crops.

A crop is a square around the face box, ``scale`` times its larger side, moved down by
``shift_y`` box heights, rotated so that the eyes are level when eye keypoints are known, and
resized to the classifier's input size. Its parameters come from the classifier's sidecar
(``crop``), so a model is always fed crops framed the way it was trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.types import Box

# Beyond this roll the eye keypoints are more likely wrong than the face is tilted.
_MAX_ROLL_DEG = 45.0


@dataclass(frozen=True)
class CropSpec:
    """How to cut a face for a classifier (the sidecar's ``crop`` plus its input size)."""

    width: int
    height: int
    scale: float = 1.3
    align: str = "eyes"  # "eyes" (level the eyes when keypoints exist) or "none"
    shift_y: float = 0.0

    @classmethod
    def from_sidecar(cls, crop: Mapping[str, Any], width: int, height: int) -> "CropSpec":
        """Build from a sidecar ``crop`` mapping and the model's input size."""
        align = str(crop.get("align", "eyes"))
        if align not in ("eyes", "none"):
            raise ValueError(f"crop.align must be 'eyes' or 'none', not {align!r}")
        return cls(
            width=int(width),
            height=int(height),
            scale=float(crop.get("scale", 1.3)),
            align=align,
            shift_y=float(crop.get("shift_y", 0.0)),
        )


def roll_angle(keypoints: Optional[np.ndarray]) -> float:
    """Roll of the face in radians from keypoints 0 (subject's right eye) and 1 (left eye).

    Returns 0 when keypoints are missing or implausible (eyes on top of each other, or a roll
    beyond 45 degrees, which a BlazeFace keypoint error is likelier to cause than a real tilt).
    """
    if keypoints is None or len(keypoints) < 2:
        return 0.0
    right_eye, left_eye = np.asarray(keypoints[0], float), np.asarray(keypoints[1], float)
    dx, dy = left_eye - right_eye
    if not (math.isfinite(dx) and math.isfinite(dy)) or math.hypot(dx, dy) < 1e-3:
        return 0.0
    angle = math.atan2(dy, dx)
    return angle if abs(math.degrees(angle)) <= _MAX_ROLL_DEG else 0.0


def crop_matrix(box: Box, keypoints: Optional[np.ndarray], spec: CropSpec) -> np.ndarray:
    """The 2x3 affine matrix mapping frame pixels to crop pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + spec.shift_y * h
    side = spec.scale * max(w, h)
    theta = roll_angle(keypoints) if spec.align == "eyes" else 0.0
    # dst = A (src - c) + half, with A = zoom * R(-theta)
    cos, sin = math.cos(theta), math.sin(theta)
    zx, zy = spec.width / side, spec.height / side
    a = np.array([[zx * cos, zx * sin], [-zy * sin, zy * cos]])
    t = np.array([spec.width / 2.0, spec.height / 2.0]) - a @ np.array([cx, cy])
    return np.hstack([a, t[:, None]]).astype(np.float64)


def warp_shrinking(image: np.ndarray, m: np.ndarray, size: Tuple[int, int],
                   border_mode: int = cv2.BORDER_REPLICATE,
                   border_value: Tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """``cv2.warpAffine`` to ``size`` (width, height) that pre-shrinks with INTER_AREA first when
    the affine ``m`` zooms out more than 2x (bilinear sampling alone would alias).

    Only the part of the image the output samples is shrunk: for a 400x500 px face in a 1280x960
    frame that is 2.5 ms instead of 5 ms for the whole frame (INTER_AREA at a free factor is slow).
    """
    zoom = math.hypot(m[0, 0], m[0, 1])
    if zoom < 0.5:
        f = zoom * 2.0
        region, m_region = _sampled_region(image, m, size, margin=2.0 / f + 2.0)
        # A region under ~1 pixel once shrunk (a crop far outside a tiny frame) is warped as it is.
        if min(region.shape[:2]) * f >= 1.0:
            image = cv2.resize(region, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            m = m_region @ np.array([[1.0 / f, 0, 0], [0, 1.0 / f, 0], [0, 0, 1.0]])
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=border_mode,
                          borderValue=border_value)


def _sampled_region(image: np.ndarray, m: np.ndarray, size: Tuple[int, int],
                    margin: float) -> Tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` that ``warpAffine(image, m, size)`` samples, ``margin`` source pixels
    wider, as a view, with the affine matrix for it. Clipped to the image: beyond its edge the
    border mode sees the same edge pixels as with the whole image."""
    w, h = size
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [0.0, h, 1.0], [w, h, 1.0]]) @ inv.T
    ih, iw = image.shape[:2]
    x0 = int(min(max(math.floor(corners[:, 0].min() - margin), 0), iw - 1))
    y0 = int(min(max(math.floor(corners[:, 1].min() - margin), 0), ih - 1))
    x1 = int(max(min(math.ceil(corners[:, 0].max() + margin), iw), x0 + 1))
    y1 = int(max(min(math.ceil(corners[:, 1].max() + margin), ih), y0 + 1))
    moved = m.copy()
    moved[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return image[y0:y1, x0:x1], moved


def crop_face(image: np.ndarray, box: Box, keypoints: Optional[np.ndarray], spec: CropSpec) -> np.ndarray:
    """Cut one face from a BGR frame; returns a (spec.height, spec.width, 3) uint8 BGR crop.

    Pixels outside the frame repeat the frame's border, the same at training and at run time.
    """
    return warp_shrinking(image, crop_matrix(box, keypoints, spec), (spec.width, spec.height))


def crop_faces(
    image: np.ndarray,
    boxes: Sequence[Box],
    keypoints: Sequence[Optional[np.ndarray]],
    spec: CropSpec,
) -> np.ndarray:
    """Cut every face of a frame into one (N, H, W, 3) uint8 batch, for one classifier call."""
    out = np.empty((len(boxes), spec.height, spec.width, 3), np.uint8)
    for i, (box, kps) in enumerate(zip(boxes, keypoints)):
        out[i] = crop_face(image, box, kps, spec)
    return out


def crop_size_ok(box: Box, min_size: float) -> bool:
    """True when the face box is at least ``min_size`` pixels on its shorter side."""
    return min(box[2] - box[0], box[3] - box[1]) >= min_size


__all__: Tuple[str, ...] = ("CropSpec", "crop_face", "crop_faces", "crop_matrix", "roll_angle", "crop_size_ok", "warp_shrinking")
