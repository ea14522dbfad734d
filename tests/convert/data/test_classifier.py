"""convert.data.classifier: crop geometry helpers, and real crops cut from the shared datasets."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from agent.pipeline.crop import crop_face, roll_angle
from convert.data import classifier as cd
from convert.paths import DEFAULT_DATA_ROOT

DATA = DEFAULT_DATA_ROOT
needs_data = pytest.mark.skipif(not (DATA / "scenes-ilc2021" / "boxes.csv").is_file(), reason=f"datasets not at {DATA}")


def test_jitter_box_stays_within_bounds():
    rng = np.random.default_rng(1)
    box = (100.0, 50.0, 200.0, 170.0)
    for _ in range(500):
        j = cd.jitter_box(box, rng, 0.08, 0.10)
        w, h = j[2] - j[0], j[3] - j[1]
        assert 0.9 * 100 - 1e-9 <= w <= 1.1 * 100 + 1e-9
        assert abs((j[0] + j[2]) / 2 - 150) <= 0.08 * 100 + 1e-9
        assert abs((j[1] + j[3]) / 2 - 110) <= 0.08 * 120 + 1e-9
        assert h / w == pytest.approx(1.2)


def test_roll_keypoints_give_the_requested_roll():
    box = (10.0, 10.0, 110.0, 130.0)
    assert cd.roll_keypoints(box, 0.0) is None
    for deg in (-10.0, -3.5, 7.0):
        assert math.degrees(roll_angle(cd.roll_keypoints(box, deg))) == pytest.approx(deg)


def test_background_boxes_avoid_faces():
    rng = np.random.default_rng(2)
    faces = [(100.0, 100.0, 180.0, 200.0), (400.0, 50.0, 440.0, 100.0)]
    boxes = cd.background_boxes(640, 480, faces, rng, 30, tries=2000)
    assert len(boxes) == 30
    for b in boxes:
        region = cd.crop_region(b, 1.3)
        for f in faces:
            assert cd.iou(b, f) < 0.1 and cd.covered(f, region) < 0.1


def test_partial_face_boxes_show_little_of_any_face():
    rng = np.random.default_rng(3)
    face = (200.0, 200.0, 300.0, 320.0)
    got = [cd.partial_face_box(face, [face], rng) for _ in range(200)]
    boxes = [b for b in got if b is not None]
    assert len(boxes) > 150
    for b in boxes:
        assert cd.iou(b, face) < 0.25
        assert cd.covered(face, cd.crop_region(b, 1.3)) < 0.35


def test_iou_and_covered():
    assert cd.iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert cd.iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert cd.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert cd.covered((0, 0, 10, 10), (5, 0, 100, 100)) == pytest.approx(0.5)


def test_face_finder_finds_the_astronaut(tmp_path):
    skimage = pytest.importorskip("skimage.data")
    if not cd.DEFAULT_FACE_DETECTOR.is_file():
        pytest.skip(f"{cd.DEFAULT_FACE_DETECTOR} missing")
    img = cv2.cvtColor(skimage.astronaut(), cv2.COLOR_RGB2BGR)[0:300, 100:350]  # her head and shoulders
    got = cd.FaceFinder(cd.DEFAULT_FACE_DETECTOR).detect(img)
    assert got is not None
    (x1, y1, x2, y2), score = got
    assert score > 0.5
    # her face spans about x 170..275, y 60..165 of the 512 px image
    assert abs((x1 + x2) / 2 - (222 - 100)) < 20 and abs((y1 + y2) / 2 - 112) < 20
    assert 70 < x2 - x1 < 140


@needs_data
def test_build_crops_counts_labels_and_split(tmp_path):
    limit = 6
    cfg = cd.DataConfig(size=32, limit=limit, seed=5)
    train, val, info = cd.build_crops(DATA, cfg, face_detector=None, log=lambda *_: None)
    faces = cd.read_scene_faces(DATA)
    images = sorted({f.image for f in faces})
    train_imgs = [i for i in images if next(f for f in faces if f.image == i).split == "train"][:limit]
    val_imgs = [i for i in images if next(f for f in faces if f.image == i).split == "val"][:limit]

    # every train face is cut scene_copies[label] times; every val face once
    want_train = sum(cfg.scene_copies[f.label] for f in faces if f.image in train_imgs)
    want_val = sum(1 for f in faces if f.image in val_imgs)
    assert int(((train.source == "scenes")).sum()) == want_train
    assert int(((val.source == "scenes")).sum()) == want_val
    assert int((train.source == "background").sum()) > 0 and int((val.source == "background").sum()) > 0
    # not_face exactly for background/partial crops
    nf = cd.LABELS.index("not_face")
    assert set(np.unique(train.source[train.y == nf])) <= {"background", "partial"}
    assert np.all(train.y[train.source == "scenes"] < nf)
    assert train.x.shape[1:] == (32, 32, 3) and train.x.dtype == np.uint8
    assert len(train) == len(train.y) == len(train.image) == len(train.box_h)
    # no val image ever feeds train
    assert not set(train.image.tolist()) & set(val.image.tolist())
    assert set(val.image.tolist()) <= set(val_imgs)
    assert info["train_counts"] == {lab: int((train.y == i).sum()) for i, lab in enumerate(cd.LABELS)}

    # val face crops are the agent's crop of the annotated box, unjittered (RGB)
    f0 = next(f for f in faces if f.image == val_imgs[0])
    img = cv2.imread(str(DATA / "scenes-ilc2021" / "images" / f0.image))
    want = cv2.cvtColor(crop_face(img, f0.box, None, cfg.crop_spec()), cv2.COLOR_BGR2RGB)
    assert np.array_equal(val.x[0], want)
    assert val.y[0] == cd.LABELS.index(f0.label)

    # cache round trip
    path = tmp_path / "crops.npz"
    cd.save_crops(path, train, val, info)
    tr2, va2, info2 = cd.load_crops(path)
    assert np.array_equal(tr2.x, train.x) and np.array_equal(va2.y, val.y) and info2 == info


@needs_data
def test_faces_sets_are_reframed_by_the_detector():
    if not cd.DEFAULT_FACE_DETECTOR.is_file():
        pytest.skip(f"{cd.DEFAULT_FACE_DETECTOR} missing")
    cfg = cd.DataConfig(size=32, limit=3, seed=1)
    train, _, info = cd.build_crops(DATA, cfg, cd.DEFAULT_FACE_DETECTOR, log=lambda *_: None)
    adj = info["face_detector"]
    assert 0.7 < adj["sw"] < 1.4 and 0.7 < adj["sh"] < 1.4 and abs(adj["dx"]) < 0.2 and abs(adj["dy"]) < 0.2
    for folder, label in cd.FACE_FOLDERS.items():
        m = train.source == folder
        assert int(m.sum()) + info["faces_skipped"][folder] == 3
        assert np.all(train.y[m] == cd.LABELS.index(label))


@needs_data
def test_detector_crops_are_the_agents_own_crops_with_the_annotated_label():
    """--agent-detector: each crop is what the running agent would cut for that detection (its box,
    levelled by its eye keypoints), labelled by the annotated face it overlaps."""
    from pathlib import Path

    from agent.pipeline.detect import DetectorConfig, FaceDetector

    sidecar = Path(__file__).resolve().parents[3] / DetectorConfig().model
    cfg = cd.DataConfig(size=48, limit=6)
    out = cd._Builder(cfg.crop_spec())
    counts = cd.detector_crops(DATA, cfg, sidecar, out, scales=(1.0,), log=lambda *_: None)
    crops = out.done()
    assert counts["matched"] == len(crops) > 0
    assert set(crops.source) == {"detector"} and np.all(crops.y < cd.LABELS.index("not_face"))
    # the first image's crops again, through the agent's detector and crop function
    name = crops.image[0]
    img = cv2.imread(str(DATA / "scenes-ilc2021" / "images" / name))
    faces = {f.box: f.label for f in cd.read_scene_faces(DATA) if f.image == name}
    det = FaceDetector(DetectorConfig(model=str(sidecar), min_face_px=8.0))
    want = []
    for d in det.detect(img):
        best = max(faces, key=lambda b: cd.iou(d.box, b))
        if cd.iou(d.box, best) >= 0.4:
            want.append((cv2.cvtColor(crop_face(img, d.box, d.keypoints, cfg.crop_spec()), cv2.COLOR_BGR2RGB), faces[best]))
    got = [(x, cd.LABELS[y]) for x, y, im in zip(crops.x, crops.y, crops.image) if im == name]
    assert len(got) == len(want)
    for (gx, gl), (wx, wl) in zip(got, want):
        assert gl == wl and np.array_equal(gx, wx)


def test_missing_agent_detector_is_a_clear_error(tmp_path, capsys):
    assert cd.main(["--no-faces", "--agent-detector", str(tmp_path / "nope.json"), "--out", str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err
    assert "--agent-detector" in err and "nope.json" in err and not (tmp_path / "c.npz").exists()


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    assert cd.main(["--data-root", str(tmp_path), "--no-faces", "--out", str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err
    assert "scenes-ilc2021" in err and "--data-root" in err


@needs_data
def test_build_synthetic_balances_templates_and_labels():
    if not cd.DEFAULT_FACE_DETECTOR.is_file():
        pytest.skip(f"{cd.DEFAULT_FACE_DETECTOR} missing")
    cfg = cd.DataConfig(size=32, limit=12, seed=0)
    syn, info = cd.build_synthetic(DATA, cfg, cd.DEFAULT_FACE_DETECTOR, n_faces=24, log=lambda *_: None)
    assert len(syn) == 24
    assert info["placements"] == {"correct": 8, "under_nose": 8, "chin": 8}
    assert info["counts"]["mask"] == 8 and info["counts"]["incorrect_mask"] == 16
    assert set(syn.source.tolist()) == {"synthetic/mask", "synthetic/incorrect_mask"}
    val_images = {f.image for f in cd.read_scene_faces(DATA) if f.split == "val"}
    assert not set(syn.image.tolist()) & val_images
    # each template appears with both labels
    used = {}
    for t in info["templates"]:
        name, placement = t.split(":")
        used.setdefault(name, set()).add(placement == "correct")
    assert all(v == {True, False} for v in used.values())


@needs_data
def test_synthetic_masks_from_the_agent_detector_are_cut_as_the_agent_cuts_them():
    """--agent-detector: masks placed from YuNet's keypoints, a third per placement, every template in
    all three; each crop is cut from the box the detector finds on the *masked* face."""
    from pathlib import Path

    from agent.pipeline.detect import DetectorConfig

    sidecar = Path(__file__).resolve().parents[3] / DetectorConfig().model
    cfg = cd.DataConfig(size=32, limit=8, seed=0)
    syn, info = cd.build_synthetic(DATA, cfg, cd.DEFAULT_FACE_DETECTOR, n_faces=18, log=lambda *_: None, agent_detector=sidecar)
    lost = info["agent_detector"]["not_found_after_pasting"]
    assert info["placements"] == {"correct": 6, "under_nose": 6, "chin": 6}
    assert len(syn) == 18 - sum(lost.values()) > 0
    assert info["counts"]["mask"] == 6 - lost["correct"]
    used = {}
    for t in info["templates"]:
        name, placement = t.split(":")
        used.setdefault(name, set()).add(placement)
    assert all(v == {"correct", "under_nose", "chin"} for v in used.values())
    val_images = {f.image for f in cd.read_scene_faces(DATA) if f.split == "val"}
    assert not set(syn.image.tolist()) & val_images


@needs_data
def test_val_faces_are_framed_by_the_agent_detector():
    """With --agent-detector the val faces scored are the detector's (IoU >= 0.5 with an annotated
    face, the pipeline's rule), cut with its keypoints; not_face crops stay."""
    from pathlib import Path

    from agent.pipeline.detect import DetectorConfig

    sidecar = Path(__file__).resolve().parents[3] / DetectorConfig().model
    cfg = cd.DataConfig(size=32, limit=4, seed=0)
    _, val, info = cd.build_crops(DATA, cfg, face_detector=None, log=lambda *_: None, agent_detector=sidecar)
    faces = val.y < cd.LABELS.index("not_face")
    assert faces.any() and set(val.source[faces].tolist()) == {"detector"}
    assert set(val.source[~faces].tolist()) <= {"background", "partial"}
    assert info["agent_detector"]["val"]["matched"] == int(faces.sum())
