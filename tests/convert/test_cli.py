"""maskwatch-convert CLI: user errors give one clear message, a non-zero exit and no files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from convert.cli import EXTERNAL, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def template(tmp_path: Path, **drop) -> Path:
    side = {
        "kind": "classifier", "name": "t",
        "input": {"height": 16, "width": 16, "channels": 3, "color": "RGB",
                  "normalization": {"mean": [127.5] * 3, "std": [127.5] * 3}},
        "outputs": {"logits": {"shape": [1, 3]}},
        "labels": ["a", "b", "c"], "output": {"name": "logits", "activation": "softmax"},
        "crop": {"scale": 1.3, "align": "none"},
        "provenance": {"source_model": "t"},
    }
    for key in drop:
        side.pop(key)
    p = tmp_path / "template.json"
    p.write_text(json.dumps(side))
    return p


def images(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    return d


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "maskwatch-convert" in capsys.readouterr().out


def test_external_subcommands_registered_when_present():
    names = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for cmd, mod in EXTERNAL.items():
        present = (REPO / (mod.replace(".", "/") + ".py")).is_file()
        assert (cmd in names) == present


def test_corrupt_model_file(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"this is not a zip")
    models = tmp_path / "models"
    models.mkdir()
    rc = main(["quantize", str(bad), "--stem", "x", "--sidecar-template", str(template(tmp_path)),
               "--images", str(images(tmp_path)), "--models-dir", str(models)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "broken.keras: cannot load the Keras model" in err and "Traceback" not in err
    assert list(models.iterdir()) == []


def test_missing_sidecar_field(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    rc = main(["quantize", str(tmp_path / "m.keras"), "--stem", "x", "--sidecar-template",
               str(template(tmp_path, labels=None)), "--images", str(images(tmp_path)), "--models-dir", str(models)])
    assert rc == 2
    assert "template.json: missing required field 'labels'" in capsys.readouterr().err
    assert list(models.iterdir()) == []


def test_bad_template_json(tmp_path, capsys):
    p = tmp_path / "t.json"
    p.write_text("{nope")
    rc = main(["quantize", "m.keras", "--stem", "x", "--sidecar-template", str(p), "--images", str(tmp_path)])
    assert rc == 2 and "t.json: not valid JSON" in capsys.readouterr().err


def test_blazeface_missing_mediapipe_dir(tmp_path, capsys):
    pytest.importorskip("tflite")
    rc = main(["blazeface", "--mediapipe-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "--mediapipe-dir" in capsys.readouterr().err


@pytest.mark.tf
def test_quantize_end_to_end_classifier(tmp_path):
    """A real tiny Keras classifier through the CLI: int8 pair, sums, parity report."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    out = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    src = tmp_path / "m.keras"
    keras.Model(inp, out).save(src)
    models = tmp_path / "models"
    models.mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "convert", "quantize", str(src), "--stem", "cls", "--sidecar-template",
         str(template(tmp_path)), "--images", str(images(tmp_path, 6)), "--models-dir", str(models)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    names = sorted(p.name for p in models.iterdir())
    assert names == ["SHA256SUMS", "cls.json", "cls.parity.json", "cls.parity.md", "cls.tflite"]
    side = json.loads((models / "cls.json").read_text())
    assert side["outputs"]["logits"]["dtype"] == "int8"
    assert "top1_agreement" in json.loads((models / "cls.parity.json").read_text())
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=models, check=True)


def test_pass_through_command_user_error_is_one_line_exit_2(tmp_path, capsys):
    """A pass-through command (here landmark-classifier) raising ConvertError: one line naming the
    flag and the fix, exit 2, no traceback (it used to escape the CLI as a traceback)."""
    assert "landmark-classifier" in EXTERNAL
    missing = tmp_path / "nope" / "crops.npz"
    assert main(["landmark-classifier", "--crops", str(missing), "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"maskwatch-convert landmark-classifier: error: --crops {missing}" in err
    assert "classifier-data" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_quantize_without_a_template_names_the_missing_flag(tmp_path, capsys):
    """No --sidecar-template and no --kind: the message says the fields come from the flags, and which."""
    models = tmp_path / "models"
    models.mkdir()
    rc = main(["quantize", str(tmp_path / "m.keras"), "--stem", "x", "--images", str(images(tmp_path)), "--models-dir", str(models)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no --sidecar-template, so the flags (--kind ...): missing required field 'kind'" in err and "Traceback" not in err
    assert list(models.iterdir()) == []
