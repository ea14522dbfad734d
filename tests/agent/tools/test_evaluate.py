"""agent.tools.evaluate: greedy matching, bad inputs, every annotation format alike, and the whole command on
scenes-ilc2021 val (the readers themselves: tests/agent/tools/annotations)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.tools.annotations import Annotation
from agent.cli import main
from agent.tools.evaluate import format_table, summarize
from agent.tools.scoring import match_greedy, score_image, wilson
from tests.agent.tools.annotations.writers import write_all, write_voc
from tests.exif import STORE, oriented_jpeg

SCENES = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "scenes-ilc2021"


# --- match_greedy -----------------------------------------------------------------------------


def test_higher_score_wins_a_shared_face():
    gt = [(0, 0, 10, 10)]
    dets = [((0, 0, 10, 9), 0.6), ((0, 0, 10, 8), 0.9)]  # the lower-IoU detection has the higher score
    assert match_greedy(dets, gt) == [1]


def test_one_detection_per_face_and_second_goes_elsewhere():
    gts = [(0, 0, 10, 10), (2, 0, 12, 10)]  # overlapping faces
    dets = [((0, 0, 10, 10), 0.9), ((0, 0, 10, 10), 0.8)]
    # first takes face 0 (IoU 1), second can only take face 1 (IoU 8/12 = 0.67)
    assert match_greedy(dets, gts) == [0, 1]
    assert match_greedy(dets[:1], gts) == [0, None]


def test_score_ties_keep_input_order_and_iou_ties_lowest_face():
    gts = [(0, 0, 10, 10), (0, 0, 10, 10)]
    dets = [((0, 0, 10, 10), 0.5), ((0, 0, 10, 10), 0.5)]
    assert match_greedy(dets, gts) == [0, 1]
    assert match_greedy([((0, 0, 10, 10), 0.5)], gts) == [0, None]


def test_iou_threshold_is_inclusive():
    gt = [(0, 0, 10, 10)]
    assert match_greedy([((0, 0, 5, 10), 1.0)], gt, 0.5) == [0]  # IoU exactly 0.5
    assert match_greedy([((0, 0, 4.9, 10), 1.0)], gt, 0.5) == [None]
    assert match_greedy([], gt) == [None] and match_greedy([((0, 0, 1, 1), 1.0)], []) == []


def test_wilson_interval_brackets_the_proportion():
    lo, hi = wilson(149, 195)
    assert round(lo, 3) == 0.700 and round(hi, 3) == 0.818
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0 and all(v != v for v in wilson(0, 0))


def test_summarize_counts_alerts_and_sizes():
    per_image = {"a.jpg": {"spurious": 2, "faces": [
        {"label": "no_mask", "height": 50, "predicted": "incorrect_mask"},
        {"label": "mask", "height": 20, "predicted": "no_mask"},
        {"label": "mask", "height": 60, "predicted": None},
    ]}}
    s = summarize(per_image, min_size=40)
    assert s["all"]["all"] == {"faces": 3, "found": 2, "found_pct": 66.67, "correct": 0, "correct_pct": 0.0}
    assert s["all"]["unmasked_caught"]["count"] == 1 and s["all"]["masked_falsely_alerted"]["count"] == 1
    assert s["min_size_faces"]["all"]["faces"] == 2 and s["min_size_faces"]["masked_falsely_alerted"]["count"] == 0
    assert s["confusion"]["mask"] == {"mask": 0, "incorrect_mask": 0, "no_mask": 1, "missed": 1}
    assert s["spurious_per_image"] == 2.0
    assert s["spurious_unmasked"] == 0  # outcomes saved before the count existed read as none


def test_incorrectly_worn_masks_alert_as_either_unmasked_label():
    per_image = {"a.jpg": {"spurious": 0, "faces": [
        {"label": "incorrect_mask", "height": 50, "predicted": "no_mask"},
        {"label": "incorrect_mask", "height": 50, "predicted": "incorrect_mask"},
        {"label": "incorrect_mask", "height": 50, "predicted": "mask"},
        {"label": "incorrect_mask", "height": 50, "predicted": None},
    ]}}
    r = summarize(per_image, min_size=40)["min_size_faces"]["incorrect_alerted"]
    assert (r["count"], r["of"], r["found"]) == (2, 4, 3) and r["pct"] == 50.0 and r["found_pct"] == 66.67


def test_spurious_detections_called_unmasked_are_counted():
    gts = [Annotation((0, 0, 10, 10), "mask")]
    faces = [{"box": [0, 0, 10, 10], "label": "no_mask", "face_score": 0.9},  # matched: not spurious
             {"box": [50, 50, 60, 60], "label": "incorrect_mask", "face_score": 0.8},
             {"box": [80, 80, 90, 90], "label": "mask", "face_score": 0.7},
             {"box": [20, 20, 30, 30], "label": "no_mask", "face_score": 0.6}]
    r = score_image(faces, gts)
    assert r["spurious"] == 3 and r["spurious_unmasked"] == 2
    s = summarize({"a.jpg": r})
    assert s["spurious_unmasked"] == 2
    assert "2 of them called unmasked (would alert)" in format_table(s)


# --- bad inputs, formats ---------------------------------------------------------------------


def _evaluate(capsys, *args):
    rc = main(["evaluate", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, astronaut, astronaut_face, models_config):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "astro.jpg"), astronaut)
    (tmp_path / "empty").mkdir()
    good = tmp_path / "b.csv"
    good.write_text("image,xmin,ymin,xmax,ymax,label\nastro.jpg,1,1,20,20,no_mask\n")
    bad_label = tmp_path / "bad.csv"
    bad_label.write_text("image,xmin,ymin,xmax,ymax,label\nastro.jpg,1,1,20,20,beard\n")
    write_voc(tmp_path / "voc", {"astro.jpg": astronaut}, {"astro.jpg": [((0, 0, 900, 900), "mask")]})
    existing = tmp_path / "out.json"
    existing.write_text("{}")
    cases = [
        (["--boxes", str(good), str(tmp_path / "empty")], "no image in folder"),
        (["--boxes", str(good), str(tmp_path / "nope" / "*.jpg")], "no such file"),
        (["--boxes", str(tmp_path / "missing.csv"), str(imgs)], "boxes file not found"),
        (["--boxes", str(bad_label), str(imgs)], "bad.csv:2: unknown label 'beard'"),
        (["--boxes", str(bad_label), str(imgs)], "fix: --label-map beard=mask|incorrect_mask|no_mask"),
        (["--boxes", str(good), "--label-map", "beard", str(imgs)], "--label-map: 'beard' is not FROM=TO"),
        (["--boxes", str(tmp_path / "empty"), str(imgs)], "neither a Pascal VOC folder"),
        (["--boxes", str(tmp_path / "voc"), str(imgs)], "astro.xml: object 1: box"),
        (["--boxes", str(good), "--json", str(existing), str(imgs)], "already exists (use --force"),
        (["--boxes", str(good), "--split", "val", str(imgs)], "images.csv: split file not found"),
        (["--boxes", str(good), str(imgs / "other.jpg")], "other.jpg: no such file"),
        (["--boxes", str(good), "--iou", "0", str(imgs)], "--iou 0: give the least overlap"),
        (["--boxes", str(good), "--iou", "1.5", str(imgs)], "--iou 1.5: give the least overlap"),
        (["--boxes", str(good), "--iou", "nan", str(imgs)], "--iou nan: give the least overlap"),
        (["--boxes", str(good), "--min-size", "-5", str(imgs)], "--min-size -5: give the face height"),
    ]
    for args, msg in cases:
        rc, out, err = _evaluate(capsys, "--config", str(models_config), *args)
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert existing.read_text() == "{}"
    # with --force it runs and overwrites
    rc, out, err = _evaluate(capsys, "--config", str(models_config), "--boxes", str(good), "--json", str(existing),
                             "--force", str(imgs))
    assert rc == 0 and json.loads(existing.read_text())["images"] == 1


def test_astronaut_is_found_and_scored(capsys, tmp_path, astronaut, astronaut_face, models_config):
    cv2.imwrite(str(tmp_path / "astro.jpg"), astronaut)
    boxes = tmp_path / "b.csv"
    x1, y1, x2, y2 = astronaut_face
    boxes.write_text(f"image,xmin,ymin,xmax,ymax,label\nastro.jpg,{x1},{y1},{x2},{y2},no_mask\n")
    png = tmp_path / "c.png"
    rc, out, _ = _evaluate(capsys, "--config", str(models_config), "--boxes", str(boxes), "--confusion-png", str(png),
                           "--json", str(tmp_path / "r.json"), str(tmp_path))
    r = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0 and "unmasked caught" in out
    assert r["all"]["no_mask"]["found"] == 1 and r["all"]["no_mask"]["correct"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_iou_sets_how_far_a_box_drawn_otherwise_may_be(capsys, tmp_path, astronaut, models_config):
    # the annotation: the top 45 % of the box the detector draws (IoU 0.45 with it), as a turned face's
    # visible part may be boxed; missed at the usual 0.5, found at --iou 0.4, and the JSON says which rule
    cv2.imwrite(str(tmp_path / "astro.jpg"), astronaut)
    assert main(["detect", "--json", "--config", str(models_config), str(tmp_path / "astro.jpg")]) == 0
    faces = json.loads(capsys.readouterr().out.splitlines()[0])["faces"]
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0]["box"]
    boxes = tmp_path / "b.csv"
    boxes.write_text(f"image,xmin,ymin,xmax,ymax,label\nastro.jpg,{x1},{y1},{x2},{y1 + 0.45 * (y2 - y1)},no_mask\n")
    found = {}
    for iou in ("0.5", "0.4"):
        out = tmp_path / f"r{iou}.json"
        rc, text, _ = _evaluate(capsys, "--config", str(models_config), "--boxes", str(boxes), "--iou", iou,
                                "--json", str(out), str(tmp_path))
        r = json.loads(out.read_text())
        assert rc == 0 and f"IoU >= {iou}" in text and r["iou"] == float(iou)
        found[iou] = (r["all"]["no_mask"]["found"], r["spurious"])
    assert found == {"0.5": (0, 1), "0.4": (1, 0)}


def test_a_phone_photo_is_scored_upright_whichever_frame_its_boxes_were_drawn_on(
        capsys, tmp_path, astronaut, astronaut_face, models_config):
    """A photo stored sideways with EXIF orientation 6 is scored as viewers (and `maskwatch detect`) show it.
    Boxes drawn on its stored pixels (labelImg ignores the tag) are turned with it (--boxes-on stored); boxes
    that leave the frame they claim and fit the other are an error naming the flag."""
    upright = astronaut[:384]  # 512 wide, 384 tall; stored 384 wide, 512 tall
    (tmp_path / "phone.jpg").write_bytes(oriented_jpeg(upright, 6))
    x1, y1, x2, y2 = astronaut_face
    header = "image,xmin,ymin,xmax,ymax,label\n"
    seen = tmp_path / "seen.csv"  # the face, a box that only fits the upright frame, one whose turn only fits it
    seen.write_text(header + f"phone.jpg,{x1},{y1},{x2},{y2},no_mask\nphone.jpg,420,300,480,370,mask\n"
                    "phone.jpg,40,100,100,160,mask\n")
    # the same two boxes on the stored pixels (the picture turned 90 degrees counter-clockwise)
    stored = tmp_path / "stored.csv"
    stored.write_text(header + f"phone.jpg,{y1},{512 - x2},{y2},{512 - x1},no_mask\nphone.jpg,300,32,370,92,mask\n"
                      "phone.jpg,100,412,160,472,mask\n")
    results = []
    for boxes, on in ((seen, "upright"), (stored, "stored")):
        out = tmp_path / f"{on}.json"
        rc, _, err = _evaluate(capsys, "--config", str(models_config), "--boxes", str(boxes), "--boxes-on", on,
                               "--json", str(out), str(tmp_path))
        assert rc == 0, err
        results.append(json.loads(out.read_text()))
    assert results[0]["all"]["no_mask"]["correct"] == 1  # found and labelled: scored upright
    assert results[0]["per_image"] == results[1]["per_image"]  # the stored boxes, turned, are the seen ones
    for boxes, on, flag in ((stored, "upright", "stored"), (seen, "stored", "upright")):
        rc, _, err = _evaluate(capsys, "--config", str(models_config), "--boxes", str(boxes), "--boxes-on", on,
                               str(tmp_path))
        assert rc == 2 and "phone.jpg: its boxes fit the photo" in err and f"fix: pass --boxes-on {flag}" in err
        assert "Traceback" not in err
    past = tmp_path / "past.csv"  # an annotator's box past the photo's edge in either frame: scored as always
    past.write_text(header + f"phone.jpg,{x1},{y1},{x2},{y2},no_mask\nphone.jpg,300,300,600,600,mask\n")
    rc, _, err = _evaluate(capsys, "--config", str(models_config), "--boxes", str(past), str(tmp_path))
    assert rc == 0, err


@pytest.mark.parametrize("orientation", sorted(STORE))
def test_boxes_on_the_stored_pixels_are_turned_with_the_photo(tmp_path, astronaut, orientation):
    """Each way a camera stores a picture: a box drawn where the face lies in the stored pixels lands on the
    face in the upright photo (the turn found from the pixels, not from the tag)."""
    from types import SimpleNamespace

    from agent.tools.scoring import read_annotated_photo

    upright = astronaut[:384]
    path = tmp_path / "p.jpg"
    path.write_bytes(oriented_jpeg(upright, orientation))
    mark = np.zeros(upright.shape[:2], np.uint8)
    mark[60:180, 170:280] = 255  # where the face is, upright
    ys, xs = np.nonzero(STORE[orientation](mark))  # ...and in the stored pixels
    drawn = Annotation((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), "no_mask")
    cfg = SimpleNamespace(source=SimpleNamespace(max_pixels=10_000_000))
    image, (moved,) = read_annotated_photo(str(path), cfg, [drawn], "stored")
    assert image.shape == upright.shape and moved.box == (170.0, 60.0, 280.0, 180.0) and moved.label == "no_mask"


def _two_scenes(astronaut, astronaut_face):
    """The astronaut (unmasked) and its mirror image labelled masked with a second, faceless box."""
    x1, y1, x2, y2 = astronaut_face
    images = {"astro.jpg": astronaut, "mirror.jpg": cv2.flip(astronaut, 1)}
    faces = {"astro.jpg": [((x1, y1, x2, y2), "no_mask")],
             "mirror.jpg": [((512 - x2, y1, 512 - x1, y2), "mask"), ((20, 400, 60, 448), "incorrect_mask")]}
    return images, faces


def test_every_format_scores_the_same(capsys, tmp_path, astronaut, astronaut_face, models_config):
    images, faces = _two_scenes(astronaut, astronaut_face)
    paths = write_all(tmp_path, images, faces)
    folder = tmp_path / "yolo" / "valid" / "images"  # the photos, written by the YOLO writer
    results = {}
    for fmt, boxes in [*paths.items(), ("yolo-labels", folder.parent / "labels")]:
        out = tmp_path / f"result-{fmt}.json"
        rc, _, err = _evaluate(capsys, "--config", str(models_config), "--boxes", str(boxes), "--json", str(out), str(folder))
        assert rc == 0, (fmt, err)
        results[fmt] = json.loads(out.read_text())
    assert all(r == results["csv"] for r in results.values()), {k: r["all"]["all"] for k, r in results.items()}
    assert results["csv"]["images"] == 2 and results["csv"]["all"]["all"]["faces"] == 3
    assert results["csv"]["all"]["no_mask"]["found"] == 1  # the formats agree on a real detection, not on nothing


def test_kaggle_style_voc_set_runs_as_exported(capsys, tmp_path, astronaut, astronaut_face, models_config):
    """The public face-mask set's layout: images/*.png, annotations/*.xml from labelImg with its labels."""
    images, faces = _two_scenes(astronaut, astronaut_face)
    kaggle = {"mask": "with_mask", "no_mask": "without_mask", "incorrect_mask": "mask_weared_incorrect"}
    pngs = {f"maksssksksss{i}.png": image for i, image in enumerate(images.values())}
    (tmp_path / "images").mkdir()
    for name, image in pngs.items():
        cv2.imwrite(str(tmp_path / "images" / name), image)
    write_voc(tmp_path / "annotations", pngs, dict(zip(pngs, faces.values())), kaggle)
    before = {p.name: p.read_bytes() for p in (tmp_path / "annotations").iterdir()}
    out = tmp_path / "r.json"
    rc, table, err = _evaluate(capsys, "--config", str(models_config), "--boxes", str(tmp_path / "annotations"),
                               "--json", str(out), str(tmp_path / "images"))
    r = json.loads(out.read_text())
    assert rc == 0 and err == "" and "unmasked caught" in table
    assert (r["all"]["mask"]["faces"], r["all"]["no_mask"]["faces"], r["all"]["incorrect_mask"]["faces"]) == (1, 1, 1)
    assert {p.name: p.read_bytes() for p in (tmp_path / "annotations").iterdir()} == before


