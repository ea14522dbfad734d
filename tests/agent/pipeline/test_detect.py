"""Face detection on real images: letterbox mapping, box_adjust, filters, odd frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from agent.pipeline.detect import DetectorConfig, FaceDetector, Letterbox, LetterboxPlan, clip_box, letterbox
from agent.pipeline.boxes import iou


@pytest.fixture(scope="module")
def detector(detector_json):
    return FaceDetector(DetectorConfig(model=str(detector_json)))


def test_letterbox_maps_back():
    lb = Letterbox(scale_x=0.3, scale_y=0.3, pad_x=0.0, pad_y=24.0)
    pts = np.array([[0.0, 24.0], [192.0, 168.0]])
    np.testing.assert_allclose(lb.to_frame(pts), [[0, 0], [640, 480]])


@pytest.mark.parametrize("shape", [(480, 640), (1080, 1920), (640, 360), (100, 150)])
def test_letterbox_geometry(shape):
    """A white square lands where the letterbox says, and maps back to where it was."""
    h, w = shape
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = w // 4, h // 3, w // 2, h // 2
    img[y1:y2, x1:x2] = 255
    canvas, lb = letterbox(img, 192, 192)
    assert canvas.shape == (192, 192, 3) and lb.scale_x == lb.scale_y
    ys, xs = np.nonzero(canvas[..., 0] > 127)
    back = lb.to_frame(np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], float))
    tol = 1.5 / lb.scale_x
    np.testing.assert_allclose(back.ravel(), [x1, y1, x2, y2], atol=tol)
    # Black padding on the short side, image centred.
    if w > h:
        assert canvas[: int(lb.pad_y) - 1].max() == 0 and canvas[192 - int(lb.pad_y) + 1 :].max() == 0
    stretched, lb2 = letterbox(img, 192, 192, keep_aspect=False)
    # stretched: edge to edge (pixel centres: pad = (scale - 1) / 2), the square still there
    assert (lb2.scale_x, lb2.scale_y) == (192 / w, 192 / h) and stretched[..., 0].max() == 255
    assert np.allclose([lb2.pad_x, lb2.pad_y], [(lb2.scale_x - 1) / 2, (lb2.scale_y - 1) / 2])


@pytest.mark.parametrize("w,h,size", [(100, 60, (192, 192)), (1000, 90, (320, 256)), (90, 100, (320, 192)),
                                        (2000, 1100, (320, 256)), (4001, 1000, (320, 256))])
def test_letterbox_geometry_is_exact(w, h, size):
    """A float ramp (value = frame column, or row) read back at every input pixel centre gives the
    frame coordinate the letterbox says: no half-pixel shift, with or without halving first."""
    cols = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :, None], (h, w, 3))
    rows = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None, None], (h, w, 3))
    plan = LetterboxPlan.of(w, h, *size)
    (nw, nh), (ox, oy) = plan.size, plan.offset
    for ramp, axis in ((cols, 0), (rows, 1)):
        canvas, lb = letterbox(np.ascontiguousarray(ramp), *size)
        assert canvas[:oy].max(initial=0) == 0 and canvas[oy + nh:].max(initial=0) == 0
        ys, xs = np.mgrid[oy + 2 : oy + nh - 2, ox + 2 : ox + nw - 2]  # away from the edges' clamping
        frame = lb.to_frame(np.stack([xs, ys], -1).astype(float))[..., axis]
        assert np.abs(canvas[ys, xs, 0] - frame).max() < 0.02 * max(1.0, 1 / lb.scale_x), axis


def test_clip_box():
    assert clip_box((-5, 10, 700, 500), 640, 480) == (0, 10, 640, 480)


def test_finds_the_astronaut(detector, astronaut, astronaut_face):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert iou(f.box, astronaut_face) > 0.6, f.box
    assert f.face_score >= detector.min_score
    assert f.keypoints.shape == (len(detector.keypoint_names), 2)
    right_eye, left_eye = f.keypoints[0], f.keypoints[1]
    # The subject's right eye appears on the image's left.
    assert right_eye[0] < left_eye[0]
    assert f.box[0] < right_eye[0] < f.box[2] and f.box[1] < right_eye[1] < f.box[3]


@pytest.mark.parametrize("shape", [(480, 640), (640, 360), (300, 1200)])
def test_boxes_follow_the_face_in_any_frame_shape(detector, astronaut, astronaut_face, shape):
    """The face pasted at a known place in frames of different aspect: letterbox undone correctly."""
    h, w = shape
    frame = np.full((h, w, 3), 90, np.uint8)
    face = cv2.resize(astronaut[20:240, 120:330], None, fx=0.8, fy=0.8)
    y, x = (h - face.shape[0]) // 2, (w - face.shape[1]) // 3
    frame[y : y + face.shape[0], x : x + face.shape[1]] = face
    expected = ((astronaut_face[0] - 120) * 0.8 + x, (astronaut_face[1] - 20) * 0.8 + y,
                (astronaut_face[2] - 120) * 0.8 + x, (astronaut_face[3] - 20) * 0.8 + y)
    faces = detector.detect(frame)
    assert len(faces) == 1, faces
    # Geometry, not box style: in the 300x1200 frame the face is ~14 px at the detector input,
    # where a fine-tuned model draws a tighter box than this hand-drawn reference; from 20 px up
    # (the 640x480 and 360x640 frames) the face must also be *found* as the scorer counts it,
    # IoU >= 0.5 (the synthetic-mask detector draws 0.58 on the 360x640 frame's 28 px face).
    # A letterbox undone wrongly (scale, padding, axis) moves the centre by tens of pixels or
    # scales the box by 4:3 or more.
    box, size = np.asarray(faces[0].box), np.array([expected[2] - expected[0], expected[3] - expected[1]])
    centre_err = np.abs((box[:2] + box[2:]) / 2 - (np.asarray(expected[:2]) + expected[2:]) / 2) / size
    ratio = (box[2:] - box[:2]) / size
    assert np.all(centre_err < 0.1) and np.all((ratio > 0.65) & (ratio < 1.5)), (faces, expected)
    if size.max() * min(detector.width / w, detector.height / h) >= 20:  # a face >= 20 px at the input
        assert iou(faces[0].box, expected) >= 0.5, (faces, expected)


def test_box_adjust_from_sidecar(detector_json, astronaut, copy_model):
    base = FaceDetector(DetectorConfig(model=str(detector_json))).detect(astronaut)[0]
    side = copy_model(detector_json,
                      lambda m: m["decoding"].update(box_adjust={"dx": 0.1, "dy": -0.2, "sw": 1.5, "sh": 0.5}))
    adj = FaceDetector(DetectorConfig(model=str(side))).detect(astronaut)[0]
    # The reference detector already has its own adjust; undo it to compare raw boxes.
    a = json.loads(detector_json.read_text())["decoding"].get("box_adjust") or {}
    dx0, dy0, sw0, sh0 = a.get("dx", 0.0), a.get("dy", 0.0), a.get("sw", 1.0), a.get("sh", 1.0)
    w0, h0 = base.width / sw0, base.height / sh0
    cx0 = (base.box[0] + base.box[2]) / 2 - dx0 * w0
    cy0 = (base.box[1] + base.box[3]) / 2 - dy0 * h0
    assert adj.width == pytest.approx(w0 * 1.5, rel=1e-4) and adj.height == pytest.approx(h0 * 0.5, rel=1e-4)
    assert (adj.box[0] + adj.box[2]) / 2 == pytest.approx(cx0 + 0.1 * w0, abs=1e-3)
    assert (adj.box[1] + adj.box[3]) / 2 == pytest.approx(cy0 - 0.2 * h0, abs=1e-3)


def test_filters_roi_size_score(detector_json, astronaut):
    side = str(detector_json)
    assert FaceDetector(DetectorConfig(model=side, roi=[0.6, 0.0, 1.0, 1.0])).detect(astronaut) == []
    assert len(FaceDetector(DetectorConfig(model=side, roi=[0.2, 0.0, 0.7, 0.5])).detect(astronaut)) == 1
    assert FaceDetector(DetectorConfig(model=side, min_face_px=200)).detect(astronaut) == []
    assert FaceDetector(DetectorConfig(model=side, min_score=0.999)).detect(astronaut) == []


def test_roi_zoom_looks_at_the_roi_and_a_margin(detector_json):
    det = FaceDetector(DetectorConfig(model=str(detector_json), roi=[0.25, 0.5, 0.75, 1.0]))
    assert det.view((480, 640, 3)) == (128, 216, 512, 480)  # 10 % of the roi's size each way, within the frame
    tensor, lb = det.prepare(np.zeros((480, 640, 3), np.uint8))
    w, h = det.input_size(384, 264)
    assert tensor.shape[1:3] == (h, w) and w == det.width
    # the 384x264 view fills the input's width (the view is wider than the input), and input
    # pixels map back to frame pixels: the view's own letterbox, moved to the view's origin
    fit = Letterbox.fit(384, 264, w, h)
    assert LetterboxPlan.of(384, 264, w, h).size[0] == w and (lb.scale_x, lb.scale_y) == pytest.approx((fit.scale_x, fit.scale_y))
    corners = np.array([[fit.pad_x, fit.pad_y], [fit.pad_x + 384 * fit.scale_x, fit.pad_y + 264 * fit.scale_y]])
    assert np.allclose(lb.to_frame(corners), [[128.0, 216.0], [512.0, 480.0]])
    whole = FaceDetector(DetectorConfig(model=str(detector_json), roi=[0.25, 0.5, 0.75, 1.0], roi_zoom=False))
    assert whole.view((480, 640, 3)) == (0, 0, 640, 480)


def test_roi_zoom_finds_a_small_face_in_a_big_frame_where_it_is(detector_json, astronaut, astronaut_face):
    side = 170  # the astronaut's face ~40 px tall in a 1280x960 frame: 6 px at the input of the whole frame
    frame = np.full((960, 1280, 3), 120, np.uint8)
    frame[380 : 380 + side, 690 : 690 + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    want = np.array(astronaut_face) * side / 512 + [690, 380, 690, 380]
    faces = FaceDetector(DetectorConfig(model=str(detector_json), roi=[0.45, 0.3, 0.75, 0.7], min_face_px=0)).detect(frame)
    assert len(faces) == 1 and iou(faces[0].box, tuple(want)) >= 0.5


@pytest.mark.parametrize(
    "frame",
    [np.zeros((480, 640, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8), np.zeros((1, 4000, 3), np.uint8),
     np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)],
    ids=["black", "tiny", "one-row", "noise"],
)
def test_no_face_frames(detector, frame):
    faces = detector.detect(frame)
    assert isinstance(faces, list) and len(faces) <= 1


def test_two_faces_side_by_side(detector, astronaut):
    head = astronaut[20:240, 120:330]
    frame = np.full((300, 640, 3), 120, np.uint8)
    frame[40:260, 20:230] = head
    frame[40:260, 400:610] = head[:, ::-1]
    faces = detector.detect(frame)
    assert len(faces) == 2
    xs = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert xs[0] < 230 < 400 < xs[1]
