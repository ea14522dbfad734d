"""End to end: `maskwatch run` on the demo clip with the shipped models, alerting over a real mosquitto.

Exactly one alert per unmasked person in the clip (none for the masked), each valid against
agent/schemas/alert.schema.json; the stats valid against stats.schema.json; availability goes
online -> stopped (retained).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.demo import DEFAULT_PEOPLE, make_clip

SCHEMAS = Path(__file__).resolve().parents[2] / "agent" / "schemas"


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

    from agent.spool import Spool

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
