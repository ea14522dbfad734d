"""Detector training data: anchor matching, target encoding, flips, augmented views of real scenes."""

from __future__ import annotations

import numpy as np
import pytest

from agent.pipeline.detectors import blazeface
from convert.data import detector as dd
from agent.pipeline.boxes import iou_matrix
from convert.paths import DEFAULT_DATA_ROOT

# A BlazeFace full-range style decoding block (MediaPipe SsdAnchorsCalculatorOptions): test data,
# so the tests do not depend on which detector is shipped.
META = {
    "input": {"height": 192, "width": 192},
    "decoding": {
        "type": "blazeface",
        "anchors": {"num_layers": 1, "min_scale": 0.1484375, "max_scale": 0.75, "input_size_height": 192,
                    "input_size_width": 192, "anchor_offset_x": 0.5, "anchor_offset_y": 0.5, "strides": [4],
                    "aspect_ratios": [1.0], "fixed_anchor_size": True, "interpolated_scale_aspect_ratio": 0.0,
                    "reduce_boxes_in_lowest_layer": False},
        "num_boxes": 2304, "box_format": "xywh_center", "scale": [192, 192, 192, 192],
        "num_keypoints": 6, "keypoint_offset": 4, "score_activation": "sigmoid", "score_clipping": 100.0,
    },
}


@pytest.fixture(scope="module")
def dec() -> dd.Decoding:
    return dd.Decoding.from_sidecar(META)


def test_anchor_grid(dec):
    assert dec.anchors.shape == (2304, 4)
    # 48 x 48 grid, stride 4 px, centres at 2, 6, ... 190
    assert np.allclose(np.unique(dec.centres_px[:, 0]), np.arange(2, 192, 4))


def test_match_known_box(dec):
    box = np.array([[80.0, 80.0, 120.0, 120.0]])
    cls, face = dd.match_anchors(dec.centres_px, box, np.zeros(1, bool))
    c = dec.centres_px
    central = (np.abs(c[:, 0] - 100) <= 10) & (np.abs(c[:, 1] - 100) <= 10)
    inside = (c[:, 0] >= 80) & (c[:, 0] <= 120) & (c[:, 1] >= 80) & (c[:, 1] <= 120)
    assert (cls == 1).sum() == 36 and np.all(cls[central] == 1)
    assert np.all(cls[inside & ~central] == -1) and (cls == -1).sum() == 100 - 36
    assert np.all(cls[~inside] == 0)
    assert np.all(face[cls == 1] == 0) and np.all(face[cls != 1] == -1)


def test_tiny_face_gets_its_nearest_anchor(dec):
    box = np.array([[60.5, 61.0, 63.5, 64.0]])  # 3 px face, centre (62, 62.5)
    cls, _ = dd.match_anchors(dec.centres_px, box, np.zeros(1, bool))
    assert (cls == 1).sum() == 1
    assert np.allclose(dec.centres_px[cls == 1][0], [62, 62])


def test_ignored_face_has_no_positives(dec):
    boxes = np.array([[10.0, 10.0, 50.0, 50.0], [100.0, 100.0, 140.0, 150.0]])
    cls, face = dd.match_anchors(dec.centres_px, boxes, np.array([True, False]))
    c = dec.centres_px
    in_first = (c[:, 0] <= 50) & (c[:, 1] <= 50) & (c[:, 0] >= 10) & (c[:, 1] >= 10)
    assert np.all(cls[in_first] == -1)
    assert set(face[cls == 1].tolist()) == {1}


def test_overlapping_faces_go_to_nearest_centre(dec):
    boxes = np.array([[60.0, 60.0, 100.0, 100.0], [70.0, 60.0, 110.0, 100.0]])
    cls, face = dd.match_anchors(dec.centres_px, boxes, np.zeros(2, bool))
    for i in np.flatnonzero(cls == 1):
        d = [abs(dec.centres_px[i, 0] - 80), abs(dec.centres_px[i, 0] - 90)]
        assert face[i] == int(np.argmin(d)) or d[0] == d[1]


