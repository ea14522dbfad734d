"""Drawing on frames: the one place that knows the label colours and how a face is drawn.

Used by the live preview, ``maskwatch detect --annotate``, ``explain`` (colours) and the demo
(clip, alert banner, contact sheet), so a face looks the same wherever it is shown. Everything here
is BGR uint8, as the sources hand frames out.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.types import Face

Color = Tuple[int, int, int]  # BGR

# The labels of the shipped classifier's sidecar that are faces; a label a site model adds (or the
# sidecar's non-face labels) is drawn in UNLABELLED_COLOR rather than guessed at.
LABEL_COLORS = {"mask": (80, 200, 60), "incorrect_mask": (0, 170, 255), "no_mask": (40, 40, 230)}
UNLABELLED_COLOR = (200, 200, 200)
ROI_COLOR = (0, 220, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_color(label: Optional[str]) -> Color:
    """The colour a label is drawn in everywhere; grey for unclassified faces and unknown labels."""
    return LABEL_COLORS.get(label or "", UNLABELLED_COLOR)


def ink_for(color: Color) -> Color:
    """Black or white, whichever reads better on ``color`` (white on the label colours, black on grey)."""
    b, g, r = color
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 160 else (255, 255, 255)


def line_width(image: np.ndarray) -> int:
    """Line thickness for a frame: about 1 px per 400 px of its long side (at least 1), so boxes
    keep their colour through JPEG's chroma subsampling on large frames."""
    return max(1, round(max(image.shape[:2]) / 400))


def put_text(image: np.ndarray, text: str, org: Tuple[int, int], scale: float = 0.45,
             color: Color = (235, 235, 235), thick: int = 1) -> None:
    """Anti-aliased text with its baseline's left end at ``org`` (in place)."""
    cv2.putText(image, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def _clip(box: Sequence[float], w: int, h: int) -> Tuple[int, int, int, int]:
    """A box in whole pixels inside the frame (boxes of faces at the edge reach outside it)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return (min(max(x1, 0), w - 1), min(max(y1, 0), h - 1), min(max(x2, 0), w - 1), min(max(y2, 0), h - 1))


def _tag(image: np.ndarray, text: str, box: Tuple[int, int, int, int], color: Color, scale: float, thick: int) -> None:
    """A filled label tag above the box, or below it where the box touches the top of the frame."""
    h = image.shape[0]
    x1, y1, _, y2 = box
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
    ty = y1 - 4 if y1 - th - 6 >= 0 else min(y2 + th + 4, h - 3)
    cv2.rectangle(image, (x1, ty - th - 2), (x1 + tw + 2, ty + 2), color, -1)
    put_text(image, text, (x1 + 1, ty), scale, ink_for(color), thick)


def draw_overlay(image: np.ndarray, faces: Sequence[Face], roi: Optional[Sequence[float]] = None,
                 track_ids: Optional[Mapping[int, int]] = None) -> np.ndarray:
    """A copy of a BGR frame with the ROI and each face drawn: its box in the label's colour, a tag
    with ``#track label score`` (``face score`` while unclassified) and whatever keypoints it has.

    ``roi`` is ``[x1, y1, x2, y2]`` as fractions of the frame (``detector.roi``); outside it the
    frame is dimmed, since faces there are ignored. ``track_ids`` maps ``id(face)`` to the track
    that face belongs to in this frame (the demo's; the preview has no tracks).
    """
    out = image.copy()
    h, w = out.shape[:2]
    thick = line_width(out)
    scale = 0.4 * thick
    if roi is not None:
        x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(roi, (w, h, w, h)))
        inside = out[y1:y2, x1:x2].copy()
        out //= 2  # dim everything, then put the region back
        out[y1:y2, x1:x2] = inside
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), ROI_COLOR, thick)
        put_text(out, "ROI", (x1 + 3, y1 + int(14 * scale / 0.4)), scale, ROI_COLOR, thick)
    for f in faces:
        box = _clip(f.box, w, h)
        color = label_color(f.label)
        cv2.rectangle(out, box[:2], box[2:], color, thick)
        if f.keypoints is not None:
            # Generic on purpose: as many points as the detector's sidecar names, whatever they are.
            # White dots ringed in the label's colour: seen on skin, on a mask and on the background.
            for x, y in np.asarray(f.keypoints, float).reshape(-1, 2):
                if math.isfinite(x) and math.isfinite(y):
                    c = (int(round(x)), int(round(y)))
                    cv2.circle(out, c, thick + 2, color, -1, cv2.LINE_AA)
                    cv2.circle(out, c, max(1, thick - 1), (255, 255, 255), -1, cv2.LINE_AA)
        text = f"{f.label} {f.score:.2f}" if f.label else f"face {f.face_score:.2f}"
        tid = track_ids.get(id(f)) if track_ids else None
        _tag(out, text if tid is None else f"#{tid} {text}", box, color, scale, thick)
    return out


def draw_banner(image: np.ndarray, text: str, color: Color) -> int:
    """A full-width band across the top of the frame in ``color`` with ``text`` (in place); returns
    the band's height in pixels (about a fifteenth of the frame, at least 24 px)."""
    h, w = image.shape[:2]
    band = max(24, h // 15)
    cv2.rectangle(image, (0, 0), (w - 1, band - 1), color, -1)
    scale = band / 40
    thick = max(1, round(band / 20))
    (_, th), _ = cv2.getTextSize(text, FONT, scale, thick)
    put_text(image, text, (8, (band + th) // 2), scale, ink_for(color), thick)
    return band


def contact_sheet(tiles: Sequence[np.ndarray], captions: Sequence[str], colors: Sequence[Color],
                  columns: int = 3) -> np.ndarray:
    """Tiles (all the same size) in rows of ``columns``, each with its caption on a strip in its
    colour beneath; unfilled places of the last row stay dark."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    th, tw = tiles[0].shape[:2]
    strip = 26
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (th + strip), cols * tw, 3), 24, np.uint8)
    for i, (tile, caption, color) in enumerate(zip(tiles, captions, colors)):
        y, x = (i // cols) * (th + strip), (i % cols) * tw
        sheet[y : y + th, x : x + tw] = tile
        cv2.rectangle(sheet, (x, y + th), (x + tw - 1, y + th + strip - 1), color, -1)
        put_text(sheet, caption, (x + 6, y + th + strip - 8), 0.5, ink_for(color), 1)
    return sheet


__all__ = ["LABEL_COLORS", "ROI_COLOR", "UNLABELLED_COLOR", "contact_sheet", "draw_banner", "draw_overlay",
           "ink_for", "label_color", "line_width", "put_text"]
