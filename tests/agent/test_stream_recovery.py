"""A live HTTP MJPEG camera that goes away and comes back on the same port.

The camera is a real MJPEG-over-HTTP server (stdlib, the astronaut photo as JPEG frames); the
agent reads it through ``open_source`` (FFmpeg via OpenCV), exactly as ``source.uri: http://...``.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

import cv2
import pytest

from agent.sources import LiveSource, SourceConfig, open_source

BOUNDARY = b"camframe"


class MjpegCamera:
    """A stdlib HTTP server streaming one JPEG as multipart/x-mixed-replace at ~20 frames/s."""

    def __init__(self, jpeg: bytes, port: int = 0) -> None:
        self.jpeg = jpeg
        self._stop = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.end_headers()
                try:
                    while not camera._stop.is_set():
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(camera.jpeg)).encode() + b"\r\n\r\n" + camera.jpeg + b"\r\n")
                        camera._stop.wait(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Go away: free the port, then end every stream (the client sees the connection close).

        In that order: a reconnect racing the shutdown must be refused, not accepted by a listening
        socket nobody serves any more (FFmpeg would wait 30 s for an answer).
        """
        self.server.shutdown()
        self.server.server_close()
        self._stop.set()
        self._thread.join(timeout=5)


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _frame_within(source: LiveSource, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        frame = source.read(0.5)
        if frame is not None:
            return frame
    return None


@pytest.fixture
def jpeg(astronaut) -> bytes:
    ok, buf = cv2.imencode(".jpg", astronaut, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def test_camera_down_is_reported_and_frames_flow_again_after_restart(jpeg, astronaut, caplog):
    caplog.set_level(logging.INFO, logger="maskwatch")
    camera: Optional[MjpegCamera] = MjpegCamera(jpeg)
    port = camera.port
    cfg = SourceConfig(uri=f"http://127.0.0.1:{port}/stream.mjpg", reopen_min_s=0.2, reopen_max_s=1.0)
    source = open_source(cfg)
    try:
        assert isinstance(source, LiveSource) and source.live
        first = _frame_within(source, 10)
        assert first is not None, f"no frame from the stream ({source.last_error})"
        assert first.image.shape == astronaut.shape and first.image.dtype.name == "uint8"
        assert source.up

        camera.stop()
        camera = None
        assert _wait(lambda: not source.up, 10), "source still reports the camera up after the server left"
        failures = source.counters.failures
        # While it is down, reopening fails (connection refused) and is retried with backoff.
        assert _wait(lambda: source.counters.failures > failures + 1, 10)
        source.read(0.05)  # the newest frame from before the outage may still be waiting: take it
        assert source.read(0.2) is None and not source.finished  # nothing new while down

        camera = MjpegCamera(jpeg, port=port)  # the same camera comes back
        again = _frame_within(source, 15)
        assert again is not None, f"no frame after the camera came back ({source.last_error})"
        assert again.image.shape == astronaut.shape
        assert source.up and source.counters.reopens >= 1
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("maskwatch")]
    finally:
        source.close()
        if camera is not None:
            camera.stop()
    # One line per state change (up, down, up again), no stack trace.
    assert sum("is down" in m for m in messages) == 1, messages
    assert sum("is up" in m for m in messages) == 2, messages
    assert not any(r.exc_info for r in caplog.records)


def test_closing_a_healthy_stream_logs_no_warning(jpeg, caplog):
    """Shutting down is not a camera failure: no 'camera is down' warning in the journal."""
    caplog.set_level(logging.INFO, logger="maskwatch")
    camera = MjpegCamera(jpeg)
    source = open_source(SourceConfig(uri=f"http://127.0.0.1:{camera.port}/s.mjpg", reopen_min_s=0.2))
    try:
        assert _frame_within(source, 10) is not None
    finally:
        source.close()
        camera.stop()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
