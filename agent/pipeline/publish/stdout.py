"""Where alerts go: the :class:`Publisher` protocol, the one alert payload, the stdout publisher.

``MqttPublisher`` (agent/pipeline/publish/mqtt.py) implements the same protocol; the runtime picks it when
``mqtt.enabled`` is true, otherwise alerts print as one JSON object per line on stdout. Both send
the same alert object, :func:`alert_payload` (agent/schemas/alert.schema.json).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from datetime import datetime, timezone
from typing import IO, Any, Dict, Mapping, Optional, Protocol, runtime_checkable

from agent.types import AlertEvent


@runtime_checkable
class Publisher(Protocol):
    """What the pipeline needs from an alert sink. ``alert`` must not block the frame loop."""

    def start(self) -> None: ...

    def alert(self, event: AlertEvent) -> None: ...

    def stats(self, stats: Mapping[str, Any]) -> None: ...

    def camera_status(self, up: bool) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


def iso_utc(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-24T10:00:00.123Z``."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_payload(event: AlertEvent, include_crop: bool = True) -> Dict[str, Any]:
    """The alert message (agent/schemas/alert.schema.json), on MQTT and stdout alike.

    ``type`` makes a line self-describing among stdout's stats/camera lines. The optional face crop
    is base64 JPEG in ``crop_jpeg`` so an alert stays one message with one id; ``include_crop``
    False leaves it out (a stdout that goes to the journal must hold no face images).
    """
    out: Dict[str, Any] = {
        "type": "alert",
        "id": event.event_id,
        "camera": event.camera,
        "time": iso_utc(event.epoch),
        "epoch": round(float(event.epoch), 3),
        "label": event.label,
        "score": round(float(event.score), 4),
        "track": int(event.track_id),
        "box": [round(float(v), 1) for v in event.box],
        "frame": {"width": int(event.frame_width), "height": int(event.frame_height)},
        "models": {str(k): str(v) for k, v in event.models.items()},
    }
    if event.position_s is not None:  # a played-back file: where in it (``time`` stays the wall clock)
        out["position_s"] = round(float(event.position_s), 3)
    if include_crop and event.crop_jpeg is not None:
        out["crop_jpeg"] = base64.b64encode(event.crop_jpeg).decode("ascii")
    return out


class StdoutPublisher:
    """JSON lines on a stream: alerts (:func:`alert_payload`, ``"type": "alert"``), ``{"type": "stats", ...}``,
    ``{"type": "camera", ...}``.

    Writing a line to stdout is fast enough to do in the frame loop; a lock keeps lines whole when
    several threads publish. ``crops=False`` leaves face crops out of alerts (stdout is the journal).
    """

    def __init__(self, stream: Optional[IO[str]] = None, stats_enabled: bool = True, crops: bool = True) -> None:
        self._stream = stream
        self._stats = stats_enabled
        self._crops = crops
        self._lock = threading.Lock()
        self._camera_up: Optional[bool] = None

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stdout

    def _write(self, obj: Mapping[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"), sort_keys=False)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # reader went away (e.g. `| head`); nothing useful to do

    def start(self) -> None:
        pass

    def alert(self, event: AlertEvent) -> None:
        self._write(alert_payload(event, include_crop=self._crops))

    def stats(self, stats: Mapping[str, Any]) -> None:
        if self._stats:
            self._write({"type": "stats", **stats})

    def camera_status(self, up: bool) -> None:
        if up != self._camera_up:  # report changes only
            self._camera_up = up
            self._write({"type": "camera", "up": bool(up)})

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass


__all__ = ["Publisher", "StdoutPublisher", "alert_payload", "iso_utc"]
