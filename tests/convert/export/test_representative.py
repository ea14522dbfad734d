"""convert.export.representative: calibration inputs preprocessed as the agent feeds the model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from convert.errors import ConvertError
from convert.export.representative import load_source_model, representative_arrays

SIDE = {
    "kind": "classifier",
    "input": {"height": 8, "width": 10, "channels": 3, "color": "RGB",
              "normalization": {"mean": [100.0, 0.0, 0.0], "std": [2.0, 1.0, 1.0]}},
    "crop": {"scale": 1.0, "align": "none"},
}


def test_folder_images_resized_normalized_rgb(tmp_path):
    img = np.zeros((16, 20, 3), np.uint8)
    img[..., 2] = 200  # red in BGR
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "notes.txt").write_text("not an image")
    cal = representative_arrays(SIDE, images=tmp_path)
    assert len(cal.arrays) == 1
    x = cal.arrays[0]
    assert x.shape == (1, 8, 10, 3) and x.dtype == np.float32
    assert np.allclose(x[0, 4, 5], [(200 - 100) / 2, 0, 0])  # R first, normalized


def test_boxes_csv_cuts_faces_with_agent_crop(tmp_path):
    (tmp_path / "images").mkdir()
    img = np.zeros((50, 50, 3), np.uint8)
    img[10:30, 10:30] = 255
    cv2.imwrite(str(tmp_path / "images" / "s.png"), img)
    csv = tmp_path / "boxes.csv"
    csv.write_text("image,xmin,ymin,xmax,ymax,label\ns.png,10,10,30,30,mask\n")
    cal = representative_arrays(SIDE, boxes_csv=csv)
    assert len(cal.arrays) == 1 and "crop_face" in cal.description
    assert cal.arrays[0][0, :, :, 1].min() == 255.0  # the crop is the white square, fully


def test_empty_or_missing_sources(tmp_path):
    with pytest.raises(ConvertError, match="empty"):
        representative_arrays(SIDE, images=tmp_path)
    with pytest.raises(ConvertError, match="not found"):
        representative_arrays(SIDE, images=tmp_path / "nope")
    bad = tmp_path / "b.csv"
    bad.write_text("image,x\ns.png,1\n")
    with pytest.raises(ConvertError, match="columns"):
        representative_arrays(SIDE, boxes_csv=bad)


@pytest.mark.tf
def test_savedmodel_folder_loads_as_keras(tmp_path):
    keras = pytest.importorskip("keras")
    inp = keras.Input((8, 8, 3), batch_size=1)
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp))).export(str(tmp_path / "sm"), verbose=False)
    model = load_source_model(tmp_path / "sm")
    assert tuple(model.outputs[0].shape) == (1, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match="saved_model.pb missing"):
        load_source_model(tmp_path / "empty")
