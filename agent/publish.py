"""Where alerts go: the :class:`Publisher` protocol and the stdout implementation.

``MqttPublisher`` (agent/mqtt.py) implements the same protocol; the runtime picks it when
``mqtt.enabled`` is true, otherwise alerts print as one JSON object per line on stdout.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
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


def event_dict(event: AlertEvent) -> Dict[str, Any]:
    """The JSON form of an alert (the crop, when present, as base64 JPEG)."""
    out: Dict[str, Any] = {
        "event_id": event.event_id,
        "camera": event.camera,
        "epoch": round(event.epoch, 3),
        "label": event.label,
        "score": event.score,
        "track_id": event.track_id,
        "box": [round(float(v), 1) for v in event.box],
        "frame_width": event.frame_width,
        "frame_height": event.frame_height,
        "models": dict(event.models),
    }
    if event.crop_jpeg is not None:
        out["crop_jpeg_b64"] = base64.b64encode(event.crop_jpeg).decode("ascii")
    return out


class StdoutPublisher:
    """JSON lines on a stream: ``{"type": "alert", ...}``, ``{"type": "stats", ...}``, ``{"type": "camera", ...}``.

    Writing a line to stdout is fast enough to do in the frame loop; a lock keeps lines whole when
    several threads publish.
    """

    def __init__(self, stream: Optional[IO[str]] = None, stats_enabled: bool = True) -> None:
        self._stream = stream
        self._stats = stats_enabled
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
        self._write({"type": "alert", **event_dict(event)})

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


__all__ = ["Publisher", "StdoutPublisher", "event_dict"]
