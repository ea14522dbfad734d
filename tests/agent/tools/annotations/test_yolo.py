"""agent.tools.annotations.yolo: data.yaml + labels/*.txt with images/ beside, fractions -> pixels."""

from __future__ import annotations

import numpy as np
import pytest

from agent.tools.annotations import Annotation, AnnotationError, LabelMap
from agent.tools.annotations.yolo import read
from tests.agent.tools.annotations.writers import write_yolo

IMAGES = {"a.jpg": np.zeros((480, 640, 3), np.uint8), "b.png": np.zeros((100, 200, 3), np.uint8)}
FACES = {"a.jpg": [((100, 50, 164, 130), "Mask"), ((300, 200, 341, 251), "No-Mask")],
         "b.png": [((10, 20, 30, 50), "Incorrect Mask")]}
NAMES = ["Mask", "No-Mask", "Incorrect Mask"]
EXPECTED = {"a.jpg": [Annotation((100, 50, 164, 130), "mask"), Annotation((300, 200, 341, 251), "no_mask")],
            "b.png": [Annotation((10, 20, 30, 50), "incorrect_mask")]}


def test_data_yaml_and_labels_folder_give_pixel_boxes(tmp_path):
    data = write_yolo(tmp_path / "set", IMAGES, FACES, NAMES)
    assert read(data, LabelMap()) == EXPECTED
    assert read(tmp_path / "set" / "valid" / "labels", LabelMap()) == EXPECTED  # the yaml found above it


def test_names_as_mapping_and_image_without_label_file(tmp_path):
    data = write_yolo(tmp_path / "set", IMAGES, FACES, NAMES)
    data.write_text("path: .\nval: valid/images\nnames:\n  0: Mask\n  1: No-Mask\n  2: Incorrect Mask\n")
    (tmp_path / "set" / "valid" / "labels" / "b.txt").unlink()
    assert read(data, LabelMap()) == {**EXPECTED, "b.png": []}


def test_unknown_class_id_and_bad_line_name_the_line(tmp_path):
    data = write_yolo(tmp_path / "set", IMAGES, FACES, NAMES)
    txt = tmp_path / "set" / "valid" / "labels" / "b.txt"
    txt.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match=r"b\.txt:1: class 7 is not among the data.yaml names"):
        read(data, LabelMap())
    txt.write_text("0 0.5 0.5\n")
    with pytest.raises(AnnotationError, match=r"b\.txt:1: expected `class cx cy w h`"):
        read(data, LabelMap())


def test_missing_split_folder_names_the_key(tmp_path):
    data = write_yolo(tmp_path / "set", IMAGES, FACES, NAMES)
    data.write_text("train: ../train/images\nnames: [Mask]\n")
    with pytest.raises(AnnotationError, match=r"data\.yaml: `train`: ../train/images is not a folder of images"):
        read(data, LabelMap())


def test_labels_folder_without_data_yaml_says_so(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match="no data.yaml with the class names"):
        read(tmp_path / "labels", LabelMap())


def test_labelimg_layout_labels_beside_images_with_classes_txt(tmp_path):
    write_yolo(tmp_path / "set", IMAGES, FACES, NAMES)
    folder = tmp_path / "photos"  # labelImg: a.jpg, a.txt, ... and classes.txt in one folder
    folder.mkdir()
    for sub in ("images", "labels"):
        for p in (tmp_path / "set" / "valid" / sub).iterdir():
            p.rename(folder / p.name)
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")
    assert read(folder, LabelMap()) == EXPECTED


def test_fractions_are_of_the_photo_as_seen_upright(tmp_path):
    """YOLO tools (Ultralytics) label a phone photo upright by its EXIF orientation, so its fractions are
    of the turned size: 640x480 seen, stored 480x640 with orientation 6."""
    from tests.exif import oriented_jpeg

    data = write_yolo(tmp_path / "set", IMAGES, FACES, NAMES)
    (tmp_path / "set" / "valid" / "images" / "a.jpg").write_bytes(oriented_jpeg(IMAGES["a.jpg"], 6))
    assert read(data, LabelMap()) == EXPECTED
