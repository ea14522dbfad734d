"""The live preview over real HTTP: snapshot, MJPEG stream, port handling, no blocking of the loop."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from agent.draw import LABEL_COLORS, ROI_COLOR
from agent.service.preview import PreviewConfig, PreviewError, PreviewServer
from agent.types import Face
from tests.mjpeg import read_parts

NO_MASK = LABEL_COLORS["no_mask"]


def _frame(value: int = 128) -> np.ndarray:
    # 1280 px wide: lines are 3 px thick, enough to keep their colour through JPEG's chroma subsampling.
    return np.full((720, 1280, 3), value, np.uint8)


def _face() -> Face:
    return Face(box=(400.0, 200.0, 700.0, 560.0), face_score=0.9, label="no_mask", score=0.87)


@pytest.fixture
def preview():
    server = PreviewServer(PreviewConfig(enabled=True, port=0), camera="test-door").start()
    yield server
    server.stop()


def _get(server: PreviewServer, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as r:
        return r.read()


def _near(pixel: np.ndarray, color, tol: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(color)) <= tol))


def test_config_validation():
    assert PreviewConfig().enabled is False and PreviewConfig().host == "127.0.0.1"
    for bad in ({"port": 70000}, {"port": -1}, {"max_fps": 0}, {"jpeg_quality": 0}, {"jpeg_quality": 101},
                {"host": ""}):
        with pytest.raises(ValueError):
            PreviewConfig(**bad)


def test_snapshot_is_a_jpeg_with_the_box_drawn(preview):
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(preview, "/snapshot.jpg")  # nothing offered yet
    assert err.value.code == 503
    preview.update(_frame(), [_face()], roi=[0.25, 0.0, 1.0, 1.0])
    img = cv2.imdecode(np.frombuffer(_get(preview, "/snapshot.jpg"), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (720, 1280, 3)
    # The box's left edge (x=400) is drawn in the no_mask colour, its inside is the grey frame.
    assert _near(img[400, 400], NO_MASK), img[400, 400]
    assert _near(img[400, 550], (128, 128, 128), 12)
    # Outside the ROI (x < 320) the frame is dimmed; its edge is drawn in the ROI colour.
    assert _near(img[600, 100], (64, 64, 64), 12)
    assert _near(img[600, 320], ROI_COLOR), img[600, 320]


def test_page_embeds_the_stream_and_unknown_paths_are_404(preview):
    assert b'src="/stream.mjpg"' in _get(preview, "/")
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(preview, "/nope")
    assert err.value.code == 404


def test_stream_delivers_successive_multipart_jpegs(preview):
    stop = threading.Event()

    def feed():  # the pipeline's side: a new frame every 20 ms, getting brighter
        v = 0
        while not stop.is_set():
            preview.update(_frame(v % 256), [_face()])
            v += 8
            stop.wait(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    conn = http.client.HTTPConnection("127.0.0.1", preview.port, timeout=10)
    try:
        conn.request("GET", "/stream.mjpg")
        resp = conn.getresponse()
        ctype = resp.getheader("Content-Type")
        assert resp.status == 200 and ctype.startswith("multipart/x-mixed-replace")
        boundary = ctype.split("boundary=")[1].encode()
        parts = read_parts(resp, boundary, 3)
    finally:
        conn.close()
        stop.set()
        feeder.join()
    assert len(parts) == 3
    images = []
    for headers, body in parts:
        assert headers["content-type"] == "image/jpeg"
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (720, 1280, 3)
        assert _near(img[400, 400], NO_MASK)
        images.append(img)
    # Each part is a newer frame, not the same one resent.
    assert len({int(i[400, 550, 0]) for i in images}) == 3


def test_a_viewer_connected_before_the_first_frame_gets_it_when_it_comes(preview):
    conn = http.client.HTTPConnection("127.0.0.1", preview.port, timeout=10)
    try:
        conn.request("GET", "/stream.mjpg")
        resp = conn.getresponse()  # headers come at once, the first part when a frame exists
        boundary = resp.getheader("Content-Type").split("boundary=")[1].encode()
        assert _wait_for(lambda: preview.clients == 1)
        preview.update(_frame(), [_face()])
        parts = read_parts(resp, boundary, 1)
    finally:
        conn.close()
    assert len(parts) == 1 and parts[0][1][:2] == b"\xff\xd8"


def _wait_for(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.01)
    return cond()


def test_no_encoding_without_viewers_and_update_never_blocks(preview):
    for v in range(200):
        preview.update(_frame(v), [_face()])
    assert preview.encoded == 0  # nobody watched: nothing drawn or encoded
    # A viewer that connects and never reads must not hold up the frame loop.
    sock = socket.create_connection(("127.0.0.1", preview.port), timeout=10)
    sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    big = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8)  # JPEGs that fill buffers
    done = threading.Event()

    def loop():
        for _ in range(300):
            preview.update(big, [_face()])
        done.set()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    t.join(timeout=60)
    sock.close()
    assert done.is_set(), "update() blocked behind a stalled viewer"


def test_port_in_use_is_a_clear_error_and_stop_frees_the_port():
    first = PreviewServer(PreviewConfig(enabled=True, port=0)).start()
    port = first.port
    with pytest.raises(PreviewError) as err:
        PreviewServer(PreviewConfig(enabled=True, port=port)).start()
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "preview.port" in msg and "Traceback" not in msg
    # A viewer connected while stopping does not keep the port.
    first.update(_frame(), [_face()])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stream.mjpg")
    resp = conn.getresponse()
    assert resp.status == 200
    first.stop()
    again = PreviewServer(PreviewConfig(enabled=True, port=port)).start()
    try:
        assert again.port == port
        again.update(_frame(), [])
        assert _get(again, "/snapshot.jpg")[:2] == b"\xff\xd8"
    finally:
        again.stop()
        conn.close()

