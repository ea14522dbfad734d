"""``maskwatch demo``: the annotated clip, the contact sheet, the summary table, --quiet and --preview.

The counts asserted are relations (alerts printed == alerts in the summary == alerts whose banner
the decoded clip shows), not figures of the shipped detector, which may change.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import pytest

from agent.cli import main
from agent.tools.demo import CLIP_NAME, RECORD_NAME, SHEET_NAME, TILE_SCALE
from agent.draw import label_color
from agent.service.preview_http import BOUNDARY
from tests.mjpeg import read_parts

REPO = Path(__file__).resolve().parents[3]

pytest.importorskip("skimage")


def _decode(path: Path) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _banner_color(frame: np.ndarray) -> Optional[np.ndarray]:
    """The mean colour of the banner's right end (past any text), or None where the top of the
    frame shows no banner (the doorway's wall there is grey)."""
    band = max(24, frame.shape[0] // 15)
    mean = frame[4 : band - 4, -60:-8].reshape(-1, 3).mean(axis=0)
    return mean if np.ptp(mean) > 60 else None  # every label colour is far from grey


def _runs(flags: List[bool]) -> List[int]:
    """The first index of each run of True."""
    return [i for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1])]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, models_config):
    """One default demo run: (exit code, stdout, stderr, out folder)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--config", str(models_config), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr, out


def test_clip_banners_match_the_alerts_printed(demo_run):
    rc, stdout, stderr, out = demo_run
    assert rc == 0, stderr
    alerts = [json.loads(line) for line in stdout.splitlines()]
    assert alerts and all(a["type"] == "alert" for a in alerts)  # the clip has unmasked people
    record = json.loads((out / RECORD_NAME).read_text())
    assert [a["id"] for a in record["alerts"]] == [a["id"] for a in alerts]

    frames = _decode(out / CLIP_NAME)
    assert len(frames) == record["frames"] == len(record["banners"]) > 0
    assert frames[0].shape[1::-1] == tuple(record["size"])
    seen = [_banner_color(f) for f in frames]
    # Frame by frame, the decoded clip shows a banner exactly where one was drawn, in the colour
    # of the newest alert on it.
    label_of = {a["id"]: a["label"] for a in record["alerts"]}
    for i, (ids, color) in enumerate(zip(record["banners"], seen)):
        assert (color is not None) == bool(ids), i
        if ids:
            assert np.abs(color - label_color(label_of[ids[-1]])).max() < 40, (i, color)
    # Every alert starts a banner or joins one on screen; each banner run starts at an alert.
    alert_frames = {a["frame"] for a in record["alerts"]}
    starts = _runs([c is not None for c in seen])
    assert starts and set(starts) <= alert_frames
    assert {i for ids in record["banners"] for i in ids} == set(label_of)
    assert len(starts) == len(alerts) or any(len(ids) > 1 for ids in record["banners"])


def test_summary_table_and_contact_sheet_agree_with_the_alerts(demo_run):
    rc, stdout, stderr, out = demo_run
    alerts = [json.loads(line) for line in stdout.splitlines()]
    record = json.loads((out / RECORD_NAME).read_text())
    row = re.search(r"^\s+all\s+(\d+)\s+(\d+)$", stderr, re.M)
    assert row, stderr
    assert int(row.group(2)) == len(alerts) and int(row.group(1)) == sum(record["people"].values())
    assert f"{record['frames']} frames" in stderr and "ms per frame" in stderr
    for label in ("mask", "no_mask"):  # rows come from the classifier's labels
        assert re.search(rf"^\s+{label}\s+\d+\s+\d+$", stderr, re.M), stderr

    sheet = cv2.imread(str(out / SHEET_NAME))
    assert sheet is not None and record["contact_sheet"] == SHEET_NAME
    people = len({a["track"] for a in alerts})  # one tile per alerted person
    cols = min(3, people)
    rows = -(-people // cols)
    tw, th = (round(v * TILE_SCALE) for v in record["size"])
    assert sheet.shape[1] == cols * tw
    assert rows * th < sheet.shape[0] < rows * (th + 40)  # tiles plus caption strips


def test_quiet_prints_only_the_json_alerts(capfd, models_config, tmp_path):
    assert main(["demo", "--config", str(models_config), "--out", str(tmp_path), "--quiet"]) == 0
    cap = capfd.readouterr()
    lines = [json.loads(line) for line in cap.out.splitlines()]
    assert lines and {ln["type"] for ln in lines} == {"alert"}
    assert cap.err == ""  # not even the TFLite runtime's INFO line
    assert (tmp_path / CLIP_NAME).is_file()  # the files are still written


def test_out_that_cannot_be_a_folder_exits_2_with_the_fix(capsys, models_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["demo", "--config", str(models_config), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--out {blocker / 'out'}" in err and "fix:" in err and "Traceback" not in err


def _first_jpeg(url: str, timeout: float = 60.0) -> bytes:
    """The first frame of the preview's stream at ``url`` (connecting starts the demo's clip)."""
    m = re.match(r"http://([\d.]+):(\d+)/", url)
    assert m, url
    conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=timeout)
    try:
        conn.request("GET", "/stream.mjpg")
        resp = conn.getresponse()
        assert resp.status == 200
        parts = read_parts(resp, BOUNDARY.encode(), 1)
        assert parts and parts[0][0]["content-type"] == "image/jpeg", "stream ended before a frame"
        return parts[0][1]
    finally:
        conn.close()


def test_preview_plays_the_annotated_clip_until_ctrl_c(tmp_path, detector_json, classifier_json):
    """``demo --preview`` on any free loopback port: the stream serves the drawn frames; Ctrl-C
    stops it cleanly, with the alerts so far on stdout and a clip that decodes."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
                   "preview:\n  host: 127.0.0.1\n  port: 0\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "demo", "--config", str(cfg), "--out", str(out),
                             "--preview", "--wait", "60"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    err: List[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            url = next((m.group(0) for m in map(re.compile(r"http://127\.0\.0\.1:\d+/").search, list(err)) if m), None)
            time.sleep(0.1)
        assert url, "".join(err)
        jpeg = _first_jpeg(url)  # connecting starts the clip
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert frame is not None and frame.shape == (480, 640, 3)
        proc.send_signal(signal.SIGINT)
        # stdout only: the reader thread owns stderr (communicate() would read it too and take
        # the last lines from it)
        stdout = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert proc.returncode == 0, "".join(err)
    assert all(json.loads(line)["type"] == "alert" for line in stdout.splitlines())
    assert "demo: stopped early" in "".join(err)
    record = json.loads((out / RECORD_NAME).read_text())
    assert 0 < record["frames"] == len(_decode(out / CLIP_NAME))


def test_preview_on_a_busy_port_exits_2_before_writing(capsys, tmp_path, detector_json, classifier_json):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
                       f"preview:\n  port: {port}\n")
        out = tmp_path / "out"
        assert main(["demo", "--config", str(cfg), "--out", str(out), "--preview"]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "preview.port" in err and "Traceback" not in err
    assert not out.exists()


def test_preview_pace_starts_at_the_first_frame_not_at_setup(tmp_path):
    """A viewer who connects late still sees the clip at its own rate from its first frame."""
    from agent.tools.demo import Recorder
    from agent.pipeline.loop import FrameResult
    from agent.types import Frame

    class Viewer:  # the preview's side: what update() was handed
        def __init__(self) -> None:
            self.frames: List[np.ndarray] = []

        def update(self, image: np.ndarray) -> None:
            self.frames.append(image)

    viewer = Viewer()
    fps, count = 100.0, 10
    with Recorder(tmp_path, fps, (64, 48), preview=viewer) as rec:  # type: ignore[arg-type]
        time.sleep(0.3)  # waiting for a viewer
        t0 = time.monotonic()
        for i in range(count):
            rec(FrameResult(Frame(np.zeros((48, 64, 3), np.uint8), 0.0, i), [], [], [], {}))
        elapsed = time.monotonic() - t0
    assert len(viewer.frames) == count
    assert elapsed >= (count - 1) / fps  # paced, not rushed to catch up with the wait
