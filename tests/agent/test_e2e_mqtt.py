"""End to end: `maskwatch run` on the demo clip with the shipped models, alerting over a real mosquitto.

Exactly one alert per unmasked person in the clip (none for the masked), each valid against
agent/schemas/alert.schema.json; the stats valid against stats.schema.json; availability goes
online -> stopped (retained).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.demo import DEFAULT_PEOPLE, make_clip

SCHEMAS = Path(__file__).resolve().parents[2] / "agent" / "schemas"


def schema(name: str):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    pytest.importorskip("skimage")
    return make_clip(tmp_path_factory.mktemp("demo") / "doorway.avi", DEFAULT_PEOPLE)


def test_demo_clip_over_mqtt(tmp_path, detector_json, classifier_json, demo_clip, broker, collector, agent_process):
    jsonschema = pytest.importorskip("jsonschema")
    unmasked = sum(not p.masked for p in demo_clip.people)
    assert 0 < unmasked < len(demo_clip.people)  # the clip has both kinds
    sub = collector(["maskwatch/#"])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "runtime:\n  camera: demo-door\n  stats_interval_s: 1\n"
        f"source:\n  uri: {demo_clip.path}\n"
        f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
        f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {broker.port}\n")
    agent = agent_process(cfg)
    assert agent.proc.wait(timeout=120) == 0, agent.stderr
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
