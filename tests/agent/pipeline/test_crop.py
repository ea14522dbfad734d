"""The one crop function: geometry, eye levelling, shrinking, batch shape."""

import math

import cv2
import numpy as np
import pytest

from agent.pipeline.crop import CropSpec, crop_face, crop_faces, crop_matrix, roll_angle, warp_shrinking


def _apply(m, pt):
    return m[:, :2] @ np.asarray(pt, float) + m[:, 2]


def test_box_centre_maps_to_crop_centre_and_side_to_scale():
    spec = CropSpec(64, 64, scale=2.0, align="none")
    m = crop_matrix((100, 50, 140, 110), None, spec)  # w 40, h 60 -> side 120
    assert _apply(m, (120, 80)) == pytest.approx((32, 32))
    assert _apply(m, (60, 20)) == pytest.approx((0, 0))  # centre - side/2


def test_shift_y_moves_the_window_down_by_box_heights():
    m = crop_matrix((0, 0, 10, 20), None, CropSpec(32, 32, scale=1.0, align="none", shift_y=0.25))
    assert _apply(m, (5, 15)) == pytest.approx((16, 16))


def test_tilted_eyes_are_levelled():
    eyes = np.array([[100.0, 100.0], [140.0, 120.0]])  # right eye, left eye: rolled ~26.6 degrees
    assert math.degrees(roll_angle(eyes)) == pytest.approx(26.565, abs=1e-3)
    m = crop_matrix((90, 80, 150, 160), eyes, CropSpec(96, 96))
    r, left = _apply(m, eyes[0]), _apply(m, eyes[1])
    assert r[1] == pytest.approx(left[1], abs=1e-9) and left[0] > r[0]


@pytest.mark.parametrize("kps", [None, np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [10.0, 30.0]])])
def test_missing_degenerate_or_implausible_eyes_mean_no_rotation(kps):
    assert roll_angle(kps) == 0.0


def test_crop_content_shape_and_border_replication():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:60] = 255
    c = crop_face(img, (40, 40, 60, 60), None, CropSpec(20, 20, scale=1.0, align="none"))
    assert c.shape == (20, 20, 3) and c.dtype == np.uint8
    assert c[2:-2, 2:-2].min() == 255  # the box fills the crop
    edge = crop_face(img, (-50, -50, -10, -10), None, CropSpec(8, 8, scale=1.0, align="none"))
    assert edge.max() == 0  # outside the frame: the (black) border repeats, no garbage


def test_large_face_shrinks_without_aliasing():
    stripes = np.zeros((800, 800, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: bilinear sampling alone would alias them
    c = crop_face(stripes, (0, 0, 800, 800), None, CropSpec(32, 32, scale=1.0, align="none"))
    assert abs(float(c.mean()) - 127.5) < 10 and float(c.std()) < 20


def _whole_frame_halved(image, m, size, border_mode):
    """The reference: halve the whole frame until the warp is at most 2:1, then warp (what
    warp_shrinking does on the region the crop samples only)."""
    k = 1
    while math.hypot(m[0, 0], m[0, 1]) * k < 0.5:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        k *= 2
    m = m @ np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1.0]])
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=border_mode)


def _smooth_frame(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), np.uint8), (0, 0), 6)


@pytest.mark.parametrize("box, eyes, mode", [
    ((400, 200, 800, 700), None, cv2.BORDER_REPLICATE),                      # inside the frame
    ((-150, 600, 250, 1100), None, cv2.BORDER_REPLICATE),                   # over a corner
    ((500, 300, 900, 800), np.array([[600.0, 450.0], [780.0, 540.0]]), cv2.BORDER_REPLICATE),  # rolled
    ((1000, -100, 1400, 300), None, cv2.BORDER_CONSTANT),                   # detector views pad black
    ((430, 310, 610, 450), None, cv2.BORDER_REPLICATE),                     # one halving
])
def test_large_face_is_shrunk_from_its_region_like_from_the_whole_frame(box, eyes, mode):
    frame = np.random.default_rng(1).integers(0, 256, (960, 1280, 3), np.uint8)  # any offset shows
    m = crop_matrix(box, eyes, CropSpec(64, 64))
    assert math.hypot(m[0, 0], m[0, 1]) < 0.5  # the shrinking path
    diff = np.abs(warp_shrinking(frame, m, (64, 64), mode).astype(int)
                  - _whole_frame_halved(frame, m, (64, 64), mode).astype(int))
    # The same pixels, up to warpAffine's fixed-point rounding of a moved matrix (one pixel of the
    # rolled crop is 1 grey level off); on this noise a region one pixel off changes nearly all.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.002


def _area_reference(image, m, size, border_mode, s=8):
    """Every output pixel the average of its footprint: warp to s x s samples per output pixel
    (bilinear from the full frame), then average them. Slow, and as sharp as a crop can be."""
    up = np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2], [0, 0, 1.0]])
    fine = cv2.warpAffine(image, (up @ np.vstack([m, [0, 0, 1]]))[:2], (size[0] * s, size[1] * s),
                          flags=cv2.INTER_LINEAR, borderMode=border_mode)
    return cv2.resize(fine, size, interpolation=cv2.INTER_AREA)


