"""The one face-crop function, used at run time and by convert/ when it makes training crops.

A crop is a square around the face box, ``scale`` times its larger side, moved down by
``shift_y`` box heights, rotated so that the eyes are level when eye keypoints are known, and
resized to the classifier's input size. With ``anchor: keypoints`` the square is placed by the
keypoints instead: ``anchor_side`` eye-to-mouth distances wide, centred ``anchor_centre`` of that
distance below the eyes along the face, so nose and mouth sit at the same crop pixels on every
face (without usable keypoints, the box stands in for them). Its parameters come from the
classifier's sidecar (``crop``), so a model is always fed crops framed the way it was trained.
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
# A face box (the annotators' convention, which detectors map to) in eye-to-mouth distances: its
# height, and how far its centre lies below the eyes. The box stands in for keypoints with them.
_BOX_HEIGHT_EYE_MOUTH = 2.5
_BOX_CENTRE_BELOW_EYES = 0.47
# Keypoints whose eye-to-mouth distance is off this range of the box height are not trusted.
_EYE_MOUTH_OF_BOX = (0.2, 0.7)


@dataclass(frozen=True)
class CropSpec:
    """How to cut a face for a classifier (the sidecar's ``crop`` plus its input size)."""

    width: int
    height: int
    scale: float = 1.3
    align: str = "eyes"  # "eyes" (level the eyes when keypoints exist) or "none"
    shift_y: float = 0.0
    anchor: str = "box"  # "box" (scale, shift_y) or "keypoints" (anchor_side, anchor_centre)
    anchor_side: float = 2.2  # crop side in eye-to-mouth distances
    anchor_centre: float = 0.8  # crop centre below the eyes, in eye-to-mouth distances

    @classmethod
    def from_sidecar(cls, crop: Mapping[str, Any], width: int, height: int) -> "CropSpec":
        """Build from a sidecar ``crop`` mapping and the model's input size."""
        align = str(crop.get("align", "eyes"))
        if align not in ("eyes", "none"):
            raise ValueError(f"crop.align must be 'eyes' or 'none', not {align!r}")
        anchor = str(crop.get("anchor", "box"))
        if anchor not in ("box", "keypoints"):
            raise ValueError(f"crop.anchor must be 'box' or 'keypoints', not {anchor!r}")
        return cls(
            width=int(width),
            height=int(height),
            scale=float(crop.get("scale", 1.3)),
            align=align,
            shift_y=float(crop.get("shift_y", 0.0)),
            anchor=anchor,
            anchor_side=float(crop.get("anchor_side", 2.2)),
            anchor_centre=float(crop.get("anchor_centre", 0.8)),
        )

    def sidecar(self) -> dict:
        """The sidecar's ``crop`` mapping for this geometry (the anchor keys only when it is keypoints)."""
        out: dict = {"scale": self.scale, "align": self.align, "shift_y": self.shift_y}
        if self.anchor == "keypoints":
            out.update(anchor="keypoints", anchor_side=self.anchor_side, anchor_centre=self.anchor_centre)
        return out


def roll_angle(keypoints: Optional[np.ndarray]) -> float:
    """Roll of the face in radians from keypoints 0 (subject's right eye) and 1 (left eye).

    Returns 0 when keypoints are missing or implausible (eyes on top of each other, or a roll
    beyond 45 degrees, which a keypoint error is likelier to cause than a real tilt).
    """
    if keypoints is None or len(keypoints) < 2:
        return 0.0
    dx = float(keypoints[1][0]) - float(keypoints[0][0])
    dy = float(keypoints[1][1]) - float(keypoints[0][1])
    if not (math.isfinite(dx) and math.isfinite(dy)) or math.hypot(dx, dy) < 1e-3:
        return 0.0
    angle = math.atan2(dy, dx)
    return angle if abs(math.degrees(angle)) <= _MAX_ROLL_DEG else 0.0


def eyes_and_mouth(keypoints: Optional[np.ndarray]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(midpoint of the eyes, centre of the mouth) from a detector's keypoints: YuNet's 5 (eyes,
    nose tip, mouth corners: the mouth is their midpoint) or BlazeFace's 6 (eyes, nose tip, mouth
    centre, ears); None for other layouts or non-finite points."""
    if keypoints is None or len(keypoints) < 5:
        return None
    k = np.asarray(keypoints, np.float64)
    mouth = (k[3] + k[4]) / 2.0 if len(k) == 5 else k[3]
    eyes = (k[0] + k[1]) / 2.0
    return (eyes, mouth) if np.isfinite(eyes).all() and np.isfinite(mouth).all() else None


def _anchored(box: Box, keypoints: Optional[np.ndarray], spec: CropSpec) -> Tuple[float, float, float]:
    """(cx, cy, side) of a keypoint-anchored crop: ``anchor_side`` eye-to-mouth distances wide,
    centred ``anchor_centre`` of them below the eyes along the face; the box's typical eye and mouth
    places stand in when the keypoints are missing or implausible for the box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h = max(y2 - y1, 1.0)
    em = eyes_and_mouth(keypoints)
    if em is not None:
        eyes, mouth = em
        axis = mouth - eyes
        d = float(np.hypot(*axis))
        if _EYE_MOUTH_OF_BOX[0] * h <= d <= _EYE_MOUTH_OF_BOX[1] * h:
            c = eyes + axis * spec.anchor_centre
            return float(c[0]), float(c[1]), spec.anchor_side * d
    d = h / _BOX_HEIGHT_EYE_MOUTH
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0 + (spec.anchor_centre - _BOX_CENTRE_BELOW_EYES) * d, spec.anchor_side * d


def crop_matrix(box: Box, keypoints: Optional[np.ndarray], spec: CropSpec) -> np.ndarray:
    """The 2x3 affine matrix mapping frame pixels to crop pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    if spec.anchor == "keypoints":
        cx, cy, side = _anchored(box, keypoints, spec)
    else:
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + spec.shift_y * h
        side = spec.scale * max(w, h)
    theta = roll_angle(keypoints) if spec.align == "eyes" else 0.0
    # dst = A (src - c) + half, with A = zoom * R(-theta); plain floats: a few per face, per frame
    cos, sin = math.cos(theta), math.sin(theta)
    zx, zy = spec.width / side, spec.height / side
    a, b, c, d = zx * cos, zx * sin, -zy * sin, zy * cos
    return np.array([[a, b, spec.width / 2.0 - (a * cx + b * cy)],
                     [c, d, spec.height / 2.0 - (c * cx + d * cy)]], np.float64)


def warp_shrinking(image: np.ndarray, m: np.ndarray, size: Tuple[int, int],
                   border_mode: int = cv2.BORDER_REPLICATE,
                   border_value: Tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """``cv2.warpAffine`` to ``size`` (width, height) that first halves the image (2x2 pixel
    averages) while the affine ``m`` zooms out more than 2x (bilinear sampling alone would alias).

    The mip-map rule: halve until the warp is left at most 2:1. Halving is OpenCV's fastest
    INTER_AREA path, and only the part of the image the output samples is halved: several times
    faster than a free-factor INTER_AREA to 2:1, which also set the crop off by up to a quarter of
    an output pixel (``maskwatch bench`` times the classify stage, crops included).
    """
    zoom = math.hypot(m[0, 0], m[0, 1])
    if zoom < 0.5:
        halvings = math.ceil(math.log2(0.5 / zoom) - 1e-9)
        k = 2 ** halvings
        region, m_region = _sampled_region(image, m, size, margin=k + 2.0, multiple=k)
        # A frame smaller than one block (a crop far outside a tiny frame) is warped as it is.
        if min(region.shape[:2]) >= k:
            image = region  # halving it gives the very pixels that halving the whole image gives
            for _ in range(halvings):
                image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
            # A pixel averaged from a k x k block is centred on region pixel k*q + (k-1)/2.
            m = m_region @ np.array([[k, 0.0, (k - 1) / 2.0], [0.0, k, (k - 1) / 2.0], [0.0, 0.0, 1.0]])
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=border_mode,
                          borderValue=border_value)


def _span(lo: float, hi: float, n: int, multiple: int) -> Tuple[int, int]:
    """Pixels [a, b) of an axis of ``n`` covering [lo, hi] where the image allows, in whole blocks
    of ``multiple`` pixels counted from 0 (the blocks that halving the whole image would average;
    a last partial block is left out, as halving leaves it)."""
    blocks = max(n // multiple, 1)
    a = min(max(math.floor(lo / multiple), 0), blocks - 1)
    b = max(min(math.ceil(hi / multiple), blocks), a + 1)
    return a * multiple, b * multiple


def _sampled_region(image: np.ndarray, m: np.ndarray, size: Tuple[int, int],
                    margin: float, multiple: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` that ``warpAffine(image, m, size)`` samples, ``margin`` source pixels
    wider and in whole blocks of ``multiple`` pixels (see :func:`_span`), as a view, with the affine
    matrix for it. Kept inside the image: beyond its edge the border mode sees the same edge pixels
    as with the whole image."""
    w, h = size
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [0.0, h, 1.0], [w, h, 1.0]]) @ inv.T
    ih, iw = image.shape[:2]
    x0, x1 = _span(corners[:, 0].min() - margin, corners[:, 0].max() + margin, iw, multiple)
    y0, y1 = _span(corners[:, 1].min() - margin, corners[:, 1].max() + margin, ih, multiple)
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


__all__: Tuple[str, ...] = ("CropSpec", "crop_face", "crop_faces", "crop_matrix", "eyes_and_mouth", "roll_angle", "crop_size_ok",
                             "warp_shrinking")
