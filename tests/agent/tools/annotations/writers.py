"""Write one set of annotated faces as a boxes CSV, Pascal VOC (labelImg style), YOLO and COCO, as the
tools that export them do, so the readers and ``maskwatch evaluate`` can be tried on each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

Face = Tuple[Tuple[float, float, float, float], str]  # (x1, y1, x2, y2) pixels, label


def _spelled(label: str, spell: Optional[Mapping[str, str]]) -> str:
    return (spell or {}).get(label, label)


def write_csv(path: Path, faces: Mapping[str, Sequence[Face]], spell: Optional[Mapping[str, str]] = None) -> Path:
    rows = [f"{name},{b[0]:g},{b[1]:g},{b[2]:g},{b[3]:g},{_spelled(lab, spell)}"
            for name, fs in faces.items() for b, lab in fs]
    path.write_text("image,xmin,ymin,xmax,ymax,label\n" + "\n".join(rows) + "\n")
    return path


def write_voc(folder: Path, images: Mapping[str, np.ndarray], faces: Mapping[str, Sequence[Face]],
              spell: Optional[Mapping[str, str]] = None) -> Path:
    """One labelImg-style XML per image (folder, path, source, pose/truncated/difficult as labelImg writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        h, w = image.shape[:2]
        objects = "".join(
            f"<object><name>{_spelled(lab, spell)}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<occluded>0</occluded><difficult>0</difficult><bndbox><xmin>{b[0]:g}</xmin><ymin>{b[1]:g}</ymin>"
            f"<xmax>{b[2]:g}</xmax><ymax>{b[3]:g}</ymax></bndbox></object>" for b, lab in faces.get(name, []))
        (folder / (Path(name).stem + ".xml")).write_text(
            f"<annotation><folder>images</folder><filename>{name}</filename><path>/home/me/images/{name}</path>"
            f"<source><database>Unknown</database></source><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size><segmented>0</segmented>{objects}</annotation>\n")
    return folder


def write_yolo(root: Path, images: Mapping[str, np.ndarray], faces: Mapping[str, Sequence[Face]],
               names: List[str], split: str = "valid") -> Path:
    """A Roboflow-style export: ``data.yaml`` (names list, ``val: ../valid/images``), ``valid/images``,
    ``valid/labels`` with 6-decimal fractions; returns the data.yaml."""
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "labels").mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        cv2.imwrite(str(root / split / "images" / name), image)
        h, w = image.shape[:2]
        lines = [f"{names.index(lab)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f}"
                 f" {(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}" for b, lab in faces.get(name, [])]
        (root / split / "labels" / (Path(name).stem + ".txt")).write_text("\n".join(lines) + "\n" if lines else "")
    data = root / "data.yaml"
    data.write_text(f"val: ../{split}/images\nnc: {len(names)}\nnames: {json.dumps(names)}\n")
    return data


def write_coco(path: Path, images: Mapping[str, np.ndarray], faces: Mapping[str, Sequence[Face]],
               names: List[str]) -> Path:
    """COCO as CVAT exports it: category ids from 1, ``bbox`` [x, y, width, height]."""
    ims, anns = [], []
    for i, (name, image) in enumerate(images.items(), start=1):
        h, w = image.shape[:2]
        ims.append({"id": i, "file_name": f"images/{name}", "width": w, "height": h})
        for b, lab in faces.get(name, []):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": names.index(lab) + 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    path.write_text(json.dumps({"images": ims, "annotations": anns,
                                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}))
    return path


def write_all(root: Path, images: Mapping[str, np.ndarray], faces: Mapping[str, Sequence[Face]]) -> Dict[str, Path]:
    """The same faces in the four formats, each spelling the labels as a different public set does."""
    yolo_names = ["Mask", "No-Mask", "Incorrect Mask"]
    yolo_spell = dict(zip(("mask", "no_mask", "incorrect_mask"), yolo_names))
    coco_names = ["masked", "not_masked", "mask_worn_incorrectly"]
    coco_spell = dict(zip(("mask", "no_mask", "incorrect_mask"), coco_names))
    kaggle = {"mask": "with_mask", "no_mask": "without_mask", "incorrect_mask": "mask_weared_incorrect"}
    return {
        "csv": write_csv(root / "boxes.csv", faces),
        "voc": write_voc(root / "voc", images, faces, kaggle),
        "yolo": write_yolo(root / "yolo", images, {n: [(b, yolo_spell[lab]) for b, lab in fs] for n, fs in faces.items()},
                           yolo_names),
        "coco": write_coco(root / "coco.json", images, {n: [(b, coco_spell[lab]) for b, lab in fs] for n, fs in faces.items()},
                           coco_names),
    }
