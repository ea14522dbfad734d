"""Scoring detections against annotated faces: the matching rule, one image's outcome, the Wilson
interval. ``maskwatch evaluate`` (photos and ``--stream`` clips) and convert's evaluations use these."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

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


def read_photo(path: str, cfg: Any, orient: bool = True) -> np.ndarray:
    """An image file as the agent's sources give frames (BGR uint8, within ``source.max_pixels``),
    upright by its EXIF orientation unless ``orient`` is False (:func:`agent.pipeline.source.read_image`)."""
    from agent.pipeline.source import SourceCounters, normalize_image, read_image

    image = normalize_image(read_image(path, orient), SourceCounters(), cfg.source.max_pixels)
    if image is None:
        raise EvaluateError(f"{path}: not a readable image")
    return image


BOX_SLACK_PX = 2.0  # annotation tools round to whole pixels and some draw to the last pixel's far edge


def _fits(gts: Sequence[Annotation], shape: Tuple[int, ...]) -> bool:
    """Whether every annotated box lies inside an image of ``shape`` (give or take :data:`BOX_SLACK_PX`)."""
    h, w = shape[:2]
    return all(min(g.box[0], g.box[1]) >= -BOX_SLACK_PX and g.box[2] <= w + BOX_SLACK_PX and g.box[3] <= h + BOX_SLACK_PX
               for g in gts)


# The eight ways a camera stores a picture (EXIF orientations): each as the array operation that turns the
# stored pixels upright, and where a stored point (x, y) lands in the upright picture (w, h: stored size).
_TURNS: Tuple[Tuple[Callable[[np.ndarray], np.ndarray], Callable[[float, float, int, int], Tuple[float, float]]], ...] = (
    (lambda a: a, lambda x, y, w, h: (x, y)),
    (lambda a: a[:, ::-1], lambda x, y, w, h: (w - x, y)),  # mirrored
    (lambda a: a[::-1, ::-1], lambda x, y, w, h: (w - x, h - y)),  # upside down
    (lambda a: a[::-1], lambda x, y, w, h: (x, h - y)),  # mirrored upside down
    (lambda a: a.swapaxes(0, 1), lambda x, y, w, h: (y, x)),  # transposed
    (lambda a: np.rot90(a, -1), lambda x, y, w, h: (h - y, x)),  # turned clockwise (orientation 6)
    (lambda a: a.swapaxes(0, 1)[::-1, ::-1], lambda x, y, w, h: (h - y, w - x)),  # transverse
    (lambda a: np.rot90(a, 1), lambda x, y, w, h: (y, w - x)),  # turned counter-clockwise (orientation 8)
)


def _turn_boxes(path: str, stored: np.ndarray, upright: np.ndarray, gts: Sequence[Annotation]) -> List[Annotation]:
    """``gts`` drawn on the ``stored`` pixels, moved to where they lie in ``upright``: the turn is found by
    comparing pixels (the decoder turns the same decoded array, so one turn matches exactly), not read
    from the tag, which OpenCV does not return."""
    h, w = stored.shape[:2]
    for turn, point in _TURNS:
        turned = turn(stored)
        if turned.shape == upright.shape and np.array_equal(turned, upright):
            out = []
            for g in gts:
                (ax, ay), (bx, by) = point(g.box[0], g.box[1], w, h), point(g.box[2], g.box[3], w, h)
                out.append(Annotation((min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)), g.label))
            return out
    raise EvaluateError(f"{path}: the photo as stored is no turn or mirror of it upright; its boxes cannot be"
                        f" moved\n  fix: re-save the photo upright (most viewers can) and draw its boxes there")


def read_annotated_photo(path: str, cfg: Any, gts: Sequence[Annotation],
                         boxes_on: str = "upright") -> Tuple[np.ndarray, List[Annotation]]:
    """The photo upright by its EXIF orientation (:func:`read_photo`: what a camera would show the agent)
    and its annotated faces in that frame. ``boxes_on``: ``upright`` when the boxes were drawn on the photo
    as viewers show it (most labelling tools), ``stored`` when on its stored pixels (labelImg ignores the
    tag): those are turned with the photo, so a phone photo's faces are scored upright either way.

    Boxes that leave the frame they claim but fit the other one were drawn on the other, which would score
    every face as missed without a word: an error naming the image and the flag. A box outside both (an
    annotator's box past the photo's edge) is scored as before."""
    upright = read_photo(path, cfg)
    stored = read_photo(path, cfg, orient=False) if boxes_on == "stored" else None
    drawn_on = upright if stored is None else stored
    if not _fits(gts, drawn_on.shape):
        other = read_photo(path, cfg, orient=False) if stored is None else upright
        if _fits(gts, other.shape):
            flag, frame = ("stored", "as stored, not turned upright by its EXIF orientation") if stored is None else \
                ("upright", "turned upright by its EXIF orientation, not as stored")
            raise EvaluateError(f"{path}: its boxes fit the photo {frame} ({other.shape[1]}x{other.shape[0]} against"
                                f" {drawn_on.shape[1]}x{drawn_on.shape[0]})\n  fix: pass --boxes-on {flag} (the tool"
                                f" that drew them showed the photo so)")
    return upright, list(gts) if stored is None else _turn_boxes(path, stored, upright, gts)


__all__ = ["BOX_SLACK_PX", "EvaluateError", "UNMASKED", "match_greedy", "pct", "read_annotated_photo", "read_photo",
           "score_image", "wilson"]
