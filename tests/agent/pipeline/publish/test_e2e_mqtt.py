"""End to end: `maskwatch run` on the demo clip with the shipped models, alerting over a real mosquitto.

Exactly one alert per unmasked person in the clip (none for the masked), each valid against
agent/schemas/alert.schema.json; the stats valid against stats.schema.json; availability goes
online -> stopped (retained).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from agent.tools.demo import DEFAULT_PEOPLE, make_clip
from agent.pipeline.publish.spool import Spool

SCHEMAS = Path(__file__).resolve().parents[4] / "agent" / "schemas"


def schema(name: str):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def write_config(folder: Path, source: Path, detector_json: Path, classifier_json: Path, port: int,
                 stats_interval_s: float = 0) -> Path:
    """A config for camera ``demo-door`` on ``source`` with the shipped models, alerting to the broker."""
    cfg = folder / "config.yaml"
    cfg.write_text(
        f"runtime:\n  camera: demo-door\n  stats_interval_s: {stats_interval_s}\n"
        f"source:\n  uri: {source}\n"
        f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
        f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {port}\n")
    return cfg


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    pytest.importorskip("skimage")
    return make_clip(tmp_path_factory.mktemp("demo") / "doorway.avi", DEFAULT_PEOPLE)


def test_demo_clip_over_mqtt(tmp_path, detector_json, classifier_json, demo_clip, broker, collector, agent_process):
    jsonschema = pytest.importorskip("jsonschema")
    unmasked = sum(not p.masked for p in demo_clip.people)
    assert 0 < unmasked < len(demo_clip.people)  # the clip has both kinds
    sub = collector(["maskwatch/#"])
    started = time.time()
    agent = agent_process(write_config(tmp_path, demo_clip.path, detector_json, classifier_json, broker.port,
                                       stats_interval_s=1))
    assert agent.proc.wait(timeout=120) == 0, agent.stderr
    ended = time.time()
    agent.close()
    assert agent.stdout == []  # alerts went to the broker, not stdout
    topic = "maskwatch/demo-door/"
    assert sub.wait_for(lambda c: (c.payloads(topic + "availability") or [b""])[-1] == b"stopped", 10)

    alerts = [json.loads(p) for p in sub.payloads(topic + "alert")]
    for a in alerts:
        jsonschema.validate(a, schema("alert"))
    assert len(alerts) == unmasked, [(a["track"], a["label"], a["score"]) for a in alerts]
    assert len({a["id"] for a in alerts}) == unmasked  # no repeat: one alert per person
    assert all(a["camera"] == "demo-door" and a["label"] in ("no_mask", "incorrect_mask") for a in alerts)
    # The clip plays faster than real time: `time` is still the wall clock (never in the future),
    # and where in the video each alert was decided comes apart, in `position_s`.
    assert all(started <= a["epoch"] <= ended for a in alerts), ([a["epoch"] for a in alerts], started, ended)
    assert all(0 <= a["position_s"] <= demo_clip.frames / demo_clip.fps for a in alerts)
    assert [a["position_s"] for a in alerts] == sorted(a["position_s"] for a in alerts)

    stats = [json.loads(p) for p in sub.payloads(topic + "stats")]
    assert stats, "no stats message"
    for s in stats:
        jsonschema.validate(s, schema("stats"))
    final = stats[-1]
    assert final["frames"] == demo_clip.frames and final["alerts"] == unmasked
    assert sum(final["people"].values()) == len(demo_clip.people), final["people"]

    availability = [p.decode() for p in sub.payloads(topic + "availability")]
    for a in availability:
        jsonschema.validate(a, schema("availability"))
    assert availability[0] == "online" and availability[-1] == "stopped" and "offline" not in availability


def test_run_with_a_damaged_spool_recovers_its_alerts_and_runs(tmp_path, detector_json, classifier_json, astronaut,
                                                              broker, collector, agent_process):
    """A half-truncated spool (alerts of an earlier run still in it) neither stops `maskwatch run`
    nor loses the rows that can still be read: they reach the broker, and one warning names the
    spool, the file it was moved to and the count."""
    import cv2

    spool = tmp_path / "mqtt-spool.sqlite3"  # the state dir is tmp_path (agent_process)
    old = Spool(str(spool), max_messages=100000)
    for i in range(2000):
        old.put(f"earlier-{i}", "maskwatch/demo-door/alert", json.dumps({"id": f"earlier-{i}", "pad": "x" * 300}).encode())
    old.close()
    data = spool.read_bytes()
    spool.write_bytes(data[: len(data) // 2])
    image = tmp_path / "door.jpg"
    cv2.imwrite(str(image), astronaut)
    sub = collector(["maskwatch/demo-door/alert"])
    agent = agent_process(write_config(tmp_path, image, detector_json, classifier_json, broker.port))
    assert agent.proc.wait(timeout=120) == 0, agent.stderr
    agent.close()
    warnings = [line for line in agent.stderr if "was damaged" in line]
    assert len(warnings) == 1, agent.stderr
    (aside,) = tmp_path.glob("mqtt-spool.sqlite3.corrupt-*")
    recovered = int(warnings[0].split("recovered ")[1].split(" ")[0])
    assert str(spool) in warnings[0] and str(aside) in warnings[0] and recovered >= 500
    assert "Traceback" not in "\n".join(agent.stderr)
    assert sub.wait_for(lambda c: len({json.loads(p)["id"] for p in c.payloads("maskwatch/demo-door/alert")
                                       if json.loads(p)["id"].startswith("earlier-")}) == recovered, 20)
    assert Spool(str(spool)).depth() == 0  # every recovered alert was acknowledged


@pytest.mark.slow  # about 80 s of real time: a live camera has to play 12 people in real time
def test_blackbox_live_camera_broker_down_30s_agent_killed_and_restarted(tmp_path, detector_json, classifier_json,
                                                                        mjpeg_camera, broker, collector,
                                                                        agent_process):
    """Issue #28's black-box check: a live MJPEG camera shows 12 people (8 unmasked) in real time;
    the broker goes down for 30 s, the agent is SIGKILLed between two groups of people and
    restarted during the outage. Every unmasked person gets exactly one alert id, no masked one
    gets any, and the alerts that waited reach the subscriber <= 5 s after the broker is back."""
    import threading

    import cv2

    from agent.tools.demo import Person, background, render

    fps, walk, gap = 15.0, 60, 12
    first = [Person(False, 230), Person(True, 220, False), Person(False, 240, False), Person(False, 250)]
    second = [Person(True, 240), Person(False, 230, False), Person(False, 220), Person(True, 250, False),
              Person(False, 235), Person(False, 240, False), Person(True, 230), Person(False, 225, False)]
    empty = background(640, 480)
    lead, quiet = [empty] * int(3 * fps), [empty] * int(15 * fps)  # nobody there: warm-up; the kill
    groups = [render(group, walk_frames=walk, gap_frames=gap) for group in (first, second)]
    frames = lead + groups[0] + quiet + groups[1]
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames]
    # Who is in view when: (first frame, last frame, masked) per person.
    people = []
    for at, group in ((len(lead), first), (len(lead) + len(groups[0]) + len(quiet), second)):
        people += [(at + gap + k * (walk + gap), at + gap + k * (walk + gap) + walk - 1, p.masked)
                   for k, p in enumerate(group)]
    assert len(people) == 12 and sum(not m for _, _, m in people) == 8

    cam = mjpeg_camera(jpegs[0])
    clock = {"t0": None}
    done = threading.Event()

    def play() -> None:
        """The camera runs on its own clock from the first connection on, like a real one."""
        while cam.streams == 0 and not done.is_set():
            time.sleep(0.01)
        clock["t0"] = time.time()
        while not done.is_set():
            i = int((time.time() - clock["t0"]) * fps)
            cam.jpeg = jpegs[min(i, len(jpegs) - 1)]
            if i >= len(jpegs):
                return
            time.sleep(0.5 / fps)

    def frame_now() -> int:
        return -1 if clock["t0"] is None else int((time.time() - clock["t0"]) * fps)

    def wait_frame(i: int) -> None:
        while frame_now() < i:
            time.sleep(0.05)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    sub = collector(["maskwatch/demo-door/alert"])  # persistent session: what comes during its absence waits
    cfg = write_config(tmp_path, f"http://127.0.0.1:{cam.port}/x.mjpg", detector_json, classifier_json, broker.port)
    cfg.write_text(cfg.read_text() + f"  spool:\n    path: {tmp_path / 'spool.sqlite3'}\n")
    try:
        agent = agent_process(cfg)
        assert agent.wait_for(lambda: agent.note_count("READY=1") >= 1, 60), agent.stderr
        wait_frame(int(2 * fps))
        broker.stop()
        down = time.monotonic()
        wait_frame(people[3][1] + int(2 * fps))  # the first group has passed: kill -9 in the quiet time
        agent.proc.kill()
        agent.close()
        (tmp_path / "notify.sock").unlink()
        restarted = agent_process(cfg)  # same spool
        assert restarted.wait_for(lambda: restarted.note_count("READY=1") >= 1, 60), restarted.stderr
        time.sleep(max(0.0, 30 - (time.monotonic() - down)))
        with sqlite3.connect(f"file:{tmp_path / 'spool.sqlite3'}?mode=ro", uri=True) as db:  # a look, no write
            (waiting,) = db.execute("SELECT COUNT(*) FROM spool").fetchone()
        broker.start()
        assert waiting >= 1, restarted.stderr  # alerts of the first group, kept through the kill
        assert sub.wait_for(lambda c: len(c.payloads("maskwatch/demo-door/alert")) >= waiting, 5.0), \
            f"{len(sub.payloads('maskwatch/demo-door/alert'))} of {waiting} waiting alerts 5 s after the broker's return"
        wait_frame(len(jpegs) + int(fps))
        restarted.signal(signal.SIGTERM)
        assert restarted.proc.wait(timeout=30) == 0, restarted.stderr
    finally:
        done.set()
    time.sleep(1.0)
    alerts = [json.loads(p) for p in sub.payloads("maskwatch/demo-door/alert")]
    ids = {a["id"] for a in alerts}
    whom = []
    for a in {a["id"]: a for a in alerts}.values():  # the person in view when the alert was decided
        i = (a["epoch"] - clock["t0"]) * fps
        whom += [k for k, (s, e, _) in enumerate(people) if s - fps <= i <= e + fps] or [f"nobody at frame {i:.0f}"]
    assert all(isinstance(k, int) for k in whom), whom  # every alert is someone's
    assert all(not people[k][2] for k in whom), [(k, people[k]) for k in whom]  # none to a masked person
    assert sorted(whom) == [k for k, (_, _, m) in enumerate(people) if not m], whom  # each unmasked once
    assert len(ids) == 8
