"""`maskwatch bench`: the table, real frames fitted to a camera, usage errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from agent.cli import main


def test_bench_prints_a_table(capsys, models_config):
    assert main(["bench", "--config", str(models_config), "--frames", "5", "--warmup", "1", "--threads", "1", "2",
                 "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["threads", "faces", "precision"]
    rows = json.loads(out[-1])
    # a row per variant both shipped models pin and thread count: int8 and float16 both timed
    assert [(r["precision"], r["threads"]) for r in rows] == [("int8", 1), ("int8", 2), ("float16", 1), ("float16", 2)]
    assert [ln.split()[2] for ln in out[2:6]] == ["int8", "int8", "float16", "float16"]
    assert 1.0 <= rows[0]["faces"] <= 3.0  # the budget case: up to 3 faces in a 640x480 doorway
    assert rows[2]["faces"] == rows[0]["faces"]  # float16 finds the same faces
    assert rows[0]["ms"]["total"]["median"] > 0 and rows[0]["rss_mb"] > 0
    # and what auto keeps, per thread count, with both invoke times it went by
    auto = [ln for ln in out if ln.startswith("runtime.precision auto, ")]
    assert len(auto) == 2 and all(ln.count("median invoke int8 ") == 2 and ln.count(", float16 ") == 2 for ln in auto)
    assert set(rows[0]["auto"]["detector"]["invoke_ms"]) == {"int8", "float16"}
    assert rows[0]["auto"]["detector"]["runs"] in ("int8", "float16")
    # figures carry the CPU they were measured on (int8 speed depends on its instruction set)
    assert out[-2].startswith("CPU: ") and rows[0]["cpu"]["name"] in out[-2]


def test_bench_times_real_frames_fitted_to_a_camera_with_at_most_n_faces(capsys, models_config, tmp_path, astronaut):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_face.png"), astronaut)  # one face
    cv2.imwrite(str(folder / "b_empty.png"), np.full((300, 500, 3), 90, np.uint8))  # none: left out
    assert main(["bench", "--config", str(models_config), "--source", str(folder), "--size", "640x480",
                 "--max-faces", "3", "--frames", "4", "--warmup", "1", "--threads", "1", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("maskwatch bench: 1 distinct frame(s) 640x480")
    assert json.loads(out[-1])[0]["faces"] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--size", "640"], "--size '640': expected WIDTHxHEIGHT"),
    (["--max-faces", "2"], "--max-faces needs --source"),
    (["--source", "x", "--max-faces", "0"], "--max-faces must be at least 1"),
    (["--frames", "0"], "--frames 0: must be at least 1"),
    (["--warmup", "-1"], "--warmup -1: must be 0 or more"),
    (["--threads", "0"], "--threads 0: each must be between 1 and 64"),
])
def test_bench_usage_errors_name_the_option(capsys, models_config, argv, message):
    assert main(["bench", "--config", str(models_config), "--frames", "2", "--threads", "1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_fit_frame_cuts_the_centre_to_the_aspect():
    from agent.tools.bench import fit_frame

    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, 133:267] = 255  # the centre 4:3 part
    got = fit_frame(wide, (64, 48))
    assert got.shape == (48, 64, 3) and got[:, 2:-2].min() == 255
    tall = np.zeros((400, 120, 3), np.uint8)
    tall[155:245] = 255
    got = fit_frame(tall, (40, 30))
    assert got.shape == (30, 40, 3) and got[1:-1].min() == 255
