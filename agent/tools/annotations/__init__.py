"""Annotated face boxes from the files people have: a boxes CSV, Pascal VOC, YOLO or COCO.

One interface: each format is a module with ``read(path, labels) -> Boxes`` (image file name ->
:class:`Annotation` list, boxes in pixels, labels already the agent's through a
:class:`~agent.tools.annotations.labels.LabelMap`); :func:`load` picks the module by what the path is:

- a ``.csv`` file: ``image,xmin,ymin,xmax,ymax,label`` (:mod:`agent.tools.annotations.csv_boxes`)
- a folder of ``.xml`` files: Pascal VOC (:mod:`agent.tools.annotations.voc`)
- a ``data.yaml`` or a ``labels/`` folder of ``.txt`` files: YOLO (:mod:`agent.tools.annotations.yolo`)
- a ``.json`` file: COCO (:mod:`agent.tools.annotations.coco`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

from agent.tools.annotations import coco, csv_boxes, voc, yolo
from agent.tools.annotations.common import Annotation, AnnotationError, Boxes
from agent.tools.annotations.labels import IGNORE, LABELS, LabelError, LabelMap

Reader = Callable[[Path, LabelMap], Boxes]
READERS: Dict[str, Reader] = {"csv": csv_boxes.read, "voc": voc.read, "yolo": yolo.read, "coco": coco.read}


def format_of(path: Path) -> str:
    """Which reader ``path`` is for (a key of :data:`READERS`), from its suffix or the files in the folder."""
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file()}
        if ".xml" in suffixes:
            return "voc"
        if ".txt" in suffixes or path.name == "labels":
            return "yolo"
        raise AnnotationError(f"{path}: neither a Pascal VOC folder (.xml files) nor a YOLO labels/ folder (.txt"
                              f" files); --boxes takes a boxes .csv, a VOC folder, a YOLO data.yaml or labels/"
                              f" folder, or a COCO .json")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yolo"
    if suffix == ".json":
        return "coco"
    return "csv"  # also a missing file: the CSV reader says it is not there


def load(path: str, labels: Optional[LabelMap] = None) -> Boxes:
    """Annotated faces per image file name from ``path`` in whichever format it is."""
    p = Path(path)
    return READERS[format_of(p)](p, labels or LabelMap())


__all__ = ["Annotation", "AnnotationError", "Boxes", "IGNORE", "LABELS", "LabelError", "LabelMap", "READERS",
           "Reader", "format_of", "load"]
