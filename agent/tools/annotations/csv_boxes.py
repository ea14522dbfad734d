"""Boxes CSV: ``image,xmin,ymin,xmax,ymax,label`` in pixels, one face a row (``image``: a file name)."""

from __future__ import annotations

import csv
from pathlib import Path

from agent.tools.annotations.common import Annotation, AnnotationError, Boxes, check_box
from agent.tools.annotations.labels import IGNORE, LabelMap

COLUMNS = ["image", "xmin", "ymin", "xmax", "ymax", "label"]


def read(path: Path, labels: LabelMap) -> Boxes:
    """Annotated faces per image file name."""
    if not path.is_file():
        raise AnnotationError(f"{path}: boxes file not found")
    out: Boxes = {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or [h.strip() for h in header] != COLUMNS:
            raise AnnotationError(f"{path}:1: header must be {','.join(COLUMNS)}, got {','.join(header or [])!r}")
        for n, row in enumerate(rows, start=2):
            where = f"{path}:{n}"
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise AnnotationError(f"{where}: expected {len(COLUMNS)} fields, got {len(row)}")
            try:
                box = tuple(float(v) for v in row[1:5])
            except ValueError:
                raise AnnotationError(f"{where}: xmin,ymin,xmax,ymax must be numbers, got {row[1:5]}") from None
            if not row[0].strip():
                raise AnnotationError(f"{where}: empty image name")
            label = labels(row[5], where)
            faces = out.setdefault(row[0].strip(), [])
            if label != IGNORE:
                faces.append(Annotation(check_box(box, where), label))  # type: ignore[arg-type]
    if not out:
        raise AnnotationError(f"{path}: no box in the file")
    return out
