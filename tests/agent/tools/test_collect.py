"""``maskwatch collect``: crops of a real clip through the shipped models, the folder contract of
docs/site-data.md (files, crops.csv, collect.json), per-track cap, near-duplicates, appending runs,
and user mistakes (exit 2, one message, no traceback)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.cli import main
from agent.tools.collect import DUPLICATE_MAD, Deduper, thumbnail
from agent.tools.site import CSV_COLUMNS
from agent.config import ConfigError, parse
from agent.pipeline.crop import CropSpec, crop_face

NAME = re.compile(r"^([0-9a-f]{6})_t(\d+)_f(\d+)\.png$")


def collect(capsys, config, *args):
    """Run ``maskwatch collect`` in-process: (exit code, stdout, stderr)."""
    rc = main(["collect", "--config", str(config), *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def rows(folder: Path):
    with open(folder / "crops.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == CSV_COLUMNS
        return [dict(zip(CSV_COLUMNS, r)) for r in reader]


def check_folder(folder: Path):
    """The folder matches docs/site-data.md; returns (rows, collect.json)."""
    got = rows(folder)
    files = sorted(p.name for p in (folder / "unlabeled").iterdir())
    assert sorted(r["file"] for r in got) == files  # one row per crop, one crop per row
    meta = json.loads((folder / "collect.json").read_text())
    size = meta["size"]
    for r in got:
        run, track, frame = NAME.match(r["file"]).groups()
        assert (r["track"], r["frame"]) == (track, frame) and run in {x["run"] for x in meta["runs"]}
        img = cv2.imread(str(folder / "unlabeled" / r["file"]))
        assert img.shape == (size, size, 3)
        probs = {k: float(r[f"p_{k}"]) for k in ("mask", "incorrect_mask", "no_mask", "not_face")}
        assert abs(sum(probs.values()) - 1) < 0.01 and float(r["score"]) == probs[r["label"]]
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", r["time"])
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 and 0 < float(r["face_score"]) <= 1
    return got, meta


def test_collect_from_a_clip_then_append_a_second_run(capsys, models_config, clip, tmp_path):
    out = tmp_path / "site"
    rc, stdout, err = collect(capsys, models_config, "--source", clip.path, "--out", out)
    assert rc == 0, err
    assert re.search(r"saved (\d+) crops of (\d+) tracks .* skipped \d+ near-duplicates, \d+ too small", stdout)
    first, meta = check_folder(out)
    tracks = {r["track"] for r in first}
    assert len(tracks) >= len(clip.people)  # every walker was found and tracked
    assert all(sum(r["track"] == t for r in first) <= 5 for t in tracks)  # default --per-track 5
    assert meta["size"] == 128 and meta["crop"] == {"scale": 1.3, "align": "eyes", "shift_y": 0.0}
    assert meta["labels"] == ["mask", "incorrect_mask", "no_mask", "not_face"]
    assert re.fullmatch(r"[0-9a-f]{64}", meta["classifier"]["sha256"]) and meta["detector"]["name"]
    assert meta["sources"] == [str(clip.path)]
    (run1,) = meta["runs"]
    assert run1["crops"] == len(first) and run1["frames"] == clip.frames and run1["finished"]
    assert {r["source"] for r in first} == {str(clip.path)}
    # The model's guess: the walkers are unmasked.
    assert sum(r["label"] == "no_mask" for r in first) > len(first) / 2
    before = {p.name: p.read_bytes() for p in (out / "unlabeled").iterdir()}

    rc, stdout, err = collect(capsys, models_config, "--source", clip.path, "--out", out, "--per-track", 2)
    assert rc == 0, err
    both, meta = check_folder(out)
    assert both[: len(first)] == first and len(both) > len(first)  # appended, header written once
    assert all((out / "unlabeled" / name).read_bytes() == data for name, data in before.items())  # untouched
    run2 = meta["runs"][1]
    assert run2["run"] != run1["run"] and run2["per_track"] == 2
    second = both[len(first):]
    assert {NAME.match(r["file"]).group(1) for r in second} == {run2["run"]}
    assert all(sum(r["track"] == t for r in second) <= 2 for t in {r["track"] for r in second})

    # A run that would cut crops unlike the folder's is refused, and changes nothing.
    rc, _, err = collect(capsys, models_config, "--source", clip.path, "--out", out, "--size", 96)
    assert rc == 2 and "collect.json" in err and "--size 128" in err
    assert rows(out) == both and len(json.loads((out / "collect.json").read_text())["runs"]) == 2


def test_max_min_face_and_near_duplicates(capsys, models_config, clip, astronaut, tmp_path):
    rc, stdout, err = collect(capsys, models_config, "--source", clip.path, "--out", tmp_path / "a", "--max", 3)
    assert rc == 0, err
    assert len(rows(tmp_path / "a")) == 3 and "stopped: --max 3" in stdout

    rc, stdout, err = collect(capsys, models_config, "--source", clip.path, "--out", tmp_path / "b",
                              "--min-face", 1000)
    assert rc == 0, err
    assert rows(tmp_path / "b") == [] and re.search(r"saved 0 crops .* [1-9]\d* too small \(< 1000 px\)", stdout)

    # One person standing still: the same frame five times is one crop and four near-duplicates.
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        cv2.imwrite(str(frames / f"{i}.png"), astronaut)
    rc, stdout, err = collect(capsys, models_config, "--source", frames, "--out", tmp_path / "c", "--per-track", 10)
    assert rc == 0, err
    got, meta = rows(tmp_path / "c"), json.loads((tmp_path / "c" / "collect.json").read_text())
    assert len(got) == 1 and meta["runs"][0]["duplicates"] == 4 and "skipped 4 near-duplicates" in stdout


def test_near_duplicate_threshold(astronaut, astronaut_face):
    """Jitter and noise of a still face are duplicates; a step or new light is not."""
    spec = CropSpec(128, 128)
    base = crop_face(astronaut, astronaut_face, None, spec)
    dedup = Deduper()
    dedup.add(1, base)
    x1, y1, x2, y2 = astronaut_face
    noisy = np.clip(astronaut + np.random.default_rng(0).normal(0, 4, astronaut.shape), 0, 255).astype(np.uint8)
    assert dedup.is_duplicate(1, crop_face(noisy, astronaut_face, None, spec))
    assert dedup.is_duplicate(1, crop_face(astronaut, (x1 + 1, y1 - 1, x2 + 1, y2 - 1), None, spec))
    assert not dedup.is_duplicate(1, crop_face(astronaut, (x1 + 8, y1, x2 + 8, y2), None, spec))
    assert not dedup.is_duplicate(1, np.clip(base * 1.15, 0, 255).astype(np.uint8))
    assert not dedup.is_duplicate(2, base)  # other tracks have their own crops
    assert float(np.abs(thumbnail(base) - thumbnail(base)).mean()) < DUPLICATE_MAD


@pytest.mark.parametrize("args, words", [
    (["--per-track", "0"], ["--per-track '0'", "whole number"]),
    (["--per-track", "x"], ["--per-track 'x'"]),
    (["--max", "-1"], ["--max '-1'"]),
    (["--size", "8"], ["--size '8'"]),
    (["--min-face", "big"], ["--min-face 'big'"]),
])
def test_bad_numbers_exit_2(capsys, tmp_path, args, words):
    rc, out, err = collect(capsys, "/nonexistent.yaml", "--source", "x.avi", "--out", tmp_path / "s", *args)
    assert rc == 2 and err.startswith("maskwatch: ") and err.count("\n") == 1 and "fix:" in err
    assert all(w in err for w in words) and not (tmp_path / "s").exists()


def test_source_and_out_mistakes_exit_2(capsys, models_config, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    rc, _, err = collect(capsys, models_config, "--source", "x.avi", "--out", a_file)
    assert rc == 2 and f"--out {a_file} is a file" in err and err.count("\n") == 1

    rc, _, err = collect(capsys, models_config, "--source", tmp_path / "missing.avi", "--out", tmp_path / "s")
    assert rc == 2 and "--source" in err and "missing.avi" in err and "no such file" in err and "fix:" in err
    assert err.count("\n") == 1 and not (tmp_path / "s").exists()

    fake = tmp_path / "fake.avi"
    fake.write_text("not a video")
    rc, _, err = collect(capsys, models_config, "--source", fake, "--out", tmp_path / "s")
    assert rc == 2 and "fake.avi" in err and "cannot open as a video" in err

    rc, _, err = collect(capsys, models_config, "--source", tmp_path / "empty", "--out", tmp_path / "s")
    assert rc == 2 and "--source" in err


def test_console_error_has_no_traceback(tmp_path, models_config, repo_root):
    r = subprocess.run([sys.executable, "-m", "agent.cli", "collect", "--config", str(models_config), "--source",
                        str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "s")],
                       capture_output=True, text=True, cwd=repo_root, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "maskwatch: --source" in r.stderr


def test_collect_is_not_reachable_from_the_config():
    """The service never stores faces: no config key turns collecting on."""
    for text in ("collect: {out: /tmp/x}\n", "runtime:\n  collect: true\n"):
        with pytest.raises(ConfigError):
            parse(text)


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["collect", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--source", "--out", "--per-track", "--min-face", "--max", "--size"))
