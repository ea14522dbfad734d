"""agent.tools.evaluate_stream: seeded clips of a photo, alerts matched to people, and ``evaluate --stream`` end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np

from agent.tools.annotations import Annotation
from agent.cli import main
from agent.tools.evaluate_stream import JITTER_PX, ClipSpec, clip_frames, format_stream_table, run_clip, summarize_stream
from tests.agent.tools.annotations.writers import write_csv

PHOTO = np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (120, 1, 3))


def test_clip_is_seeded_by_seed_and_name_and_stays_close_to_the_photo():
    spec = ClipSpec(seconds=1, fps=12, seed=3)
    a = list(clip_frames(PHOTO, spec, "a.jpg"))
    assert len(a) == 12 and all(f.shape == PHOTO.shape and f.dtype == np.uint8 for f, _ in a)
    assert all(np.array_equal(f, g) and s == t for (f, s), (g, t) in zip(a, clip_frames(PHOTO, spec, "a.jpg")))
    assert not np.array_equal(a[0][0], next(clip_frames(PHOTO, spec, "b.jpg"))[0])
    assert not np.array_equal(a[0][0], next(clip_frames(PHOTO, ClipSpec(1, 12, seed=4), "a.jpg"))[0])
    assert all(abs(v) <= JITTER_PX for _, shift in a for v in shift)
    # noise, shift and drift stay small: a camera on a wall, not a different picture
    assert all(np.abs(f.astype(int) - PHOTO).mean() < 12 for f, _ in a)
    assert len({s for _, s in a}) == 12  # every frame moves


def _event(box, label="no_mask"):
    return SimpleNamespace(box=box, score=0.9, label=label)


class _Pipeline:
    """Stands in for agent.pipeline.loop.Pipeline: given events at given frame numbers."""

    def __init__(self, events_at):
        self.events_at, self.frames, self.finished = events_at, 0, False

    def process(self, frame):
        self.frames += 1
        return SimpleNamespace(events=self.events_at.get(frame.index, []))

    def finish(self):
        self.finished = True


def test_run_clip_matches_alerts_to_annotated_people():
    faces = [Annotation((10, 10, 50, 60), "no_mask"), Annotation((100, 10, 140, 60), "mask")]
    # frame 5: the unmasked person and a background alert; frame 9: the same person again (a new track)
    fake = _Pipeline({5: [_event((11, 9, 51, 61)), _event((60, 70, 90, 110))], 9: [_event((10, 11, 49, 60), "incorrect_mask")]})
    r = run_clip(fake, PHOTO, faces, ClipSpec(seconds=1, fps=12), "a.jpg")
    assert fake.frames == 12 and fake.finished
    assert [(p["label"], p["alerts"], p["alert_labels"]) for p in r["people"]] == [
        ("no_mask", 2, ["no_mask", "incorrect_mask"]), ("mask", 0, [])]
    assert r["alerts_on_no_face"] == 1


def test_run_clip_matches_at_the_given_iou():
    # an alert box at IoU 0.45 with the annotated face: on no face at the usual 0.5, the person's at 0.4
    faces = [Annotation((0, 0, 100, 200), "no_mask")]  # large: the clip's 2 px jitter keeps IoU in 0.42-0.45
    fake = _Pipeline({3: [_event((0, 0, 100, 90))]})
    spec = ClipSpec(seconds=1, fps=12)
    strict, loose = run_clip(fake, PHOTO, faces, spec, "a.jpg"), run_clip(fake, PHOTO, faces, spec, "a.jpg", 0.4)
    assert (strict["people"][0]["alerts"], strict["alerts_on_no_face"]) == (0, 1)
    assert (loose["people"][0]["alerts"], loose["alerts_on_no_face"]) == (1, 0)
    assert summarize_stream({"a.jpg": loose}, spec, iou_thr=0.4)["iou"] == 0.4


def test_summary_counts_people_once_with_intervals():
    def person(label, alerts, height=60):
        return {"label": label, "alerts": alerts, "height": height}

    per_image = {"a.jpg": {"people": [person("no_mask", 2), person("incorrect_mask", 0), person("mask", 1, 20)],
                           "alerts_on_no_face": 1},
                 "b.jpg": {"people": [person("mask", 0), person("no_mask", 1, 30)], "alerts_on_no_face": 0}}
    s = summarize_stream(per_image, ClipSpec(seconds=2, fps=15))
    assert s["frames_per_clip"] == 30 and s["images"] == 2
    assert s["all"]["unmasked_alerted"] == {"count": 2, "of": 3, "pct": 66.67, "interval95": [20.8, 93.9]}
    assert (s["all"]["masked_falsely_alerted"]["count"], s["all"]["masked_falsely_alerted"]["of"]) == (1, 2)
    assert (s["min_size_faces"]["unmasked_alerted"]["count"], s["min_size_faces"]["unmasked_alerted"]["of"]) == (1, 2)
    assert s["min_size_faces"]["masked_falsely_alerted"]["of"] == 1
    assert (s["alerts"], s["alerts_on_no_face"], s["repeat_alerts"]) == (5, 1, 1)
    assert "unmasked alerted" in format_stream_table(s) and "repeat alerts on one person: 1" in format_stream_table(s)


# --- the command ------------------------------------------------------------------------------


def _scene(tmp_path, astronaut, astronaut_face):
    x1, y1, x2, y2 = astronaut_face
    cv2.imwrite(str(tmp_path / "astro.jpg"), astronaut)
    cv2.imwrite(str(tmp_path / "mirror.jpg"), cv2.flip(astronaut, 1))
    return write_csv(tmp_path / "b.csv", {"astro.jpg": [((x1, y1, x2, y2), "no_mask")],
                                          "mirror.jpg": [((512 - x2, y1, 512 - x1, y2), "mask")]})


def _stream(capsys, *args):
    rc = main(["evaluate", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_stream_alerts_the_unmasked_astronaut_once_and_is_repeatable(capsys, tmp_path, astronaut, astronaut_face,
                                                                     models_config):
    boxes = _scene(tmp_path, astronaut, astronaut_face)
    runs = []
    for n in (1, 2):
        out = tmp_path / f"r{n}.json"
        rc, table, err = _stream(capsys, "--config", models_config, "--boxes", boxes, "--stream", 2, "--json", out,
                                 tmp_path / "astro.jpg", tmp_path / "mirror.jpg")
        assert rc == 0, err
        runs.append(json.loads(out.read_text()))
    r = runs[0]
    assert runs[0] == runs[1]  # seeded
    assert "unmasked alerted" in table and "30 frames" in table
    assert r["frames_per_clip"] == 30 and r["fps"] == 15 and r["alert_policy"]["min_track_age"] == 5
    assert r["per_image"]["astro.jpg"]["people"][0]["alerts"] == 1  # one alert for one person
    assert r["all"]["unmasked_alerted"]["count"] == 1 and r["repeat_alerts"] == 0
    assert set(r["models"]) and all(r["models"].values())


def test_stream_follows_the_configured_alert_policy(capsys, tmp_path, astronaut, astronaut_face, models_config):
    boxes = _scene(tmp_path, astronaut, astronaut_face)
    slow = tmp_path / "slow.yaml"  # a person must be seen for 100 frames: a 2 s clip (30 frames) never alerts
    slow.write_text(models_config.read_text() + "alerts:\n  min_track_age: 100\n")
    rc, _, err = _stream(capsys, "--config", slow, "--boxes", boxes, "--stream", 2, "--json", tmp_path / "r.json",
                         tmp_path / "astro.jpg")
    r = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0, err
    assert r["alerts"] == 0 and r["all"]["unmasked_alerted"] == {"count": 0, "of": 1, "pct": 0.0, "interval95": [0.0, 79.3]}


def test_stream_option_errors_exit_2(capsys, tmp_path, astronaut, astronaut_face, models_config, classifier_json):
    boxes = _scene(tmp_path, astronaut, astronaut_face)
    for extra, msg in ([["--stream", 0], "--stream 0: give the seconds"],
                       [["--stream", 2, "--classifier", classifier_json], "--stream scores people"]):
        rc, _, err = _stream(capsys, "--config", models_config, "--boxes", boxes, *extra, tmp_path)
        assert rc == 2 and msg in err and "Traceback" not in err, err
