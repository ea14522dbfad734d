"""agent.tools.annotations.csv_boxes: the boxes CSV reader."""

from __future__ import annotations

import re

import pytest

from agent.tools.annotations import Annotation, AnnotationError, LabelMap
from agent.tools.annotations.csv_boxes import read


def test_reads_boxes_with_synonyms_and_ignored_labels(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("image,xmin,ymin,xmax,ymax,label\na.jpg,1,2,11,22,no_mask\na.jpg,5,5,9,9,with_mask\nb.jpg,1,1,5,5,head\n")
    assert read(p, LabelMap.parse(["ignore=head"])) == {
        "a.jpg": [Annotation((1, 2, 11, 22), "no_mask"), Annotation((5, 5, 9, 9), "mask")], "b.jpg": []}


@pytest.mark.parametrize("text, where", [
    ("image,x,y\n", ":1: header"),
    ("image,xmin,ymin,xmax,ymax,label\na.jpg,1,2,3\n", ":2: expected 6 fields"),
    ("image,xmin,ymin,xmax,ymax,label\na.jpg,1,2,3,4,mask\na.jpg,1,2,x,4,mask\n", ":3: xmin,ymin,xmax,ymax must be numbers"),
    ("image,xmin,ymin,xmax,ymax,label\na.jpg,1,2,3,4,hat\n", ":2: unknown label 'hat'"),
    ("image,xmin,ymin,xmax,ymax,label\na.jpg,5,2,3,4,mask\n", ":2: empty box"),
    ("image,xmin,ymin,xmax,ymax,label\n", ": no box in the file"),
])
def test_malformed_csv_names_the_line(tmp_path, text, where):
    p = tmp_path / "b.csv"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=re.escape(str(p) + where)):
        read(p, LabelMap())