def test_large_face_crop_is_close_to_the_average_of_its_footprint():
    frame = _smooth_frame(960, 1280)
    frame[430:470, 580:620] = (255, 255, 255)
    m = crop_matrix((400, 200, 800, 700), None, CropSpec(64, 64))
    diff = np.abs(warp_shrinking(frame, m, (64, 64)).astype(int) - _area_reference(frame, m, (64, 64),
                                                                                  cv2.BORDER_REPLICATE).astype(int))
    # 0.54 grey levels (the halved blocks blur a little more than the exact footprint);
    # bilinear sampling without shrinking first: 1.9.
    assert diff.mean() < 0.8


@pytest.mark.parametrize("side", [140, 200, 300, 450, 700])
@pytest.mark.parametrize("eyes", [None, np.array([[560.0, 430.0], [660.0, 470.0]])])
def test_shrunk_crop_shows_a_point_where_the_matrix_maps_it(side, eyes):
    frame = np.zeros((960, 1280, 3), np.uint8)
    cv2.circle(frame, (611, 452), side // 10, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    box = (611 - side / 2 + 13, 452 - side / 2 - 7, 611 + side / 2 + 13, 452 + side / 2 - 7)
    m = crop_matrix(box, eyes, CropSpec(64, 64))
    g = warp_shrinking(frame, m, (64, 64))[..., 0].astype(float)
    ys, xs = np.mgrid[: g.shape[0], : g.shape[1]]
    centroid = np.array([(g * xs).sum(), (g * ys).sum()]) / g.sum()
    # Within 0.045 output pixels here; averaged blocks placed one source pixel off land 0.07-0.36
    # away, and ignoring where an averaged pixel is centred (the code before) 0.08-0.29.
    assert np.abs(centroid - m @ np.array([611.0, 452.0, 1.0])).max() < 0.05


def test_crop_far_outside_a_tiny_frame_repeats_its_edge():
    tiny = np.full((3, 3, 3), 77, np.uint8)
    c = crop_face(tiny, (500, 500, 900, 900), None, CropSpec(16, 16))
    assert c.shape == (16, 16, 3) and (c == 77).all()


def test_batch_matches_single_crops():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), np.uint8)
    boxes = [(10, 10, 50, 60), (80, 20, 140, 100)]
    spec = CropSpec(24, 24)
    batch = crop_faces(img, boxes, [None, None], spec)
    assert batch.shape == (2, 24, 24, 3)
    for b, box in zip(batch, boxes):
        assert np.array_equal(b, crop_face(img, box, None, spec))


def test_from_sidecar_rejects_unknown_alignment():
    with pytest.raises(ValueError, match="crop.align"):
        CropSpec.from_sidecar({"align": "nose"}, 64, 64)


def _yunet_face():
    """A level face box (annotator convention) and YuNet-style keypoints: eyes, nose tip, mouth corners."""
    box = (100.0, 100.0, 180.0, 200.0)  # 80 x 100
    kps = np.array([[125, 130], [155, 130], [140, 150], [128, 170], [152, 170]], float)  # eye-to-mouth 40 px
    return box, kps


def test_keypoint_anchor_places_eyes_and_mouth_at_fixed_crop_pixels():
    """anchor: keypoints: side = anchor_side eye-to-mouth distances, centre anchor_centre of it below the eyes."""
    box, kps = _yunet_face()
    spec = CropSpec(48, 48, align="eyes", anchor="keypoints", anchor_side=2.0, anchor_centre=0.75)
    m = crop_matrix(box, kps, spec)
    # side 80 px centred 30 px below the eyes (140, 160): the eyes 30 px above the centre -> row 24 - 18
    assert _apply(m, (140, 160)) == pytest.approx((24, 24))
    assert _apply(m, (140, 130)) == pytest.approx((24, 24 - 30 * 48 / 80))
    # BlazeFace's 6 (mouth centre, ears) give the same crop
    six = np.array([kps[0], kps[1], kps[2], (kps[3] + kps[4]) / 2, [105, 140], [175, 140]])
    assert crop_matrix(box, six, spec) == pytest.approx(m)


def test_keypoint_anchor_falls_back_to_the_box_without_usable_keypoints():
    """No keypoints, eyes only (the roll augmentation) or keypoints off the box: the box stands in."""
    box, kps = _yunet_face()
    spec = CropSpec(48, 48, anchor="keypoints")
    fallback = crop_matrix(box, None, spec)
    bad = kps.copy()
    bad[3:] += [0, 200]  # a mouth far below the face
    assert crop_matrix(box, bad, spec) == pytest.approx(fallback)
    # side anchor_side * box height / 2.5; the box centre lies 0.47 eye-to-mouth distances below the eyes
    d = 100 / 2.5
    assert _apply(fallback, (140, 150 + (0.8 - 0.47) * d)) == pytest.approx((24, 24))
    assert fallback[0, 0] == pytest.approx(48 / (2.2 * d))


def test_anchor_round_trips_through_the_sidecar():
    spec = CropSpec(48, 48, anchor="keypoints", anchor_side=2.4, anchor_centre=0.7)
    assert CropSpec.from_sidecar(spec.sidecar(), 48, 48) == spec
    assert "anchor" not in CropSpec(48, 48).sidecar()
    with pytest.raises(ValueError, match="crop.anchor"):
        CropSpec.from_sidecar({"anchor": "nose"}, 48, 48)
