"""agent.pipeline.detectors.yunet: grid decoding and NMS, and the shipped YuNet model against OpenCV's
``cv2.FaceDetectorYN`` running the published ONNX file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.pipeline.detect import DetectorConfig, FaceDetector, letterbox
from agent.pipeline.detectors import decoder_for, yunet
from agent.model import ModelError

REPO = Path(__file__).resolve().parents[4]
ONNX = REPO.parent / "shared" / "models" / "yunet" / "yunet_n_dynamic.onnx"
SHIPPED = REPO / "models" / "face_detector_yunet.json"


def decoding(**over):
    d = {"type": "yunet", "strides": [8, 16, 32], "num_keypoints": 5, "keypoint_names": list(yunet.KEYPOINT_NAMES),
         "nms": {"iou_threshold": 0.45}, "default_min_score": 0.5}
    d.update(over)
    return d


def identity(_name, values):
    return np.asarray(values, np.float32)


def raw_with(cells, n=1680):
    """Raw outputs with the given {row: (cls, obj, bbox4, kps10)} filled, the rest zero scores."""
    scores, boxes, kps = np.zeros((1, n, 2)), np.zeros((1, n, 4)), np.zeros((1, n, 10))
    for i, (c, o, b, k) in cells.items():
        scores[0, i], boxes[0, i], kps[0, i] = (c, o), b, k
    return {"scores": scores, "boxes": boxes, "keypoints": kps}


def test_grid_is_row_major_per_stride_in_stride_order():
    cells, steps = yunet.grid(64, 32, [8, 16, 32])
    assert len(cells) == 8 * 4 + 4 * 2 + 2 * 1
    assert cells[:9].tolist()[:3] == [[0, 0], [1, 0], [2, 0]] and cells[8].tolist() == [0, 1]
    assert steps[0] == 8 and steps[32] == 16 and steps[-1] == 32 and cells[-1].tolist() == [1, 0]


def test_decode_follows_the_opencv_formula():
    dec = yunet.Decoder(decoding(), (320, 256))
    row = 3 * 40 + 5  # stride 8, column 5, row 3
    kps = np.arange(10) / 10.0
    boxes, scores, points = dec.decode(identity, raw_with({row: (0.81, 1.0, (0.5, 0.25, math.log(4), math.log(2)), kps)}),
                                       0.5, 0.45)
    assert scores.tolist() == pytest.approx([0.9])
    cx, cy, w, h = (5 + 0.5) * 8, (3 + 0.25) * 8, 4 * 8, 2 * 8
    assert boxes[0].tolist() == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    want = [[(5 + kps[2 * k]) * 8, (3 + kps[2 * k + 1]) * 8] for k in range(5)]
    np.testing.assert_allclose(points[0], want, atol=1e-9)


def test_decode_keeps_the_best_of_overlapping_faces_and_drops_low_scores():
    dec = yunet.Decoder(decoding(), (320, 256))
    box = (0.0, 0.0, math.log(4), math.log(4))
    raw = raw_with({100: (0.64, 1.0, box, np.zeros(10)), 101: (0.81, 1.0, box, np.zeros(10)),  # 8 px apart, 32 px boxes
                    300: (1.0, 1.0, box, np.zeros(10)), 500: (0.2, 0.2, box, np.zeros(10))})
    boxes, scores, _ = dec.decode(identity, raw, 0.5, 0.45)
    assert scores.tolist() == pytest.approx([1.0, 0.9])  # 100 merged into 101; 500 below 0.5
    assert dec.decode(identity, raw_with({}), 0.5, 0.45)[0].shape == (0, 4)


def test_weighted_nms_averages_the_overlapping_boxes_where_the_sidecar_asks():
    # cells 100 and 101: stride 8, columns 20 and 21 of row 2; boxes 40x40 and 24x32 (IoU 0.48)
    wide, narrow = (0.0, 0.0, math.log(5), math.log(5)), (0.0, 0.0, math.log(3), math.log(4))
    raw = raw_with({100: (0.81, 1.0, wide, np.zeros(10)), 101: (0.64, 1.0, narrow, np.zeros(10))})
    hard = yunet.Decoder(decoding(), (320, 256)).decode(identity, raw, 0.5, 0.45)
    boxes, scores, _ = yunet.Decoder(decoding(nms={"method": "weighted", "iou_threshold": 0.45}),
                                     (320, 256)).decode(identity, raw, 0.5, 0.45)
    assert scores.tolist() == pytest.approx([0.9]) and hard[1].tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(hard[0][0], [140, -4, 180, 36], atol=1e-4)
    np.testing.assert_allclose(boxes[0], (0.9 * np.array([140, -4, 180, 36]) + 0.8 * np.array([156, 0, 180, 32])) / 1.7,
                               atol=1e-3)


@pytest.mark.parametrize("change,words", [
    ({"strides": None}, "strides"),
    ({"keypoint_names": ["a"]}, "num_keypoints"),
    ({"type": "retinaface"}, "retinaface"),
    ({"nms": {"method": "soft", "iou_threshold": 0.45}}, "nms.method.*hard, weighted.*'soft'"),
])
def test_bad_decoding_is_named(change, words):
    d = decoding(**change)
    if d["strides"] is None:
        del d["strides"]
    with pytest.raises((KeyError, ValueError), match=words):
        decoder_for(d, (320, 256))


def test_input_not_a_multiple_of_32_is_refused():
    with pytest.raises(ValueError, match="multiples of 32.*320x256"):
        yunet.Decoder(decoding(), (320, 240))


def _shipped_copy(tmp_path, change):
    meta = json.loads(SHIPPED.read_text())
    change(meta)
    (tmp_path / meta["model_file"]).write_bytes((SHIPPED.parent / meta["model_file"]).read_bytes())
    out = tmp_path / SHIPPED.name
    out.write_text(json.dumps(meta))
    return out


needs_model = pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} not built yet (maskwatch-convert yunet)")


@needs_model
@pytest.mark.parametrize("change,words", [
    (lambda m: m["decoding"].pop("nms"), "missing key `decoding.nms`"),
    (lambda m: m["decoding"].update(type="ssd"), "'ssd' is not a known detector family"),
    (lambda m: m["outputs"].pop("keypoints"), "model's outputs|lacks keypoints"),
])
def test_a_broken_sidecar_names_the_file_and_field(tmp_path, change, words):
    side = _shipped_copy(tmp_path, change)
    with pytest.raises(ModelError, match=words) as err:
        FaceDetector(DetectorConfig(model=str(side)))
    assert str(side) in str(err.value) or str(tmp_path) in str(err.value)


@needs_model
def test_shipped_model_finds_the_astronaut_with_level_eyes(astronaut, astronaut_face):
    det = FaceDetector(DetectorConfig(model=str(SHIPPED)))
    assert det.keypoint_names == list(yunet.KEYPOINT_NAMES)
    faces = det.detect(astronaut)
    assert len(faces) >= 1
    best = faces[0]
    x1, y1, x2, y2 = best.box
    fx1, fy1, fx2, fy2 = astronaut_face
    inter = max(0, min(x2, fx2) - max(x1, fx1)) * max(0, min(y2, fy2) - max(y1, fy1))
    assert inter / ((x2 - x1) * (y2 - y1) + (fx2 - fx1) * (fy2 - fy1) - inter) > 0.5
    eyes = best.keypoints[:2]
    assert eyes[0][0] < eyes[1][0]  # the person's right eye is on the image's left
    nose, mouth = best.keypoints[2], best.keypoints[3:5].mean(axis=0)
    assert eyes[:, 1].max() < nose[1] < mouth[1]


@needs_model
@pytest.mark.skipif(not ONNX.is_file(), reason=f"{ONNX} not there (../shared)")
def test_shipped_int8_model_finds_what_opencv_finds_with_the_onnx_file(astronaut):
    """Same frames through the agent (int8, box_adjust undone) and cv2.FaceDetectorYN (float ONNX)."""
    det = FaceDetector(DetectorConfig(model=str(SHIPPED), min_face_px=0))
    det.box_adjust = (0.0, 0.0, 1.0, 1.0)
    frames = [astronaut, cv2.resize(astronaut, (320, 256)), cv2.flip(astronaut, 1)]
    for frame in frames:
        ours = det.detect(frame)
        x, lb = letterbox(frame, det.width, det.height)
        ref = cv2.FaceDetectorYN.create(str(ONNX), "", (det.width, det.height), 0.5, 0.45, 5000).detect(x)[1]
        ref = np.zeros((0, 15)) if ref is None else ref
        assert len(ours) == len(ref)
        for face, r in zip(sorted(ours, key=lambda f: f.box[0]), sorted(ref, key=lambda r: r[0])):
            rb = lb.to_frame(np.array([[r[0], r[1]], [r[0] + r[2], r[1] + r[3]]]))
            side = max(face.width, face.height)
            # the shipped model is fine-tuned toward the annotators' boxes (and int8): its box edges
            # move a few % of the face from the published model's
            assert np.abs(np.array(face.box).reshape(2, 2) - rb).max() < 0.08 * side
            assert abs(face.face_score - r[14]) < 0.05