def test_encode_inverts_agent_decode(dec):
    rng = np.random.default_rng(0)
    boxes = np.array([[30.0, 40.0, 70.0, 95.0], [120.5, 10.0, 131.0, 24.0]])
    kps = rng.uniform(0, 192, (2, 6, 2)).astype(np.float32)
    t = dd.make_targets(dec, boxes, kps, np.ones(2, bool), np.zeros(2, bool))
    pos = np.flatnonzero(t[:, dd.T_CLS] == 1)
    raw = np.zeros((2304, 16), np.float32)
    raw[pos] = t[pos, : dd.REG_DIM]
    b, _, k = blazeface.decode(raw, np.zeros(2304), dec.anchors, dec.decoding)
    _, face = dd.match_anchors(dec.centres_px, boxes, np.zeros(2, bool))
    assert np.allclose(b[pos] * 192, boxes[face[pos]], atol=1e-3)
    assert np.allclose(k[pos] * 192, kps[face[pos]], atol=1e-3)
    # loss scale = the face's larger side in regressor units (pixels at this scale)
    assert np.allclose(t[pos, dd.T_SIZE], np.maximum(boxes[face[pos], 2] - boxes[face[pos], 0],
                                                     boxes[face[pos], 3] - boxes[face[pos], 1]))
    assert np.all(t[pos, dd.T_KPW] == 1) and np.all(t[t[:, dd.T_CLS] != 1, dd.T_KPW] == 0)


BLAZEFACE_KPS = [[170, 130], [210, 128], [190, 150], [190, 175], [152, 140], [228, 138]]
YUNET_KPS = [[170, 130], [210, 128], [190, 150], [178, 174], [203, 176]]  # eyes, nose tip, mouth corners


def _scene(width: int = 400, height: int = 300, kps: list = BLAZEFACE_KPS) -> tuple:
    """A synthetic scene: one face box with asymmetric keypoints (BlazeFace's 6 or YuNet's 5), and its pixels."""
    box = np.array([[150.0, 100.0, 230.0, 200.0]], np.float32)
    kps = np.array([kps], np.float32)
    s = dd.Scene("synthetic", None, width, height, box, ("no_mask",), kps, np.ones(1, bool), np.zeros((0, 4)))
    img = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return s, img


def _relative(box: np.ndarray, kps: np.ndarray) -> np.ndarray:
    return (kps - box[:2]) / (box[2:] - box[:2])


@pytest.mark.parametrize("layout, partner", [(BLAZEFACE_KPS, [1, 0, 2, 3, 5, 4]), (YUNET_KPS, [1, 0, 2, 4, 3])])
@pytest.mark.parametrize("seed", range(5))
def test_flip_mirrors_box_and_swaps_keypoints(seed, layout, partner):
    scene, img = _scene(kps=layout)
    cfg = dd.AugmentConfig(p_flip=1.0, p_full_view=1.0, min_visible=0.0)
    ex = dd.augment(scene, img, np.random.default_rng(seed), cfg)
    assert ex.image.shape == (192, 192, 3) and ex.image.dtype == np.uint8
    before = _relative(scene.boxes[0], scene.keypoints[0])
    after = _relative(ex.boxes[0], ex.keypoints[0])
    # mirrored: relative x becomes 1 - x of the left/right partner (eyes, ears, mouth corners);
    # the subject's right eye (keypoint 0) stays on the image's left
    assert np.allclose(after[:, 0], 1 - before[partner, 0], atol=1e-4)
    assert np.allclose(after[:, 1], before[partner, 1], atol=1e-4)
    assert ex.keypoints[0, 0, 0] < ex.keypoints[0, 1, 0]


def test_flip_moves_pixels_with_the_box():
    scene, img = _scene()
    img[:] = 0
    img[100:200, 150:230] = 255  # the face is the only bright region
    cfg = dd.AugmentConfig(p_flip=1.0, p_full_view=1.0, p_gray=0, p_blur=0, p_noise=0, p_low_light=0,
                           p_downscale=0, brightness=0, contrast=(1, 1), saturation=(1, 1), hue_deg=0)
    ex = dd.augment(scene, img, np.random.default_rng(3), cfg)
    ys, xs = np.nonzero(ex.image[..., 0] > 128)
    x1, y1, x2, y2 = ex.boxes[0]
    assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
    assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5