# --- done-when: the command equals an independent scorer on the val split -----------------------


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _independent(detections, gts):
    """Predicted label (or None) per annotated face: greedy by detector score, IoU >= 0.5."""
    taken = {}
    for det in sorted(detections, key=lambda d: -d["face_score"]):
        free = [(_iou(det["box"], g[0]), -i) for i, g in enumerate(gts) if i not in taken]
        if free and max(free)[0] >= 0.5:
            taken[-max(free)[1]] = det["label"]
    return [taken.get(i) for i in range(len(gts))]


@pytest.mark.skipif(not SCENES.is_dir(), reason="needs ../shared/datasets/scenes-ilc2021")
def test_val_split_matches_an_independent_scorer(capsys, tmp_path, models_config):
    with open(SCENES / "images.csv", newline="") as fh:
        val = [str(SCENES / "images" / r["image"]) for r in csv.DictReader(fh) if r["split"] == "val"]
    gts = {}
    with open(SCENES / "boxes.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            gts.setdefault(r["image"], []).append(
                ([float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")], r["label"]))
    assert main(["detect", "--json", "--config", str(models_config), *val]) == 0
    detected = {Path(o["image"]).name: o["faces"] for o in map(json.loads, capsys.readouterr().out.splitlines())}

    out = tmp_path / "r.json"
    # the command picks the split itself from the whole folder; the independent side uses the explicit list
    rc, _, _ = _evaluate(capsys, "--config", str(models_config), "--boxes", str(SCENES / "boxes.csv"),
                         "--split", "val", "--json", str(out), str(SCENES / "images"))
    r = json.loads(out.read_text())
    scored = [n for n in detected if n in gts]
    assert rc == 0 and sorted(r["per_image"]) == sorted(scored) and len(scored) > 100
    counts = {lab: [0, 0, 0] for lab in ("mask", "incorrect_mask", "no_mask")}  # faces, found, correct
    for name in scored:
        mine = _independent(detected[name], gts[name])
        assert [f["predicted"] for f in r["per_image"][name]["faces"]] == mine, name  # to the face
        for (_, label), pred in zip(gts[name], mine):
            counts[label][0] += 1
            counts[label][1] += pred is not None
            counts[label][2] += pred == label
    for label, (faces, found, correct) in counts.items():
        assert (r["all"][label]["faces"], r["all"][label]["found"], r["all"][label]["correct"]) == (faces, found, correct)
    assert sum(c[1] for c in counts.values()) > 100  # the pipeline really finds faces
