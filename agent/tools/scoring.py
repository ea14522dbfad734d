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


def read_photo(path: str, cfg: Any) -> Any:
    """An image file as the agent's sources give frames (BGR uint8, within ``source.max_pixels``)."""
    from agent.pipeline.source import SourceCounters, normalize_image, read_image

    image = normalize_image(read_image(path), SourceCounters(), cfg.source.max_pixels)
    if image is None:
        raise EvaluateError(f"{path}: not a readable image")
    return image


__all__ = ["EvaluateError", "UNMASKED", "match_greedy", "pct", "read_photo", "score_image", "wilson"]