def test_unlabelled_faces_are_ignore_regions(dec):
    scene, img = _scene()
    scene.unlabelled = np.array([[20.0, 20.0, 80.0, 90.0]], np.float32)
    ex = dd.augment(scene, img, np.random.default_rng(0), dd.AugmentConfig(p_full_view=1.0, p_flip=0.0))
    assert ex.labels[-1] == "unlabelled" and ex.ignore[-1]
    t = dd.make_targets(dec, ex.boxes, ex.keypoints, ex.keypoints_ok, ex.ignore)
    c = dec.centres_px
    x1, y1, x2, y2 = ex.boxes[-1]
    inside = (c[:, 0] >= x1) & (c[:, 0] <= x2) & (c[:, 1] >= y1) & (c[:, 1] <= y2)
    assert np.all(t[inside, dd.T_CLS] == -1)


@pytest.fixture(scope="module")
def real_scenes():
    if not (DEFAULT_DATA_ROOT / dd.SCENES / "boxes.csv").is_file():
        pytest.skip("scenes-ilc2021 not available")
    return dd.read_scenes(DEFAULT_DATA_ROOT, "train")[:40]


def test_bgr_loader_reads_each_scene_once_and_names_an_unreadable_one(tmp_path):
    import cv2

    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    scene = dd.Scene("a.png", path, 30, 20, np.zeros((0, 4), np.float32), ())
    load = dd.bgr_loader()
    first = load(scene)
    assert first.shape == (20, 30, 3) and first[0, 0, 2] == 255
    path.unlink()
    assert load(scene) is first  # cached: the evaluation reads each image several times
    with pytest.raises(FileNotFoundError, match="b.png"):
        dd.bgr_loader()(dd.Scene("b.png", tmp_path / "b.png", 30, 20, np.zeros((0, 4), np.float32), ()))


def test_read_scenes(real_scenes):
    s = real_scenes[0]
    assert s.boxes.shape[1] == 4 and len(s.labels) == len(s.boxes)
    assert set(lbl for sc in real_scenes for lbl in sc.labels) <= set(dd.FACE_LABELS)
    assert np.all(s.boxes[:, 2] > s.boxes[:, 0]) and np.all(s.boxes[:, 3] <= s.height)


def test_read_scenes_names_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-root"):
        dd.read_scenes(tmp_path, "train")


def test_targets_of_real_views_within_range(real_scenes, dec):
    rng = np.random.default_rng(0)
    cfg = dd.AugmentConfig()
    sizes = []
    for s in real_scenes:
        ex = dd.augment(s, dd.load_rgb(s.path), rng, cfg)
        t = dd.make_targets(dec, ex.boxes, ex.keypoints, ex.keypoints_ok, ex.ignore)
        assert set(np.unique(t[:, dd.T_CLS]).tolist()) <= {-1.0, 0.0, 1.0}
        assert np.all(np.isfinite(t)) and np.all(t[:, dd.T_SIZE] >= 1.0)
        learned = ~ex.ignore
        # every learned face has a positive anchor
        _, face = dd.match_anchors(dec.centres_px, ex.boxes, ex.ignore)
        assert set(np.flatnonzero(learned).tolist()) <= set(face[face >= 0].tolist())
        pos = t[:, dd.T_CLS] == 1
        # centre offsets of positives stay within half a face (+ one stride for tiny faces)
        assert np.all(np.abs(t[pos, 0:2]) <= t[pos, dd.T_SIZE][:, None] / 2 + 4)
        sizes += list(np.max(ex.boxes[learned, 2:] - ex.boxes[learned, :2], axis=1))
    sizes = np.array(sizes)
    assert sizes.min() >= cfg.min_face_px and np.median(sizes) < 80


def test_letterbox_example_keeps_boxes_on_faces(real_scenes):
    s = real_scenes[0]
    ex = dd.letterbox_example(s, dd.load_rgb(s.path))
    scale = 192 / max(s.width, s.height)
    assert np.allclose(ex.boxes[:, 2] - ex.boxes[:, 0], (s.boxes[:, 2] - s.boxes[:, 0]) * scale, atol=1e-3)


def test_original_keypoints_on_real_face(real_scenes, dec):
    """The original MediaPipe model puts its keypoints inside the annotated face."""
    from convert.train.detector import ORIGINAL_TFLITE

    if not ORIGINAL_TFLITE.is_file():
        pytest.skip("original MediaPipe model not available")
    detect = dd.tflite_raw_detector(ORIGINAL_TFLITE)
    s = real_scenes[0]
    img = dd.load_rgb(s.path)
    kps, iou, _ = dd.original_keypoints(detect, dec, img, s.boxes[0])
    assert iou >= 0.5
    x1, y1, x2, y2 = s.boxes[0]
    w = x2 - x1
    eyes_nose_mouth = kps[:4]
    assert np.all((eyes_nose_mouth[:, 0] > x1) & (eyes_nose_mouth[:, 0] < x2))
    assert np.all((eyes_nose_mouth[:, 1] > y1) & (eyes_nose_mouth[:, 1] < y2))
    assert kps[0, 0] < kps[1, 0] and kps[2, 1] < kps[3, 1]  # right eye on image left; nose above mouth
    assert 0.15 * w < kps[1, 0] - kps[0, 0] < 0.8 * w


