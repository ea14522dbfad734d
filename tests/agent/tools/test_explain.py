"""``maskwatch explain``: occlusion maps with the shipped models on the astronaut photo (no mocks)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from agent import cli
from agent.pipeline.classify import ClassifierConfig, MaskClassifier
from agent.pipeline.crop import crop_face
from agent.tools.demo import draw_mask
from agent.pipeline.detect import DetectorConfig, FaceDetector
from agent.tools.explain import (
    DEFAULT_PATCH, DEFAULT_STRIDE, GREY, PANEL, border_width, crop_keypoints, explain_face, nose_mouth_box,
    occlusion_map, patch_starts, render,
)
from agent.types import Face


@pytest.fixture(scope="module")
def models(detector_json, classifier_json):
    classifier = MaskClassifier(ClassifierConfig(model=str(classifier_json)))
    return FaceDetector(DetectorConfig(model=str(detector_json))), classifier


@pytest.fixture(scope="module")
def masked(astronaut):
    return draw_mask(astronaut)


def explain(models, image, patch=DEFAULT_PATCH, stride=DEFAULT_STRIDE, fill=GREY):
    detector, classifier = models
    (face,) = detector.detect(image)
    return explain_face(classifier, detector.keypoint_names, image, face, "astro.png", 0, patch, stride, fill)


def test_patch_starts_cover_the_crop():
    assert patch_starts(64, 8, 4) == list(range(0, 57, 4))
    assert patch_starts(10, 4, 4) == [0, 4, 6]  # a last patch flush with the edge
    assert patch_starts(8, 8, 4) == [0]
    with pytest.raises(ValueError):
        patch_starts(8, 9, 1)


def test_maps_have_the_crop_shape_and_valid_flips(models, astronaut):
    detector, classifier = models
    (face,) = detector.detect(astronaut)
    crop = crop_face(astronaut, face.box, face.keypoints, classifier.spec)
    side = classifier.spec.width
    for fill in (GREY, None):
        # 3/8 of the side: quarter-side squares barely move this near-certain no_mask (p 0.9999)
        drop, flip = occlusion_map(classifier, crop, 2, side * 3 // 8, side // 16, fill)
        assert drop.shape == flip.shape == crop.shape[:2]
        assert np.isfinite(drop).all() and drop.max() > 0.05
        assert set(np.unique(flip)) <= {-1, 0, 1, 3}  # another label than no_mask (2), or none
    # A stride wider than the patch leaves pixels uncovered: no drop, no flip claimed there.
    drop, flip = occlusion_map(classifier, crop, 2, 4, 10)
    assert drop[5, 5] == 0.0 and flip[5, 5] == -1


def test_label_is_the_agents(models, astronaut, masked):
    _, classifier = models
    for image in (astronaut, masked):
        ex = explain(models, image)
        (face,) = classifier.classify(image, models[0].detect(image))
        assert (ex.label, ex.score) == (face.label, pytest.approx(face.score, abs=1e-6))
    assert explain(models, astronaut).label == "no_mask" and explain(models, masked).label == "mask"


def hidden_probability(classifier, crop, label_index, y, x, patch):
    c = crop.copy()
    c[y : y + patch, x : x + patch] = GREY
    return float(classifier.probabilities(classifier.prepare(c[None]))[0, label_index])


def test_hiding_where_the_map_is_high_costs_more(models, astronaut):
    """Checked with the classifier directly, not with the map's own numbers."""
    _, classifier = models
    ex = explain(models, astronaut)
    label = classifier.labels.index(ex.label)
    patch = ex.patch
    # Mean of the map under each square, on the map's own grid.
    starts = patch_starts(classifier.spec.width, patch, ex.stride)
    spots = [(y, x) for y in starts for x in starts]
    means = [float(ex.maps.drop[y : y + patch, x : x + patch].mean()) for y, x in spots]
    hot, cold = spots[int(np.argmax(means))], spots[int(np.argmin(np.abs(means)))]
    p_hot = hidden_probability(classifier, ex.crop, label, *hot, patch)
    p_cold = hidden_probability(classifier, ex.crop, label, *cold, patch)
    assert ex.score - p_hot > 0.1, (hot, p_hot)
    assert p_hot < p_cold - 0.1 and abs(ex.score - p_cold) < 0.02, (hot, p_hot, cold, p_cold)


def test_flip_map_names_the_label_hiding_gives(models, astronaut):
    """Where the map says hiding flips the label, most squares covering that pixel do (checked directly)."""
    _, classifier = models
    ex = explain(models, astronaut, patch=0.5)  # squares big enough to change this near-certain label
    ys, xs = np.nonzero(ex.maps.flip >= 0)
    assert len(ys) > 0, "no square changes the label"
    y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    target = int(ex.maps.flip[y, x])
    starts = patch_starts(classifier.spec.width, ex.patch, ex.stride)
    covering = [(sy, sx) for sy in starts for sx in starts if sy <= y < sy + ex.patch and sx <= x < sx + ex.patch]
    given = []
    for sy, sx in covering:
        c = ex.crop.copy()
        c[sy : sy + ex.patch, sx : sx + ex.patch] = GREY
        given.append(int(classifier.probabilities(classifier.prepare(c[None]))[0].argmax()))
    assert given.count(target) >= max(given.count(k) for k in set(given)), (target, given)
    assert target != classifier.labels.index(ex.label)


