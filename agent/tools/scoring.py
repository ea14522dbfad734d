"""Scoring detections against annotated faces: the matching rule, one image's outcome, the Wilson
interval. ``maskwatch evaluate`` (photos and ``--stream`` clips) and convert's evaluations use these."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent.pipeline.boxes import iou
from agent.tools.annotations import Annotation
from agent.types import Box

UNMASKED = ("incorrect_mask", "no_mask")
# The usual rule: a detection finds an annotated face when their boxes overlap by IoU >= this.
MATCH_IOU = 0.5


class EvaluateError(ValueError):
    """Bad inputs or options; the message names the file (or option) and the fix."""


# --- matching and metrics ---------------------------------------------------------------------


def match_greedy(dets: Sequence[Tuple[Box, float]], gts: Sequence[Box], iou_thr: float = MATCH_IOU) -> List[Optional[int]]:
    """For each annotated box, the index of its matched detection or None.

    Detections ``(box, score)`` are taken in decreasing score (ties: input order); each takes the
    still-free annotated box it overlaps most (ties: lowest index) if that IoU is >= ``iou_thr``.
    """
    matched: List[Optional[int]] = [None] * len(gts)
    for d in sorted(range(len(dets)), key=lambda i: -dets[i][1]):
        best, best_iou = None, iou_thr
        for g, gt in enumerate(gts):
            if matched[g] is None:
                v = iou(dets[d][0], gt)
                if v >= best_iou and (best is None or v > best_iou):
                    best, best_iou = g, v
        if best is not None:
            matched[best] = d
    return matched


def score_image(faces: Sequence[Dict[str, Any]], gts: Sequence[Annotation], iou_thr: float = MATCH_IOU) -> Dict[str, Any]:
    """One image's outcome: per annotated face its predicted label (None = missed), and spurious count.

    ``faces`` are ``maskwatch detect --json`` face objects (``box``, ``label``, ``face_score``).
    """
    matched = match_greedy([(tuple(f["box"]), f["face_score"]) for f in faces], [g.box for g in gts], iou_thr)
    used = {m for m in matched if m is not None}
    return {
        "faces": [{"box": list(g.box), "label": g.label, "height": g.height,
                   "predicted": None if m is None else faces[m]["label"]} for g, m in zip(gts, matched)],
        "spurious": len(faces) - len(used),
        # unmatched detections the classifier called unmasked: what would raise an alert
        "spurious_unmasked": sum(f["label"] in UNMASKED for i, f in enumerate(faces) if i not in used),
    }


def wilson(k: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """Wilson score interval of a proportion k / n (95 % by default); (nan, nan) when n is 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def pct(n: int, d: int) -> Optional[float]:
    return round(100.0 * n / d, 2) if d else None


def read_photo(path: str, cfg: Any, orient: bool = True) -> Any:
    """An image file as the agent's sources give frames (BGR uint8, within ``source.max_pixels``),
    upright by its EXIF orientation unless ``orient`` is False (:func:`agent.pipeline.source.read_image`)."""
    from agent.pipeline.source import SourceCounters, normalize_image, read_image

    image = normalize_image(read_image(path, orient), SourceCounters(), cfg.source.max_pixels)
    if image is None:
        raise EvaluateError(f"{path}: not a readable image")
    return image


BOX_SLACK_PX = 2.0  # annotation tools round to whole pixels and some draw to the last pixel's far edge


def _outside(gts: Sequence[Annotation], image: Any) -> Optional[Annotation]:
    """The first annotated face whose box leaves ``image`` by more than :data:`BOX_SLACK_PX`, or None."""
    h, w = image.shape[:2]
    for g in gts:
        x1, y1, x2, y2 = g.box
        if min(x1, y1) < -BOX_SLACK_PX or x2 > w + BOX_SLACK_PX or y2 > h + BOX_SLACK_PX:
            return g
    return None


def read_annotated_photo(path: str, cfg: Any, gts: Sequence[Annotation], orient: bool = True) -> Any:
    """:func:`read_photo`, checked against its annotated faces: a box outside the photo means the boxes
    were drawn on another frame of it, most often a phone photo's stored pixels against its EXIF
    orientation (or the reverse), which would score every face as missed without a word."""
    image = read_photo(path, cfg, orient)
    bad = _outside(gts, image)
    if bad is None:
        return image
    h, w = image.shape[:2]
    other = read_photo(path, cfg, not orient)
    if _outside(gts, other) is None:
        flag, frame = ("ignore", "as stored, not turned upright by its EXIF orientation") if orient else \
            ("apply", "turned upright by its EXIF orientation, not as stored")
        raise EvaluateError(f"{path}: its boxes fit the photo {frame} ({other.shape[1]}x{other.shape[0]} against"
                            f" {w}x{h})\n  fix: pass --exif {flag} (the tool that drew the boxes read the photo so)")
    raise EvaluateError(f"{path}: annotated box {list(bad.box)} lies outside the {w}x{h} photo\n"
                        f"  fix: correct the box in the annotations, or name the image the box was drawn on")


__all__ = ["BOX_SLACK_PX", "EvaluateError", "UNMASKED", "match_greedy", "pct", "read_annotated_photo", "read_photo",
           "score_image", "wilson"]