# The short-range graph rebuilt at 192x144 (a 4:3 camera frame, no letterbox padding): two
# anchor grids, strides 8 and 16, and a decoding scale per axis.
META_4_3 = {
    "input": {"height": 144, "width": 192},
    "decoding": {
        "type": "blazeface",
        "anchors": {"num_layers": 4, "min_scale": 0.1484375, "max_scale": 0.75, "input_size_height": 144,
                    "input_size_width": 192, "anchor_offset_x": 0.5, "anchor_offset_y": 0.5,
                    "strides": [8, 16, 16, 16], "aspect_ratios": [1.0], "fixed_anchor_size": True,
                    "interpolated_scale_aspect_ratio": 1.0, "reduce_boxes_in_lowest_layer": False},
        "num_boxes": 1512, "box_format": "xywh_center", "scale": [192, 144, 192, 144],
        "num_keypoints": 6, "keypoint_offset": 4, "score_activation": "sigmoid", "score_clipping": 100.0,
    },
}


def test_non_square_anchor_grid():
    d = dd.Decoding.from_sidecar(META_4_3)
    assert d.size == (192, 144) and d.anchors.shape == (24 * 18 * 2 + 12 * 9 * 6, 4)
    c = d.centres_px
    fine, coarse = c[: 24 * 18 * 2], c[24 * 18 * 2:]
    assert np.allclose(np.unique(fine[:, 0]), np.arange(4, 192, 8)) and np.allclose(np.unique(fine[:, 1]), np.arange(4, 144, 8))
    assert np.allclose(np.unique(coarse[:, 0]), np.arange(8, 192, 16)) and np.allclose(np.unique(coarse[:, 1]), np.arange(8, 144, 16))


def test_non_square_encode_inverts_agent_decode():
    d = dd.Decoding.from_sidecar(META_4_3)
    rng = np.random.default_rng(2)
    boxes = np.array([[30.0, 40.0, 70.0, 95.0], [150.0, 100.0, 170.0, 126.0]])
    kps = np.stack([rng.uniform(0, 192, (2, 6)), rng.uniform(0, 144, (2, 6))], axis=-1).astype(np.float32)
    t = dd.make_targets(d, boxes, kps, np.ones(2, bool), np.zeros(2, bool))
    pos = np.flatnonzero(t[:, dd.T_CLS] == 1)
    raw = np.zeros((len(d.anchors), 16), np.float32)
    raw[pos] = t[pos, : dd.REG_DIM]
    b, _, k = blazeface.decode(raw, np.zeros(len(d.anchors)), d.anchors, d.decoding)
    _, face = dd.match_anchors(d.centres_px, boxes, np.zeros(2, bool))
    assert set(face[pos].tolist()) == {0, 1}
    assert np.allclose(b[pos] * [192, 144, 192, 144], boxes[face[pos]], atol=1e-3)
    assert np.allclose(k[pos] * [192, 144], kps[face[pos]], atol=1e-3)


def test_letterbox_matrix_is_the_agents_letterbox():
    from agent.pipeline.detect import letterbox

    for (w, h), (vw, vh) in (((640, 480), (192, 144)), ((800, 450), (192, 144)), ((300, 500), (192, 144)),
                             ((640, 480), (192, 192))):
        m = dd.letterbox_matrix(w, h, vw, vh)
        _, lb = letterbox(np.zeros((h, w, 3), np.uint8), vw, vh)
        assert np.allclose([m[0, 0], m[1, 1], m[0, 2], m[1, 2]], [lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y])
    # pixel centres: 0.3x and the half-pixel the resize's edge alignment implies, (0.3 - 1) / 2
    assert np.allclose(dd.letterbox_matrix(640, 480, 192, 144), [[0.3, 0, -0.35], [0, 0.3, -0.35]])


