"""agent.tools.annotations.coco: COCO JSON (images, annotations, categories; bbox x, y, w, h)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.tools.annotations import Annotation, AnnotationError, LabelMap
from agent.tools.annotations.coco import read
from tests.agent.tools.annotations.writers import write_coco

IMAGES = {"a.jpg": np.zeros((480, 640, 3), np.uint8), "empty.jpg": np.zeros((10, 10, 3), np.uint8)}


def test_reads_boxes_by_file_name_and_keeps_images_without_boxes(tmp_path):
    path = write_coco(tmp_path / "c.json", IMAGES, {"a.jpg": [((10.3, 5, 30.7, 45.5), "masked"), ((50, 50, 90, 99), "person")]},
                      ["masked", "person"])
    assert read(path, LabelMap.parse(["person=no_mask"])) == {
        "a.jpg": [Annotation((10.3, 5, 30.7, 45.5), "mask"), Annotation((50, 50, 90, 99), "no_mask")], "empty.jpg": []}


def test_unknown_category_names_entry_and_option(tmp_path):
    path = write_coco(tmp_path / "c.json", IMAGES, {"a.jpg": [((10, 5, 30, 45), "hat")]}, ["hat"])
    with pytest.raises(AnnotationError, match=r"c\.json: annotations\[0\] \(category 1\): unknown label 'hat'.*--label-map"):
        read(path, LabelMap())


@pytest.mark.parametrize("data, msg", [
    ({"images": []}, "needs `images`, `annotations` and `categories` lists"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}], "categories": [{"id": 1, "name": "mask"}],
      "annotations": [{"image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]}]}, r"annotations\[0\]: 2 is missing"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}], "categories": [{"id": 1, "name": "mask"}],
      "annotations": [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 2]}]}, r"annotations\[0\]: box .* outside its 9x9"),
])
def test_malformed_file_names_what_is_wrong(tmp_path, data, msg):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=msg):
        read(path, LabelMap())
