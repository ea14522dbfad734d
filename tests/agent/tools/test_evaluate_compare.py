"""``maskwatch evaluate --classifier A --classifier B``: one detector, each classifier scored on the same
detections, tables side by side (one column group per model), all saved in --json."""

from __future__ import annotations

import json

import cv2

from agent.cli import main


def _evaluate(capsys, *args):
    rc = main(["evaluate", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _scene(tmp_path, astronaut, astronaut_face):
    cv2.imwrite(str(tmp_path / "astro.jpg"), astronaut)
    boxes = tmp_path / "b.csv"
    x1, y1, x2, y2 = astronaut_face
    boxes.write_text(f"image,xmin,ymin,xmax,ymax,label\nastro.jpg,{x1},{y1},{x2},{y2},no_mask\n")
    return boxes


def test_two_classifiers_side_by_side(capsys, tmp_path, astronaut, astronaut_face, models_config, classifier_json, copy_model):
    boxes = _scene(tmp_path, astronaut, astronaut_face)

    def swapped(meta):  # a different model: its mask and no_mask outputs swap meanings
        labels = meta["labels"]
        i, j = labels.index("mask"), labels.index("no_mask")
        labels[i], labels[j] = labels[j], labels[i]
        meta["name"], meta["version"] = "swapped-classifier", "9.9"

    other = copy_model(classifier_json, swapped)
    out_json = tmp_path / "r.json"
    rc, out, err = _evaluate(capsys, "--config", models_config, "--boxes", boxes, "--classifier", classifier_json,
                             "--classifier", other, "--json", out_json, tmp_path)
    assert rc == 0, err
    shipped = json.loads(classifier_json.read_text())
    lines = out.splitlines()
    # column groups named by model name and version, in the order given
    assert lines[1].split() == [shipped["name"], "swapped-classifier"]
    assert lines[2].split() == [shipped["version"], "9.9"]
    no_mask = next(ln for ln in lines if ln.strip().startswith("no_mask"))
    assert no_mask.split() == ["no_mask", "1", "1", "100.0", "100.0", "1", "100.0", "0.0"]
    assert f"confusion of {shipped['name']} {shipped['version']}" in out and "confusion of swapped-classifier 9.9" in out

    r = json.loads(out_json.read_text())
    assert r["images"] == 1 and [m["name"] for m in r["models"]] == [shipped["name"], "swapped-classifier"]
    first, second = r["models"]
    assert first["sidecar"] == str(classifier_json) and second["sidecar"] == str(other)
    assert first["all"]["no_mask"]["correct"] == 1 and second["all"]["no_mask"]["correct"] == 0
    assert second["confusion"]["no_mask"]["mask"] == 1
    # same detections for both: the same face matched at the same place
    assert first["per_image"]["astro.jpg"]["faces"][0]["box"] == second["per_image"]["astro.jpg"]["faces"][0]["box"]


def test_one_classifier_matches_the_plain_command(capsys, tmp_path, astronaut, astronaut_face, models_config, classifier_json):
    boxes = _scene(tmp_path, astronaut, astronaut_face)
    plain, compared = tmp_path / "plain.json", tmp_path / "compared.json"
    assert _evaluate(capsys, "--config", models_config, "--boxes", boxes, "--json", plain, tmp_path)[0] == 0
    rc, out, _ = _evaluate(capsys, "--config", models_config, "--boxes", boxes, "--classifier", classifier_json,
                           "--json", compared, tmp_path)
    assert rc == 0 and "one column group per classifier" in out
    (model,) = json.loads(compared.read_text())["models"]
    for key, value in json.loads(plain.read_text()).items():
        assert model[key] == value, key


def test_bad_classifier_options_exit_2(capsys, tmp_path, astronaut, astronaut_face, models_config, classifier_json,
                                       detector_json):
    boxes = _scene(tmp_path, astronaut, astronaut_face)
    cases = [
        (["--classifier", tmp_path / "missing.json"], "missing.json: model sidecar not found"),
        (["--classifier", detector_json], "expected a 'classifier'"),
        (["--classifier", classifier_json, "--confusion-png", tmp_path / "c.png"], "--confusion-png draws one model"),
    ]
    for args, msg in cases:
        rc, out, err = _evaluate(capsys, "--config", models_config, "--boxes", boxes, *args, tmp_path)
        assert rc == 2 and msg in err and "Traceback" not in err and out == "", (args, err)
    assert not (tmp_path / "c.png").exists()