@pytest.mark.parametrize("seed", range(4))
def test_non_square_views(seed):
    scene, img = _scene(640, 480)
    cfg = dd.AugmentConfig(width=192, height=144, min_visible=0.0)
    ex = dd.augment(scene, img, np.random.default_rng(seed), cfg)
    assert ex.image.shape == (144, 192, 3)
    # the face box and its keypoints move together: keypoints stay at the same place in the box
    before = _relative(scene.boxes[0], scene.keypoints[0])
    after = _relative(ex.boxes[0], ex.keypoints[0])
    flipped = not np.allclose(after, before, atol=1e-3)
    if flipped:
        before = np.stack([1 - before[list(dd.KEYPOINT_FLIP), 0], before[list(dd.KEYPOINT_FLIP), 1]], axis=1)
    assert np.allclose(after, before, atol=1e-3)
    lb = dd.letterbox_example(scene, img, (192, 144))
    # the agent's letterbox of 640x480 into 192x144: 0.3x, pixel centres half a pixel in, (0.3 - 1) / 2
    assert lb.image.shape == (144, 192, 3) and np.allclose(lb.boxes[0], scene.boxes[0] * 0.3 - 0.35, atol=1e-4)


# ----------------------------------------------------------------------------- synthetic masks

def _plain_augment(**kw) -> dd.AugmentConfig:
    """No flip, run-time view, no photometric jitter: pixels change only where a mask is pasted."""
    return dd.AugmentConfig(p_flip=0.0, p_full_view=1.0, p_gray=0, p_blur=0, p_noise=0, p_low_light=0,
                            p_downscale=0, brightness=0, contrast=(1, 1), saturation=(1, 1), hue_deg=0,
                            **kw)


@pytest.fixture(scope="module")
def templates():
    from convert.data.masks import load_mask_templates

    if not (DEFAULT_DATA_ROOT / "mask-templates" / "masks.cfg").is_file():
        pytest.skip("mask-templates not available")
    return dd.shrink_templates(load_mask_templates(DEFAULT_DATA_ROOT), 160)


def test_shrunk_templates_keep_anchors_on_the_mask(templates):
    from convert.data.masks import load_mask_templates

    for t, full in zip(templates, load_mask_templates(DEFAULT_DATA_ROOT)):
        assert max(t.bgra.shape[:2]) <= 160 and t.name == full.name
        # anchors keep their place relative to the template's pixels
        rel = t.points / [t.bgra.shape[1], t.bgra.shape[0]]
        rel_full = full.points / [full.bgra.shape[1], full.bgra.shape[0]]
        assert np.allclose(rel, rel_full, atol=0.01), t.name
        assert abs(t.bgra[..., 3].mean() - full.bgra[..., 3].mean()) < 3, t.name


@pytest.mark.parametrize("layout", [BLAZEFACE_KPS, YUNET_KPS], ids=["blazeface", "yunet"])
def test_synthetic_mask_covers_the_lower_face_only(templates, layout):
    scene, _ = _scene(kps=layout)
    img = np.full((scene.height, scene.width, 3), 200, np.uint8)
    labels = set()
    for seed in range(12):
        base = dd.augment(scene, img, np.random.default_rng(seed), _plain_augment(), templates)
        ex = dd.augment(scene, img, np.random.default_rng(seed), _plain_augment(p_synthetic_mask=1.0), templates)
        # same view geometry, same face box and keypoint targets: a mask does not move a face
        assert np.allclose(ex.boxes, base.boxes) and np.allclose(ex.keypoints, base.keypoints)
        # (the colour jitter's HSV round trip may differ by a few levels: rng draws moved on)
        changed = np.any(np.abs(ex.image.astype(int) - base.image.astype(int)) > 12, axis=2)
        assert changed.sum() > 20, seed
        ys, xs = np.nonzero(changed)
        kp = ex.keypoints[0]
        eyes_y = (kp[0, 1] + kp[1, 1]) / 2
        x1, y1, x2, y2 = ex.boxes[0]
        # below the eyes, around the face: nothing pasted over the eyes or far outside the box
        assert ys.min() > eyes_y, seed
        w = x2 - x1
        assert xs.min() > x1 - 0.35 * w and xs.max() < x2 + 0.35 * w
        labels.add(ex.labels[0])
    assert labels == {"mask", "incorrect_mask"}


