"""What every annotation reader returns, and the checks they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from agent.types import Box


class AnnotationError(ValueError):
    """Annotations that cannot be read; the message names the file (and line, object or entry) and the fix."""


@dataclass(frozen=True)
class Annotation:
    """One annotated face: its box in pixels of the original image and its label (one of ``LABELS``)."""

    box: Box
    label: str

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


Boxes = Dict[str, List[Annotation]]  # image file name (no folder) -> annotated faces


def check_box(box: Box, where: str, size: Optional[tuple] = None) -> Box:
    """``box`` if it is non-empty (and inside a ``(width, height)`` image when ``size`` is given)."""
    if not (box[2] > box[0] and box[3] > box[1]):
        raise AnnotationError(f"{where}: empty box {list(box)} (need xmax > xmin and ymax > ymin)")
    if size is not None:
        width, height = size
        if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
            raise AnnotationError(f"{where}: box {list(box)} is outside its {width:g}x{height:g} image")
    return box


def from_xywh(x: float, y: float, w: float, h: float) -> Box:
    """x1, y1, x2, y2 from a corner and a size, rounded to 1/100 px.

    Formats that store a size (COCO) or fractions of the image (YOLO, usually 6 decimals) give back
    pixel edges with noise (10.3 + 20.4 = 30.700000000000003; 0.123457 * 800 px): rounding far
    below a pixel makes the same boxes read identically whatever format they came in.
    """
    return (round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2))


__all__ = ["Annotation", "AnnotationError", "Boxes", "check_box", "from_xywh"]
