"""agent.tools.annotations.voc: Pascal VOC folders as labelImg writes them (the Kaggle face-mask set's style)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.tools.annotations import Annotation, AnnotationError, LabelMap
from agent.tools.annotations.voc import read
from tests.agent.tools.annotations.writers import write_voc

IMAGES = {"maksssksksss0.png": np.zeros((80, 100, 3), np.uint8), "maksssksksss1.png": np.zeros((60, 60, 3), np.uint8)}


def test_reads_kaggle_style_labels_as_they_are(tmp_path):
    faces = {"maksssksksss0.png": [((10, 10, 40, 50), "with_mask"), ((50, 5, 70, 30), "without_mask")],
             "maksssksksss1.png": [((1, 2, 30, 31), "mask_weared_incorrect")]}
    folder = write_voc(tmp_path / "annotations", IMAGES, faces)
    assert read(folder, LabelMap()) == {
        "maksssksksss0.png": [Annotation((10, 10, 40, 50), "mask"), Annotation((50, 5, 70, 30), "no_mask")],
        "maksssksksss1.png": [Annotation((1, 2, 30, 31), "incorrect_mask")]}


def test_image_without_objects_is_kept_empty(tmp_path):
    folder = write_voc(tmp_path / "voc", IMAGES, {})
    assert read(folder, LabelMap()) == {"maksssksksss0.png": [], "maksssksksss1.png": []}


@pytest.mark.parametrize("box, label, msg", [
    ((10, 10, 140, 50), "mask", r"maksssksksss0\.xml: object 1: box \[10.0, 10.0, 140.0, 50.0\] is outside its 100x80"),
    ((10, 10, 40, 50), "helmet", r"maksssksksss0\.xml: object 1: unknown label 'helmet'.*--label-map helmet="),
])
def test_bad_object_names_file_and_object(tmp_path, box, label, msg):
    folder = write_voc(tmp_path / "voc", {"maksssksksss0.png": IMAGES["maksssksksss0.png"]},
                       {"maksssksksss0.png": [(box, label)]})
    with pytest.raises(AnnotationError, match=msg):
        read(folder, LabelMap())


def test_unreadable_xml_names_the_file(tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><filename>")
    with pytest.raises(AnnotationError, match=r"a\.xml: not a readable VOC file"):
        read(tmp_path, LabelMap())
