"""YOLO (Ultralytics / Roboflow / labelImg export): class names, and ``labels/*.txt``.

Each label file holds ``class cx cy w h`` lines, fractions of the image; the image is the file of
the same stem in the sibling ``images/`` folder (``.../images/a.jpg`` <-> ``.../labels/a.txt``),
whose size turns fractions into pixels. An image without a label file has no face (as Ultralytics
reads it). ``--boxes`` may name the ``data.yaml`` (every split it lists is read) or one ``labels/``
folder (one split; class names from a ``data.yaml`` in it or up to two folders above). labelImg
writes the label files beside the images, with the names in ``classes.txt``: that folder is read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import yaml

from agent.pipeline.source import read_image
from agent.tools.annotations.common import Annotation, AnnotationError, Boxes, check_box, from_xywh
from agent.tools.annotations.labels import IGNORE, LabelMap

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")


def read_names(data_yaml: Path) -> Dict[int, str]:
    """Class id -> name from a ``data.yaml`` (``names`` as a list or an ``{id: name}`` mapping)."""
    data = _load_yaml(data_yaml)
    names = data.get("names")
    if isinstance(names, list):
        return dict(enumerate(str(n) for n in names))
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            pass
    raise AnnotationError(f"{data_yaml}: `names` must be a list of class names or an id: name mapping")


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AnnotationError(f"{path}: not a readable data.yaml ({exc})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: a YOLO data.yaml must be a mapping with `names` (and train/val/test)")
    return data


def sibling(folder: Path, part: str, other: str) -> Path:
    """``folder`` with its last ``part`` component replaced by ``other``: Ultralytics' rule pairing
    ``.../images/...`` with ``.../labels/...``."""
    parts = list(folder.parts)
    if part not in parts:
        raise AnnotationError(f"{folder}: a YOLO {part} folder must have a `{part}` part, with `{other}` beside it")
    i = len(parts) - 1 - parts[::-1].index(part)
    return Path(*parts[:i], other, *parts[i + 1:])


def split_dirs(data_yaml: Path) -> List[Path]:
    """The image folders a ``data.yaml`` lists under train / val / test, resolved as Ultralytics does."""
    data = _load_yaml(data_yaml)
    base = data_yaml.parent / str(data.get("path") or ".")
    found: List[Path] = []
    for key in SPLITS:
        for entry in ([data[key]] if isinstance(data.get(key), str) else data.get(key) or []):
            folder = base / entry
            if not folder.is_dir() and str(entry).startswith("../"):
                folder = base / str(entry)[3:]  # Roboflow writes ../train/images for a yaml beside train/
            if not folder.is_dir():
                raise AnnotationError(f"{data_yaml}: `{key}`: {entry} is not a folder of images (from"
                                      f" {base}); fix the entry, or give --boxes the split's labels/ folder")
            if folder not in found:
                found.append(folder)
    if not found:
        raise AnnotationError(f"{data_yaml}: no train / val / test image folder listed; give --boxes a labels/ folder")
    return found


def find_data_yaml(labels: Path) -> Optional[Path]:
    """A ``data.yaml`` in ``labels``' split folder or up to two folders above, else None."""
    for folder in (labels, *list(labels.parents)[:3]):
        for name in ("data.yaml", "data.yml"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_split(images: Path, label_folder: Path, names: Dict[int, str], labels: LabelMap) -> Boxes:
    """Annotated faces per image file name of one image folder, label files in ``label_folder``."""
    out: Boxes = {}
    for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        faces = out.setdefault(image.name, [])
        txt = label_folder / (image.stem + ".txt")
        if not txt.is_file():
            continue
        rows = [line.split() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            continue
        # the size as YOLO tools see the photo (upright by its EXIF orientation, as Ultralytics reads it)
        shape = read_image(str(image))
        if shape is None:
            raise AnnotationError(f"{image}: not a readable image (its size turns {txt.name}'s fractions into pixels)")
        height, width = shape.shape[:2]
        for n, row in enumerate(rows, start=1):
            where = f"{txt}:{n}"
            try:
                cls, cx, cy, w, h = int(row[0]), *(float(v) for v in row[1:])
            except ValueError:
                raise AnnotationError(f"{where}: expected `class cx cy w h` (an integer and four fractions)") from None
            if cls not in names:
                raise AnnotationError(f"{where}: class {cls} is not among the data.yaml names {names}")
            label = labels(names[cls], f"{where} (class {cls})")
            if label != IGNORE:
                box = from_xywh((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
                faces.append(Annotation(check_box(box, where, (width, height)), label))
    return out


def read_class_list(path: Path) -> Dict[int, str]:
    """Class id -> name from labelImg's ``classes.txt`` (one name a line, id = line number from 0)."""
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise AnnotationError(f"{path}: no class name in it")
    return dict(enumerate(names))


def read(path: Path, labels: LabelMap) -> Boxes:
    """A ``data.yaml`` (all its splits) or one folder of label files: a ``labels/`` folder with
    ``images/`` beside it, or labelImg's layout (label files beside the images, ``classes.txt``)."""
    if path.is_file():
        names = read_names(path)
        folders = [(images, sibling(images, "images", "labels")) for images in split_dirs(path)]
    else:
        data_yaml = find_data_yaml(path)
        if data_yaml is not None:
            names = read_names(data_yaml)
        elif (path / "classes.txt").is_file():
            names = read_class_list(path / "classes.txt")
        else:
            raise AnnotationError(f"{path}: no data.yaml with the class names in it or above it, nor a labelImg"
                                  f" classes.txt in it; give --boxes the data.yaml")
        beside = any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
        folders = [(path if beside else sibling(path, "labels", "images"), path)]
    out: Boxes = {}
    for folder, label_folder in folders:
        if not folder.is_dir():
            raise AnnotationError(f"{folder}: image folder not found (YOLO keeps images/ beside labels/)")
        for name, faces in read_split(folder, label_folder, names, labels).items():
            if name in out:
                raise AnnotationError(f"{folder / name}: an image of this name is in another split too; give"
                                      f" --boxes one split's labels/ folder")
            out[name] = faces
    if not out:
        raise AnnotationError(f"{path}: no image found beside the YOLO labels")
    return out