def test_synthetic_masks_only_on_trusted_unmasked_faces(templates):
    scene, img = _scene()
    cfg = _plain_augment(p_synthetic_mask=1.0)
    base = dd.augment(scene, img, np.random.default_rng(0), _plain_augment(), templates)
    for change in ("label", "keypoints", "pose"):
        s, _ = _scene()
        if change == "label":
            s.labels = ("mask",)
        elif change == "keypoints":
            s.keypoints_ok = np.zeros(1, bool)
        else:  # nose tip far to one side: a profile view, templates are frontal
            s.keypoints = s.keypoints.copy()
            s.keypoints[0, 2, 0] = 228
        ex = dd.augment(s, img, np.random.default_rng(0), cfg, templates)
        assert np.abs(ex.image.astype(int) - base.image.astype(int)).max() <= 12, change
        assert ex.labels[0] == s.labels[0]


# ----------------------------------------------------------------------------- composited faces

def _patch(label: str = "mask") -> dd.FacePatch:
    """A 100x120 'photo' whose face box is a bright rectangle on a mid-grey ground."""
    img = np.full((120, 100, 3), 90, np.uint8)
    img[30:90, 25:75] = 250
    return dd.FacePatch(img, np.array([25.0, 30.0, 75.0, 90.0], np.float32), label)


def test_composited_faces_land_in_free_space_of_the_photo():
    cfg = dd.AugmentConfig(width=192, height=144, composite_face=(12.0, 60.0))
    existing = np.array([[20.0, 20.0, 60.0, 70.0]], np.float32)
    area = np.array([0.0, 18.0, 192.0, 126.0], np.float32)  # a letterboxed photo: padding above and below
    n = 0
    for seed in range(20):
        view = np.zeros((144, 192, 3), np.uint8)
        out, boxes, labels = dd.composite_faces(view, existing, np.random.default_rng(seed), [_patch()], cfg, area)
        assert out.shape == view.shape and out.dtype == np.uint8
        assert len(boxes) == len(labels) and set(labels) <= {"mask"}
        for b in boxes:
            assert b[0] >= area[0] - 1e-3 and b[1] >= area[1] - 1e-3 and b[2] <= area[2] + 1e-3 and b[3] <= area[3] + 1e-3
            assert 12.0 * 0.9 <= b[3] - b[1] <= 60.0 * 1.1
            assert iou_matrix(b[None], existing).max() == 0
            # the face's own pixels arrive where its box says (the brightness gain is 0.6-1.4; the
            # photo's ground, 90, stays below 0.6 * 250 at any gain that keeps the face in range)
            x1, y1, x2, y2 = (int(round(v)) for v in b)
            inner = out[y1 + (y2 - y1) // 4 : y2 - (y2 - y1) // 4, x1 + (x2 - x1) // 4 : x2 - (x2 - x1) // 4]
            assert inner.mean() >= 0.6 * 250 - 2 and inner.std() < 3
        if len(boxes) > 1:
            assert iou_matrix(boxes, boxes)[~np.eye(len(boxes), dtype=bool)].max() == 0
        # nothing pasted outside the photo's area or far from the new faces
        changed = np.any(out > 0, axis=2)
        assert not changed[: int(area[1])].any() and not changed[int(area[3]) + 1 :].any()
        n += len(boxes)
    assert n >= 20


def test_augment_adds_composited_faces_as_learned_faces():
    scene, img = _scene()
    cfg = dd.AugmentConfig(p_composite=1.0, p_flip=0.0, p_full_view=1.0)
    added = 0
    for seed in range(10):
        ex = dd.augment(scene, img, np.random.default_rng(seed), cfg, (), [_patch("no_mask")])
        assert len(ex.boxes) == len(ex.labels) == len(ex.ignore) == len(ex.keypoints_ok)
        new = np.arange(len(ex.labels)) >= 1
        # composited faces: learned (unless too small), labelled, no keypoint targets
        assert not ex.keypoints_ok[new].any() and all(lbl == "no_mask" for lbl in np.array(ex.labels)[new])
        big = np.maximum(ex.boxes[:, 2] - ex.boxes[:, 0], ex.boxes[:, 3] - ex.boxes[:, 1]) >= cfg.min_face_px
        assert not ex.ignore[new & big].any()
        added += int(new.sum())
    assert added > 0
    # p_composite 0 (the default) adds nothing
    ex = dd.augment(scene, img, np.random.default_rng(0), dd.AugmentConfig(p_full_view=1.0), (), [_patch()])
    assert len(ex.boxes) == 1
