"""A live HTTP MJPEG camera that goes away and comes back on the same port.

The camera is a real MJPEG-over-HTTP server (stdlib, the astronaut photo as JPEG frames); the
agent reads it through ``open_source`` (FFmpeg via OpenCV), exactly as ``source.uri: http://...``.
During the outage the server keeps its port and answers 503: freeing the port would let another
process (a parallel test run) bind it and "bring the camera back" early, which made this test flaky.
"""

from __future__ import annotations

import logging
import time
from typing import Callable


from agent.pipeline.source import LiveSource, SourceConfig, open_source

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


def test_camera_down_is_reported_and_frames_flow_again_after_restart(mjpeg_camera, astronaut, caplog):
    caplog.set_level(logging.INFO, logger="maskwatch")
    camera = mjpeg_camera()
    cfg = SourceConfig(uri=f"http://127.0.0.1:{camera.port}/stream.mjpg", reopen_min_s=0.2, reopen_max_s=1.0)
    source = open_source(cfg)
    try:
        assert isinstance(source, LiveSource) and source.live
        first = _frame_within(source, 10)
        assert first is not None, f"no frame from the stream ({source.last_error})"
        assert first.image.shape == astronaut.shape and first.image.dtype.name == "uint8"
        assert source.up

        camera.go_down()
        assert _wait(lambda: not source.up, 20), "source still reports the camera up after the camera left"
        failures = source.counters.failures
        # While it is down, reopening fails (503) and is retried with backoff.
        assert _wait(lambda: source.counters.failures > failures + 1, 20)
        # The newest frame from before the outage was discarded when the camera went down: nothing
        # stale is handed out, and nothing new comes while it is down.
        assert source.read(0.2) is None and not source.finished and not source.up

        camera.come_back()
        again = _frame_within(source, 20)
        assert again is not None, f"no frame after the camera came back ({source.last_error})"
        assert again.image.shape == astronaut.shape
        assert again.timestamp > first.timestamp and again.index > first.index
        assert source.up and source.counters.reopens >= 1
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("maskwatch")]
    finally:
        source.close()
    # One line per state change (up, down, up again), no stack trace.
    assert sum("is down" in m for m in messages) == 1, messages
    assert sum("is up" in m for m in messages) == 2, messages
    assert not any(r.exc_info for r in caplog.records)


def test_a_frame_from_before_an_outage_is_never_handed_out(mjpeg_camera):
    """Strict: frames queued before the camera went down are dropped, not read after it."""
    camera = mjpeg_camera()
    source = open_source(SourceConfig(uri=f"http://127.0.0.1:{camera.port}/s.mjpg", reopen_min_s=0.2,
                                      reopen_max_s=1.0))
    try:
        assert _wait(lambda: source.up, 10), source.last_error
        dropped = source.counters.dropped
        camera.go_down()  # stop reading: the grabber's last frame waits in the slot until it sees the outage
        assert _wait(lambda: not source.up, 20)
        assert source.read(0.3) is None
        assert source.counters.frames == 0  # not one frame was handed out
        assert source.counters.dropped > dropped  # the one waiting in the slot was discarded
    finally:
        source.close()


def test_closing_a_healthy_stream_logs_no_warning(mjpeg_camera, caplog):
    """Shutting down is not a camera failure: no 'camera is down' warning in the journal."""
    caplog.set_level(logging.INFO, logger="maskwatch")
    camera = mjpeg_camera()
    source = open_source(SourceConfig(uri=f"http://127.0.0.1:{camera.port}/s.mjpg", reopen_min_s=0.2))
    try:
        assert _frame_within(source, 10) is not None
    finally:
        source.close()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
