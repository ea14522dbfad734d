"""Synthetic masks: the mask-templates set's RGBA masks pasted onto a face along its keypoints,
worn correctly, under the nose or on the chin. The classifier's crops and the detector's scenes both
use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.crop import eyes_and_mouth

# Frontal templates only: the side variants need a yaw estimate that 6 keypoints give poorly.
FRONTAL_TEMPLATES: Tuple[str, ...] = ("surgical", "surgical_blue", "surgical_green", "KN95", "N95", "cloth")


@dataclass
class MaskTemplate:
    name: str
    bgra: np.ndarray  # template image with alpha
    points: np.ndarray  # (6, 2) anchors a..f: top-left, top-middle (nose bridge), top-right, bottom-left, bottom-middle (chin), bottom-right


def load_mask_templates(root: Path, names: Sequence[str] = FRONTAL_TEMPLATES) -> List[MaskTemplate]:
    """Templates and anchor points from ``mask-templates/masks.cfg`` (MaskTheFace, MIT)."""
    import configparser

    base = root / "mask-templates"
    cfg = configparser.ConfigParser()
    if not cfg.read(base / "masks.cfg"):
        raise FileNotFoundError(f"{base / 'masks.cfg'}: mask templates not found; pass --data-root DIR holding mask-templates/")
    out = []
    for name in names:
        sec = cfg[name]
        img = cv2.imread(str(base / "templates" / Path(sec["template"]).name), cv2.IMREAD_UNCHANGED)
        if img is None or img.shape[2] != 4:
            raise FileNotFoundError(f"{base / 'templates' / Path(sec['template']).name}: not an RGBA template")
        pts = np.array([[float(v) for v in sec[f"mask_{k}"].split(",")] for k in "abcdef"])
        out.append(MaskTemplate(name, img, pts))
    return out


def face_points(kps: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(right eye, left eye, nose tip, mouth centre, right-to-left ear vector or None) from a detector's keypoints.

    BlazeFace gives 6 (eyes, nose tip, mouth centre, ears); YuNet gives 5 (eyes, nose tip, the two
    mouth corners: their midpoint is the mouth centre, and without ears the width is unknown).
    """
    k = np.asarray(kps, float)
    em = eyes_and_mouth(k)  # the agent's reading of the two layouts
    if em is None:
        raise ValueError(f"need 5 (YuNet) or 6 (BlazeFace) finite keypoints, not {len(k)}")
    return k[0], k[1], k[2], em[1], (k[5] - k[4]) if len(k) >= 6 else None


def mask_points(kps: np.ndarray, placement: str, rng: np.random.Generator) -> np.ndarray:
    """Where a template's anchors a..f go on a face, from a detector's keypoints (YuNet's 5 or
    BlazeFace's 6, see :func:`face_points`).

    ``placement``: "correct" (nose bridge to under the chin), "under_nose" (top edge lowered
    below the nose tip: the commonest real incorrect_mask), or "chin" (mask pulled onto the chin).
    """
    re, le, nose, mouth, ears = face_points(kps)
    eye_mid = (re + le) / 2
    v = mouth - eye_mid
    d = max(float(np.hypot(*v)), 1.0)
    vu = v / d
    hu = np.array([vu[1], -vu[0]])  # perpendicular to the face axis, towards the image right
    if np.dot(hu, le - re) < 0:
        hu = -hu
    iod = float(np.hypot(*(le - re)))
    # without ears (YuNet) a frontal face is about 2.6 eye distances wide at the cheeks
    span_w = 2.6 * iod if ears is None else abs(float(np.dot(ears, hu)))
    half_w = float(np.clip(span_w / 2 * 0.95, 0.8 * iod, 1.6 * iod))
    j = lambda s: rng.uniform(-s, s) * d  # noqa: E731 (placement jitter)
    chin = mouth + (0.8 + rng.uniform(-0.05, 0.1)) * d * vu
    if placement == "correct":
        top = nose + (eye_mid - nose) * rng.uniform(0.45, 0.65)
    elif placement == "under_nose":
        top = nose + rng.uniform(0.08, 0.25) * d * vu
    elif placement == "chin":
        top = mouth + rng.uniform(0.2, 0.35) * d * vu
        chin = chin + rng.uniform(0.1, 0.3) * d * vu
    else:
        raise ValueError(f"placement must be correct, under_nose or chin, not {placement!r}")
    top = top + j(0.04) * hu
    span = float(np.dot(chin - top, vu))
    a = top - half_w * hu + 0.12 * span * vu
    c = top + half_w * hu + 0.12 * span * vu
    low = top + 0.55 * span * vu
    dd = low - 0.85 * half_w * hu
    f = low + 0.85 * half_w * hu
    return np.array([a, top, c, dd, chin, f])


def is_frontal(kps: np.ndarray, max_offset: float = 0.3) -> bool:
    """Nose tip within ``max_offset`` inter-ocular distances of the eyes' midline (templates are frontal)."""
    re, le, nose = (np.asarray(k, float) for k in kps[:3])
    iod = float(np.hypot(*(le - re)))
    if iod < 1.0:
        return False
    hu = (le - re) / iod
    return abs(float(np.dot(nose - (re + le) / 2, hu))) < max_offset * iod


def paste_mask(bgr: np.ndarray, kps: np.ndarray, template: MaskTemplate, placement: str, rng: np.random.Generator) -> np.ndarray:
    """The image with ``template`` warped onto the face (perspective fit to 6 anchors), shaded like the face."""
    dst = mask_points(kps, placement, rng)
    hmat, _ = cv2.findHomography(template.points.astype(np.float32), dst.astype(np.float32), 0)
    if hmat is None:
        return bgr
    h, w = bgr.shape[:2]
    warped = cv2.warpPerspective(template.bgra, hmat, (w, h), flags=cv2.INTER_AREA if w < template.bgra.shape[1] else cv2.INTER_LINEAR)
    alpha = warped[..., 3:4].astype(np.float32) / 255.0
    # match the face's brightness so a white mask in a dim photo is not the brightest thing in it
    x0, y0 = np.maximum(0, dst.min(0).astype(int))
    x1, y1 = np.minimum([w, h], dst.max(0).astype(int) + 1)
    patch = bgr[y0:y1, x0:x1]
    lum = float(patch.mean()) if patch.size else 128.0
    gain = float(np.clip(lum / 140.0 * rng.uniform(0.85, 1.15), 0.35, 1.15))
    colour = np.clip(warped[..., :3].astype(np.float32) * gain, 0, 255)
    out = bgr.astype(np.float32) * (1 - alpha) + colour * alpha
    return out.astype(np.uint8)


__all__ = ["FRONTAL_TEMPLATES", "MaskTemplate", "face_points", "is_frontal", "load_mask_templates", "mask_points", "paste_mask"]
