"""COCO JSON (CVAT, Roboflow, Label Studio exports): ``images``, ``annotations``, ``categories``.

Boxes are ``bbox: [x, y, width, height]`` in pixels; an image listed without annotations has no face.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from agent.tools.annotations.common import Annotation, AnnotationError, Boxes, check_box, from_xywh
from agent.tools.annotations.labels import IGNORE, LabelMap


def _load(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"{path}: not a readable COCO JSON file ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise AnnotationError(f"{path}: a COCO file needs `images`, `annotations` and `categories` lists")
    return data


def read(path: Path, labels: LabelMap) -> Boxes:
    """Annotated faces per image file name (``file_name`` without its folders)."""
    data = _load(path)
    try:
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        images = {im["id"]: (Path(str(im["file_name"])).name, float(im["width"]), float(im["height"]))
                  for im in data["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{path}: every category needs id and name, every image id, file_name, width and"
                              f" height ({exc!r} missing or wrong)") from None
    out: Boxes = {name: [] for name, _, _ in images.values()}
    for n, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{n}]"
        try:
            name, width, height = images[ann["image_id"]]
            category = categories[ann["category_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except KeyError as exc:
            raise AnnotationError(f"{where}: {exc} is missing or names no image / category") from None
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: bbox must be [x, y, width, height] numbers") from None
        label = labels(category, f"{where} (category {ann['category_id']})")
        if label != IGNORE:
            out[name].append(Annotation(check_box(from_xywh(x, y, w, h), where, (width, height)), label))
    if not out:
        raise AnnotationError(f"{path}: no image in the COCO file")
    return out
