"""agent.tools.annotations: the format is picked from what the path is; every format reads the same faces alike."""

from __future__ import annotations

import numpy as np
import pytest

from agent.tools.annotations import AnnotationError, format_of, load
from tests.agent.tools.annotations.writers import write_all

IMAGES = {"a.jpg": np.zeros((480, 640, 3), np.uint8), "b.jpg": np.zeros((300, 400, 3), np.uint8)}
FACES = {"a.jpg": [((100, 50, 164, 130), "mask"), ((300.5, 200, 341, 251.25), "no_mask")],
         "b.jpg": [((10, 20, 30, 50), "incorrect_mask")]}


def test_four_formats_read_the_same_faces(tmp_path):
    paths = write_all(tmp_path, IMAGES, FACES)
    read = {fmt: load(str(p)) for fmt, p in paths.items()}
    assert {fmt: format_of(p) for fmt, p in paths.items()} == {f: f for f in paths}
    assert format_of(tmp_path / "yolo" / "valid" / "labels") == "yolo"
    assert read["csv"] == read["voc"] == read["yolo"] == read["coco"]
    assert sorted(read["csv"]) == ["a.jpg", "b.jpg"] and len(read["csv"]["a.jpg"]) == 2


def test_folder_of_neither_format_says_what_boxes_takes(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(AnnotationError, match="--boxes takes a boxes .csv, a VOC folder"):
        load(str(tmp_path))
