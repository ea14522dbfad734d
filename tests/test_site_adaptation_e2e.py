"""Site adaptation end to end, as an installer does it, with real parts only.

``maskwatch collect`` on a generated doorway clip (masked and unmasked walkers) -> the labelling page
in headless Chromium, keys pressed by what each walker really wears -> ``maskwatch-convert finetune``
(a tiny run) -> ``maskwatch evaluate`` with the old and the new classifier side by side on annotated
real scenes. Needs TensorFlow (the ``convert`` extra), Chromium and the shared data set.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import chromium_driver, skip_reason, wait_for

REPO = Path(__file__).resolve().parent.parent
SCENES = REPO.parent / "shared" / "datasets" / "scenes-ilc2021"
KEYS = {"mask": "1", "incorrect_mask": "2", "no_mask": "3", "not_face": "4"}

pytestmark = pytest.mark.tf


def _maskwatch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def _convert(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "convert", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def walkers_clip(tmp_path_factory):
    """A doorway clip with two masked and two unmasked people passing one after another."""
    pytest.importorskip("skimage")
    from agent.tools.demo import Person, make_clip

    people = [Person(masked=False, height=230), Person(masked=True, height=220, left_to_right=False),
              Person(masked=False, height=200, left_to_right=False), Person(masked=True, height=240)]
    return make_clip(tmp_path_factory.mktemp("site-clip") / "door.avi", people)


def test_collect_label_finetune_evaluate(tmp_path, walkers_clip, detector_json, classifier_json):
    pytest.importorskip("tensorflow")
    if skip_reason():
        pytest.skip(skip_reason())
    if not (SCENES / "boxes.csv").is_file():
        pytest.skip(f"{SCENES} not there (the shared data set)")

    # The models folder of this site: a copy, so the shipped one is never touched.
    models = tmp_path / "models"
    models.mkdir()
    for side in (detector_json, classifier_json):
        meta = json.loads(side.read_text())
        master = meta.get("provenance", {}).get("float_model")  # the classifier's float weights
        # and the variants the sidecar pins (runtime.precision: auto refuses a pair copied without them)
        variants = [v["sidecar"] for v in meta.get("variants", {}).values()]
        variants += [json.loads((side.parent / v).read_text())["model_file"] for v in variants]
        for name in (side.name, meta["model_file"], *variants) + ((master,) if master else ()):
            shutil.copy(side.parent / name, models / name)
    config = tmp_path / "config.yaml"
    config.write_text("runtime:\n  camera: site-test\n  stats_interval_s: 0\n"
                      f"  state_dir: {tmp_path}\n"
                      f"detector:\n  model: models/{detector_json.name}  # the site's detector\n"
                      "classifier:\n  model: models/mask_classifier.json  # replaced by finetune\n")
    shipped = {p.name: p.read_bytes() for p in models.iterdir()}

    # 1. collect: crops of every walker into site/unlabeled
    site = tmp_path / "site"
    r = _maskwatch("collect", "--config", str(config), "--source", str(walkers_clip.path), "--out", str(site),
                   "--per-track", "6")
    assert r.returncode == 0, r.stderr
    with open(site / "crops.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tracks = sorted({int(row["track"]) for row in rows})
    assert len(rows) >= 8 and len(tracks) >= 3, (rows, r.stdout)
    assert sorted(p.name for p in (site / "unlabeled").iterdir()) == sorted(row["file"] for row in rows)

    # What each crop really shows: walkers pass one at a time, so order of first appearance = person.
    first_frame = {t: min(int(row["frame"]) for row in rows if int(row["track"]) == t) for t in tracks}
    frames_per_person = walkers_clip.frames / len(walkers_clip.people)
    truth = {}
    for row in rows:
        person = walkers_clip.people[min(int(first_frame[int(row["track"])] // frames_per_person),
                                         len(walkers_clip.people) - 1)]
        truth[row["file"]] = "mask" if person.masked else "no_mask"
    assert set(truth.values()) == {"mask", "no_mask"}

    # 2. label: the real page in headless Chromium, one key per crop, one undo on the way
    from agent.tools.label_http import LabelServer
    from selenium.webdriver.common.by import By

    with LabelServer(site) as server, chromium_driver(tmp_path) as driver:
        driver.get(server.url)
        wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        body = driver.find_element(By.TAG_NAME, "body")
        done = 0

        def press(key: str) -> None:
            nonlocal done
            body.send_keys(key)
            done += 1
            wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-actions") == str(done))

        undone = False
        for _ in range(len(rows) + 1):
            shown = driver.find_element(By.ID, "file").text.strip()
            if not shown:
                break
            name = next(n for n in truth if n in shown)
            if not undone:  # a slip of the finger, then undo
                wrong = "not_face"
                press(KEYS[wrong])
                assert (site / wrong / name).is_file()
                press("u")
                assert (site / "unlabeled" / name).is_file()
                undone = True
            press(KEYS[truth[name]])
        assert driver.find_element(By.ID, "done").is_displayed()
    assert not list((site / "unlabeled").iterdir())
    for name, label in truth.items():
        assert (site / label / name).is_file(), name

    # 3. finetune (tiny): a new model beside the old one, config switched only because we ask
    r = _convert("finetune", "--data", str(site), "--base", str(models / "mask_classifier.json"),
                 "--models-dir", str(models), "--base-limit", "12", "--epochs", "1", "--holdout", "0.25",
                 "--switch-config", str(config))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "site held-out" in r.stdout and "base val" in r.stdout, r.stdout
    new_side = json.loads((models / "mask_classifier_site.json").read_text())
    old_side = json.loads((models / "mask_classifier.json").read_text())
    assert new_side["version"] != old_side["version"]
    assert (models / "mask_classifier_site.tflite").is_file()
    for name, data in shipped.items():  # the old models stand as they were
        assert (models / name).read_bytes() == data, name
    assert "models/mask_classifier_site.json" in config.read_text()
    assert "# replaced by finetune" in config.read_text()  # the comment survives the switch

    # 4. evaluate: old and new side by side, on annotated real scenes
    with open(SCENES / "images.csv", newline="") as f:
        val = [row["image"] for row in csv.DictReader(f) if row["split"] == "val"][:12]
    out = tmp_path / "compare.json"
    r = _maskwatch("evaluate", "--config", str(config), "--boxes", str(SCENES / "boxes.csv"),
                   "--classifier", str(models / "mask_classifier.json"),
                   "--classifier", str(models / "mask_classifier_site.json"),
                   "--json", str(out), *(str(SCENES / "images" / n) for n in val))
    assert r.returncode == 0, r.stderr
    assert old_side["version"] in r.stdout and new_side["version"] in r.stdout, r.stdout
    report = json.loads(out.read_text())
    assert [m["version"] for m in report["models"]] == [old_side["version"], new_side["version"]]
