"""`maskwatch detect`: the JSON contract, exit codes, videos, annotated copies, odd images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from agent.cli import main
from tests.exif import oriented_jpeg


FACE_LABELS = {"mask", "incorrect_mask", "no_mask"}


def check_record(obj):
    assert set(obj) >= {"image", "width", "height", "faces", "ms"}
    assert set(obj["ms"]) == {"detect", "classify", "total"}
    assert obj["ms"]["total"] >= obj["ms"]["detect"]
    for f in obj["faces"]:
        assert set(f) == {"box", "label", "score", "face_score", "scores"}
        assert f["label"] in FACE_LABELS and set(f["scores"]) == FACE_LABELS
        assert f["score"] == f["scores"][f["label"]]
        x1, y1, x2, y2 = f["box"]
        assert 0 <= x1 < x2 <= obj["width"] and 0 <= y1 < y2 <= obj["height"]


@pytest.fixture
def inputs(tmp_path, astronaut):
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "astro.jpg"), astronaut)
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    (d / "junk.jpg").write_bytes(b"\x00not an image at all")
    return d


def run_json(capsys, *args):
    rc = main(["detect", "--json", *args])
    out = capsys.readouterr().out
    return rc, [json.loads(ln) for ln in out.splitlines()]


def test_detect_json_contract_and_exit_1_on_junk(capsys, models_config, inputs):
    given = [str(inputs / "astro.jpg"), str(inputs / "junk.jpg"), str(inputs / "missing.jpg"), str(inputs / "gray.png")]
    rc, objs = run_json(capsys, "--config", str(models_config), *given)
    assert rc == 1
    assert [o["image"] for o in objs] == given  # one object per input, paths as given, in order
    astro, junk, missing, gray = objs
    check_record(astro)
    check_record(gray)
    assert (astro["width"], astro["height"]) == (512, 512) and len(astro["faces"]) == 1
    assert len(gray["faces"]) == 1
    assert set(junk) == {"image", "error"} and set(missing) == {"image", "error"}


def test_detect_all_readable_exit_0_and_folder(capsys, models_config, inputs):
    (inputs / "junk.jpg").unlink()
    rc, objs = run_json(capsys, "--config", str(models_config), str(inputs))
    assert rc == 0 and len(objs) == 2
    for o in objs:
        check_record(o)


def test_detect_video_one_object_per_frame(capsys, models_config, clip):
    rc, objs = run_json(capsys, "--config", str(models_config), str(clip.path))
    assert rc == 0 and len(objs) == clip.frames
    assert [o["frame"] for o in objs] == list(range(clip.frames))
    assert all(o["image"] == str(clip.path) for o in objs)
    assert sum(len(o["faces"]) > 0 for o in objs) > clip.frames // 2


def test_detect_annotate_and_text_output(capsys, models_config, inputs, tmp_path):
    out = tmp_path / "ann"
    rc = main(["detect", "--config", str(models_config), "--annotate", str(out), str(inputs / "astro.jpg")])
    text = capsys.readouterr().out
    assert rc == 0 and "astro.jpg: 1 face(s)" in text
    img = cv2.imread(str(out / "astro.jpg"))
    assert img is not None and img.shape == (512, 512, 3)
    assert np.abs(img.astype(int) - cv2.imread(str(inputs / "astro.jpg")).astype(int)).max() > 100  # drawn on


def test_detect_odd_images(capsys, tmp_path, detector_json, classifier_json, astronaut):
    """16-bit and RGBA files are converted; an image above source.max_pixels is an error line."""
    d = tmp_path / "odd"
    d.mkdir()
    cv2.imwrite(str(d / "deep.png"), astronaut.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "alpha.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA))
    big = np.zeros((600, 600, 3), np.uint8)
    cv2.imwrite(str(d / "huge.png"), big)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
                   "source:\n  max_pixels: 300000\n")
    rc, objs = run_json(capsys, "--config", str(cfg), str(d / "deep.png"), str(d / "alpha.png"), str(d / "huge.png"))
    assert rc == 1
    deep, alpha, huge = objs
    check_record(deep)
    check_record(alpha)
    assert huge == {"image": str(d / "huge.png"), "error": "unusable image (too large)"}


def test_detect_reads_a_phone_photo_upright(capsys, models_config, tmp_path, astronaut):
    """A portrait phone photo (stored sideways, EXIF orientation 6) is scored as it is seen: the same
    face, box and label as the same picture stored upright; read as stored, the face lies on its side."""
    up, side = tmp_path / "upright.jpg", tmp_path / "phone.jpg"
    up.write_bytes(oriented_jpeg(astronaut, 1))
    side.write_bytes(oriented_jpeg(astronaut, 6))
    rc, (a, b) = run_json(capsys, "--config", str(models_config), str(up), str(side))
    assert rc == 0 and len(a["faces"]) == len(b["faces"]) == 1
    assert a["faces"][0]["label"] == b["faces"][0]["label"]
    assert np.abs(np.subtract(a["faces"][0]["box"], b["faces"][0]["box"])).max() < 4
