"""The publisher protocol and the stdout (JSON lines) publisher."""

from __future__ import annotations

import io
import json

from agent.publish import Publisher, StdoutPublisher, event_dict
from agent.types import AlertEvent


def event(crop=None) -> AlertEvent:
    return AlertEvent(event_id="door-1-1-1", camera="door", epoch=1700000000.1234, label="no_mask", score=0.93,
                      track_id=1, box=(1.0, 2.0, 3.0, 4.0), frame_width=640, frame_height=480,
                      models={"det": "v1"}, crop_jpeg=crop)


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
    assert a["event_id"] == "door-1-1-1" and a["label"] == "no_mask" and a["box"] == [1.0, 2.0, 3.0, 4.0]
    assert a["frame_width"] == 640 and a["models"] == {"det": "v1"} and "crop_jpeg_b64" not in a
    assert [ln["up"] for ln in lines[1:3]] == [True, False]
    assert lines[3]["fps"] == 15.0


def test_stats_can_be_off_and_crop_is_base64():
    buf = io.StringIO()
    pub = StdoutPublisher(stream=buf, stats_enabled=False)
    pub.stats({"fps": 1})
    assert buf.getvalue() == ""
    assert event_dict(event(b"\xff\xd8jpeg"))["crop_jpeg_b64"] == "/9hqcGVn"


def test_closed_stream_does_not_raise():
    buf = io.StringIO()
    pub = StdoutPublisher(stream=buf)
    buf.close()
    pub.alert(event())
    pub.close()


def test_mqtt_publisher_has_the_same_protocol():
    from agent.mqtt import MqttPublisher

    for name in ("start", "alert", "stats", "camera_status", "close"):
        assert callable(getattr(MqttPublisher, name))