def test_keypoints_in_the_crop_and_the_nose_mouth_box(models, astronaut):
    detector, classifier = models
    (face,) = detector.detect(astronaut)
    side = classifier.spec.width
    pts = crop_keypoints(face, classifier.spec) / side  # fractions of the crop side
    nose, mouth = pts[2], pts[3]
    assert 0.25 < nose[0] < 0.75 and 0.25 < nose[1] < mouth[1] < 0.875  # nose above the mouth, both mid-crop
    x1, y1, x2, y2 = np.asarray(nose_mouth_box(pts * side, detector.keypoint_names, side, side)) / side
    assert x1 < min(nose[0], mouth[0]) and max(nose[0], mouth[0]) < x2 and y1 < nose[1] and mouth[1] < y2
    assert nose_mouth_box(pts, ["a", "b"], side, side) is None
    assert nose_mouth_box(None, detector.keypoint_names, side, side) is None
    # the margin the crop adds around the face box: (1 - 1/scale) / 2 of the side (11 px of 96 at 1.3)
    assert border_width(classifier.spec) == round((1 - 1 / classifier.spec.scale) / 2 * side)


def test_the_model_looks_at_nose_and_mouth(models, astronaut, masked):
    """Per pixel, the nose-and-mouth box carries more of the map than the framing border."""
    plain = explain(models, astronaut)
    nm, fr = plain.regions["nose_mouth"], plain.regions["framing"]
    assert nm["density"] > 3 * fr["density"] and nm["share"] > 0.4 > 0.1 > fr["share"], plain.regions
    # Masked, the shipped model reads the mask's upper edge against the eyes (the nose-bridge line
    # that tells mask from incorrect_mask), so the flat fabric of the nose-and-mouth box need not
    # dominate. What must hold: the framing border carries less than its area's share of the map
    # (the from-scratch model put 55 % of it there, on 41 % of the area).
    ex = explain(models, masked)
    assert ex.regions["framing"]["density"] < 1.0, ex.regions


def test_not_face_is_explained_and_rendered(models, astronaut):
    detector, classifier = models
    (face,) = detector.detect(astronaut)
    # A "face" on the dark background below the shoulder, keypoints moved with it.
    shifted = Face(box=(380.0, 300.0, 480.0, 400.0), face_score=0.9,
                   keypoints=face.keypoints + np.array([200.0, 234.0], np.float32))
    ex = explain_face(classifier, detector.keypoint_names, astronaut, shifted, "astro.png", 1, 0.125, 0.0625, GREY)
    assert ex.label == "not_face"
    png = render(ex)
    assert png.dtype == np.uint8 and png.shape[1] > 2 * PANEL and png.shape[0] > PANEL


@pytest.fixture
def main():
    """``maskwatch`` as the console runs it (it builds only the command it is given)."""
    return cli.main


@pytest.fixture
def images(tmp_path, astronaut, masked):
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "astro.png"), astronaut)
    cv2.imwrite(str(d / "masked.jpg"), masked)
    cv2.imwrite(str(d / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return d


def test_cli_writes_one_png_per_face_and_never_overwrites(main, capsys, models_config, images, tmp_path):
    out = tmp_path / "out"
    args = ["explain", "--config", str(models_config), "--out", str(out)]
    ins = [str(images / n) for n in ("astro.png", "masked.jpg", "wall.png")]
    assert main(args + ins) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "no_mask" in lines[0] and " mask " in lines[1] and lines[2].endswith("no face")
    assert "nose+mouth" in lines[0] and "framing" in lines[0]
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == ["astro_face0.png", "masked_face0.png"]
    img = cv2.imread(str(out / "astro_face0.png"))
    assert img is not None and img.shape[1] > 2 * PANEL
    before = (out / "astro_face0.png").read_bytes()
    assert main(args + ["--patch", "0.375", ins[0]]) == 1
    line = capsys.readouterr().out.strip()
    assert "exists" in line and "--force" in line and (out / "astro_face0.png").read_bytes() == before
    assert main(args + ["--patch", "0.375", "--force", ins[0]]) == 0
    assert (out / "astro_face0.png").read_bytes() != before


def test_cli_json_corrupt_file_and_config_errors(main, capsys, models_config, images, tmp_path):
    out = tmp_path / "out"
    rc = main(["explain", "--config", str(models_config), "--out", str(out), "--json",
               str(images / "corrupt.jpg"), str(images / "astro.png")])
    assert rc == 1
    bad, face = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert bad == {"image": str(images / "corrupt.jpg"), "error": "not a readable image"}
    assert face["label"] == "no_mask" and face["face"] == 0 and len(face["box"]) == 4
    assert face["png"] == str(out / "astro_face0.png") and (out / "astro_face0.png").is_file()
    assert face["nose_mouth"]["share"] > face["framing"]["share"]
    assert main(["explain", "--config", str(tmp_path / "missing.yaml"), str(images / "astro.png")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--patch", "2", str(images / "astro.png")])
    assert exc.value.code == 2
