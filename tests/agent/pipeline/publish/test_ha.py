"""Home Assistant discovery: the config messages, their templates on real payloads, and re-sending
them when Home Assistant comes back online (real mosquitto)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[3]))  # after the repo: tests/agent must not shadow agent/
import mosquitto as mq  # noqa: E402  (tests/mosquitto.py)

from agent.pipeline.publish.ha import discovery_messages, node_id, status_topic  # noqa: E402
from agent.pipeline.publish.mqtt import MqttConfig, MqttPublisher, alert_payload  # noqa: E402

PREFIX = "maskwatch/door/"


def stats_payload(tmp_path: Path) -> dict:
    """A stats message as the publisher builds it (not connected: only its payload is used)."""
    pub = MqttPublisher(MqttConfig(enabled=True), camera="door", state_dir=str(tmp_path))
    return pub.stats_payload({
        "fps": 6.25, "frames": 10, "alerts": 1, "ms": {}, "dropped_frames": 3, "camera_up": True,
        "people": {"mask": 3, "no_mask": 1},
    })


def test_one_device_with_event_sensors_and_camera_all_wired_to_availability():
    msgs = discovery_messages(PREFIX, "door", "homeassistant", "0.1.0")
    topics = [t for t, _ in msgs]
    assert len(set(topics)) == len(topics)
    assert "homeassistant/event/maskwatch_door/alert/config" in topics
    assert "homeassistant/binary_sensor/maskwatch_door/camera/config" in topics
    assert any(t.startswith("homeassistant/sensor/maskwatch_door/") for t in topics)
    unique_ids = [c["unique_id"] for _, c in msgs]
    assert len(set(unique_ids)) == len(unique_ids)
    for topic, cfg in msgs:
        assert cfg["device"]["identifiers"] == ["maskwatch_door"]
        assert cfg["availability"][0]["topic"] == PREFIX + "availability"
        assert cfg["state_topic"].startswith(PREFIX)
        json.dumps(cfg)  # plain JSON
    event = dict(msgs)["homeassistant/event/maskwatch_door/alert/config"]
    assert event["state_topic"] == PREFIX + "alert"
    assert set(event["event_types"]) == {"no_mask", "incorrect_mask"}


def test_node_id_is_safe_for_topics():
    assert node_id("front door/1") == "maskwatch_front_door_1"


def _render(template: str, payload) -> str:
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()
    env.filters["tojson"] = json.dumps  # Home Assistant's tojson is json.dumps (Jinja's escapes HTML)
    value = payload if isinstance(payload, str) else json.dumps(payload)
    value_json = json.loads(value) if not isinstance(payload, str) else None
    return env.from_string(template).render(value=value, value_json=value_json)


def test_templates_render_real_payloads(tmp_path):
    """Home Assistant renders these with Jinja2; a typo would leave the entity 'unknown' forever."""
    msgs = dict(discovery_messages(PREFIX, "door"))
    alert = alert_payload(mq.make_event("door", 5, label="incorrect_mask"))
    fired = json.loads(_render(msgs["homeassistant/event/maskwatch_door/alert/config"]["value_template"], alert))
    assert fired["event_type"] == "incorrect_mask" and fired["id"] == "door-5" and fired["track"] == 5

    stats = stats_payload(tmp_path)
    values = {t.split("/")[3]: _render(c["value_template"], stats) for t, c in msgs.items()
              if t.startswith("homeassistant/sensor/")}
    assert values == {"fps": "6.25", "compliance": "75.0", "people_mask": "3", "people_no_mask": "1",
                      "people_incorrect_mask": "0", "frames_dropped": "3", "spool_depth": "0"}
    no_people = dict(stats, compliance={"window_s": 1.0, "people": {}, "ratio": None})
    assert _render(msgs["homeassistant/sensor/maskwatch_door/compliance/config"]["value_template"], no_people) == "None"

    avail = msgs["homeassistant/event/maskwatch_door/alert/config"]["availability"][0]["value_template"]
    assert [_render(avail, v) for v in ("online", "offline", "stopped")] == ["online", "offline", "offline"]


@pytest.mark.skipif(mq.skip_reason() is not None, reason=mq.skip_reason() or "")
def test_discovery_is_retained_and_resent_when_home_assistant_comes_online(tmp_path):
    broker = mq.Broker(tmp_path / "broker")
    broker.start()
    try:
        expected = {t for t, _ in discovery_messages(PREFIX, "door")}
        col = mq.Collector(broker.port, ["homeassistant/#"], client_id=f"ha-{uuid.uuid4().hex[:6]}")
        pub = MqttPublisher(
            MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, homeassistant={"enabled": True}),
            camera="door", state_dir=str(tmp_path / "state"))
        pub.start()

        def count(c):
            return sum(1 for t, _, _ in c.messages if t in expected)

        assert col.wait_for(lambda c: count(c) == len(expected), 15)
        # Home Assistant restarts: its birth message asks every device to announce itself again.
        col.client.publish(status_topic("homeassistant"), "online", qos=1)
        assert col.wait_for(lambda c: count(c) == 2 * len(expected), 15)
        col.client.publish(status_topic("homeassistant"), "offline", qos=1)
        time.sleep(0.5)
        assert count(col) == 2 * len(expected)  # "offline" asks for nothing
        pub.close()
        col.close()

        # Retained: Home Assistant connecting later still finds every entity.
        late = mq.Collector(broker.port, ["homeassistant/+/maskwatch_door/+/config"], client_id="late-ha")
        assert late.wait_for(lambda c: {t for t, _, r in c.messages if r} == expected, 10)
        late.close()
    finally:
        broker.stop()


# -- the README's notification recipe --------------------------------------------------------

def readme_recipe() -> dict:
    """The automation of README's Home Assistant step 3 (the YAML block that uses the event entity)."""
    yaml = pytest.importorskip("yaml")
    text = (Path(__file__).resolve().parents[4] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml")[1:]]
    (block,) = [b for b in blocks if "event.maskwatch_doorway_mask_alert" in b]
    (automation,) = yaml.safe_load(block)
    return automation


def state(value: str, event_type: str = "no_mask", name: str = "Mask alert") -> dict:
    """An entity state as Home Assistant hands it to a trigger (state string + attributes)."""
    return {"state": value, "attributes": {"event_type": event_type, "friendly_name": name}}


def test_readme_recipe_fires_once_per_alert_and_never_on_a_restart():
    """Replay the event entity's state changes as Home Assistant makes them (2024.3.3, checked on a
    real instance: an event entity's state is the time of its last event and comes back to it
    after `unavailable`) through the recipe's condition, rendered with Jinja2 as HA does."""
    jinja2 = pytest.importorskip("jinja2")
    automation = readme_recipe()
    assert "triggers" in automation and "actions" in automation  # the 2024.10+ syntax the README names
    (trigger,) = automation["triggers"]
    assert trigger == {"trigger": "state", "entity_id": "event.maskwatch_doorway_mask_alert"}
    (condition,) = automation["conditions"]
    template = jinja2.Environment().from_string(condition["value_template"])
    t1, t2, t3 = "2026-12-04T10:00:01.123+00:00", "2026-12-04T10:07:42.001+00:00", "2026-12-04T11:30:00.500+00:00"
    changes = [  # (from_state, to_state, a new alert?)
        (None, state("unknown"), False),                           # discovery: the entity appears
        (state("unknown"), state(t1), True),                       # its first alert
        (state(t1), state(t2, "incorrect_mask"), True),            # the next one
        (state(t2), state("unavailable"), False),                  # agent stopped (SIGTERM: `stopped`)
        (state("unavailable"), state(t2), False),                  # agent back: the old alert's time again
        (state(t2), state("unavailable"), False),                  # agent SIGKILLed: the Last Will
        (state("unavailable"), state(t2), False),
        (None, state("unavailable"), False),                       # Home Assistant restarted
        (state("unavailable"), state(t2), False),                  # ... and restores the entity
        (None, state(t2), False),                                  # (restored before availability came)
        (state(t2), state(t2, name="Doorway mask alert"), False),  # re-discovery renamed it: attributes only
        (state(t2), state(t3), True),                              # a new alert after all that
    ]
    fired = [template.render(trigger={"from_state": old, "to_state": new}).strip() == "True"
             for old, new, _ in changes]
    assert fired == [alert for _, _, alert in changes]
    # The message names the label of the alert that fired it.
    (action,) = automation["actions"]
    message = jinja2.Environment().from_string(action["data"]["message"])
    assert message.render(trigger={"to_state": state(t3, "incorrect_mask")}) == "incorrect mask at the doorway"


def test_event_types_are_the_alerting_labels(tmp_path):
    """The event entity lists what alerts.labels lets through (checked against the classifier's
    sidecar when the pipeline is built), not a list of its own."""
    event = dict(discovery_messages(PREFIX, "door", event_types=["no_mask"]))["homeassistant/event/maskwatch_door/alert/config"]
    assert event["event_types"] == ["no_mask"]
    pub = MqttPublisher(MqttConfig(enabled=True), camera="door", state_dir=str(tmp_path), alert_labels=["no_mask"])
    assert pub.alert_labels == ("no_mask",)
