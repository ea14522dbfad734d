"""Pascal VOC: a folder of ``.xml`` files as labelImg, CVAT and Roboflow write them, one per image."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from agent.tools.annotations.common import Annotation, AnnotationError, Boxes, check_box
from agent.tools.annotations.labels import IGNORE, LabelMap


def read(folder: Path, labels: LabelMap) -> Boxes:
    """Annotated faces per image file name (``<filename>``); every file's image counts, boxes or not."""
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: VOC folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml")
    if not files:
        raise AnnotationError(f"{folder}: no .xml file in the VOC folder")
    out: Boxes = {}
    for f in files:
        try:
            root = ET.parse(f).getroot()
            name = (root.findtext("filename") or "").strip()
            width = float(root.findtext("size/width") or "nan")
            height = float(root.findtext("size/height") or "nan")
        except (ET.ParseError, ValueError) as exc:
            raise AnnotationError(f"{f}: not a readable VOC file ({exc})") from None
        if not name or not (width > 0 and height > 0):
            raise AnnotationError(f"{f}: needs <filename> and a positive <size><width>/<height>")
        faces = out.setdefault(Path(name).name, [])
        for i, obj in enumerate(root.iter("object"), start=1):
            where = f"{f}: object {i}"
            try:
                box = tuple(float(obj.findtext(f"bndbox/{k}") or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                raise AnnotationError(f"{where}: bndbox xmin,ymin,xmax,ymax must be numbers") from None
            if any(v != v for v in box):
                raise AnnotationError(f"{where}: bndbox needs xmin, ymin, xmax and ymax")
            label = labels(obj.findtext("name") or "", where)
            if label != IGNORE:
                faces.append(Annotation(check_box(box, where, (width, height)), label))  # type: ignore[arg-type]
    return out
