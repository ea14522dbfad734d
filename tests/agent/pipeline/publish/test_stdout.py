"""The publisher protocol, the one alert payload and the stdout (JSON lines) publisher."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from agent.pipeline.publish.stdout import Publisher, StdoutPublisher, alert_payload, iso_utc
from agent.types import AlertEvent

SCHEMAS = Path(__file__).resolve().parents[4] / "agent" / "schemas"


def event(crop=None) -> AlertEvent:
    return AlertEvent(event_id="door-1-1-1", camera="door", epoch=1700000000.1234, label="no_mask", score=0.93,
                      track_id=1, box=(1.0, 2.0, 3.0, 4.0), frame_width=640, frame_height=480,
                      models={"det": "v1"}, crop_jpeg=crop)


def alert_schema():
    return json.loads((SCHEMAS / "alert.schema.json").read_text())


def test_stdout_publisher_writes_json_lines():
    buf = io.StringIO()
    pub = StdoutPublisher(stream=buf)
    assert isinstance(pub, Publisher)
    pub.start()
    pub.alert(event())
    pub.camera_status(True)
    pub.camera_status(True)  # unchanged: not repeated
    pub.camera_status(False)
    pub.stats({"fps": 15.0})
    pub.close()
    lines = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    assert [ln["type"] for ln in lines] == ["alert", "camera", "camera", "stats"]
    a = lines[0]
    assert a["id"] == "door-1-1-1" and a["label"] == "no_mask" and a["box"] == [1.0, 2.0, 3.0, 4.0]
    assert a["frame"] == {"width": 640, "height": 480} and a["models"] == {"det": "v1"} and "crop_jpeg" not in a
    assert a["time"] == iso_utc(1700000000.1234) == "2023-11-14T22:13:20.123Z"
    assert [ln["up"] for ln in lines[1:3]] == [True, False]
    assert lines[3]["fps"] == 15.0


def test_stdout_alert_is_the_mqtt_alert_payload_and_valid():
    """One alert object for both sinks: stdout prints exactly what MQTT publishes on `alert`."""
    jsonschema = pytest.importorskip("jsonschema")
    for crop in (None, b"\xff\xd8jpeg"):
        buf = io.StringIO()
        StdoutPublisher(stream=buf).alert(event(crop))
        line = json.loads(buf.getvalue())
        assert line == alert_payload(event(crop))
        jsonschema.validate(line, alert_schema())
    pytest.importorskip("paho.mqtt")
    from agent.pipeline.publish import mqtt

    assert mqtt.alert_payload is alert_payload  # the MQTT publisher sends the same function's output


def test_schema_rejects_what_is_not_an_alert():
    jsonschema = pytest.importorskip("jsonschema")
    bad = dict(alert_payload(event()), label="mask")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, alert_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in alert_payload(event()).items() if k != "type"}, alert_schema())


def test_stats_can_be_off_and_crop_is_base64():
    buf = io.StringIO()
    pub = StdoutPublisher(stream=buf, stats_enabled=False)
    pub.stats({"fps": 1})
    assert buf.getvalue() == ""
    assert alert_payload(event(b"\xff\xd8jpeg"))["crop_jpeg"] == "/9hqcGVn"
    assert base64.b64decode("/9hqcGVn") == b"\xff\xd8jpeg"


def test_crops_can_be_kept_off_stdout():
    buf = io.StringIO()
    StdoutPublisher(stream=buf, crops=False).alert(event(b"\xff\xd8jpeg"))
    line = json.loads(buf.getvalue())
    assert "crop_jpeg" not in line and line["id"] == "door-1-1-1"


def test_closed_stream_does_not_raise():
    buf = io.StringIO()
    pub = StdoutPublisher(stream=buf)
    buf.close()
    pub.alert(event())
    pub.close()


def test_mqtt_publisher_has_the_same_protocol():
    pytest.importorskip("paho.mqtt")
    from agent.pipeline.publish.mqtt import MqttPublisher

    for name in ("start", "alert", "stats", "camera_status", "close"):
        assert callable(getattr(MqttPublisher, name))


def test_config_loading_does_not_import_paho():
    """MQTT off costs no paho in memory: the config loader and CLI import it only when needed."""
    import subprocess
    import sys

    code = "import sys, agent.config, agent.cli; print('paho' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[4])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_a_played_back_file_gives_its_video_position_apart_from_the_wall_clock_time():
    jsonschema = pytest.importorskip("jsonschema")
    live = alert_payload(event())
    assert "position_s" not in live  # cameras: the time says it all
    played = event()
    played.position_s = 12.3456
    out = alert_payload(played)
    assert out["position_s"] == 12.346 and out["epoch"] == live["epoch"]
    jsonschema.validate(out, alert_schema())
