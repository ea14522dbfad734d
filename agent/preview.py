"""Optional live preview for aiming the camera: an MJPEG stream with the faces and ROI drawn.

Off by default. When ``preview.enabled`` is true a small stdlib HTTP server listens (on
127.0.0.1 unless configured otherwise) in daemon threads:

* ``/``: a tiny HTML page embedding the stream;
* ``/stream.mjpg``: ``multipart/x-mixed-replace`` JPEG frames, at most ``max_fps`` per client;
* ``/snapshot.jpg``: the latest frame as one JPEG.

The pipeline calls :meth:`PreviewServer.update` with every frame; that only stores a reference to
the newest frame (older ones are forgotten) and wakes the clients, so the frame loop never waits on
the network. Drawing and JPEG encoding happen in the client's HTTP thread, only while a client
asks, and once per frame however many clients watch.

The preview shows faces: it has no authentication, so keep it on the loopback address (reach it
with ``ssh -L 8088:127.0.0.1:8088 pi``) unless the network is trusted.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.types import Face

log = logging.getLogger("maskwatch.preview")

BOUNDARY = "maskwatchframe"
# BGR colours per label; unclassified faces are grey.
LABEL_COLORS = {"mask": (80, 200, 60), "incorrect_mask": (0, 170, 255), "no_mask": (40, 40, 230)}
UNLABELLED_COLOR = (200, 200, 200)
ROI_COLOR = (0, 220, 255)
# How long a stream client waits for a new frame before re-checking that the server still runs.
_WAIT_S = 0.5

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>maskwatch preview</title>
<style>body{{margin:0;background:#111;color:#ccc;font:14px sans-serif}}
img{{display:block;max-width:100vw;max-height:calc(100vh - 2em);margin:auto}}
p{{text-align:center;margin:.3em}}</style></head>
<body><img src="/stream.mjpg" alt="live preview"><p>maskwatch {camera}: live preview for aiming
(<a href="/snapshot.jpg">snapshot</a>)</p></body></html>
"""


@dataclass
class PreviewConfig:
    """``preview:`` section -- the live MJPEG preview for aiming the camera (off by default)."""

    enabled: bool = field(default=False, metadata={"help": "serve a live preview with boxes over HTTP"})
    host: str = field(
        default="127.0.0.1",
        metadata={"help": "address to listen on; 127.0.0.1 keeps it local (it shows faces, no password)"},
    )
    port: int = field(default=8088, metadata={"help": "TCP port of the preview; 0: any free port"})
    max_fps: float = field(default=5.0, metadata={"help": "most frames per second sent to each viewer"})
    jpeg_quality: int = field(default=70, metadata={"help": "JPEG quality of the preview, 1-100"})

    def __post_init__(self) -> None:
        if not self.host or self.host.strip() != self.host:
            raise ValueError("host must be an address or host name without spaces, e.g. 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535 (0: any free port)")
        if not 0 < self.max_fps <= 60:
            raise ValueError("max_fps must be > 0 and <= 60")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be between 1 and 100")


class PreviewError(Exception):
    """The preview cannot start (port taken, address not local); ``str()`` is the user message."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def draw_overlay(image: np.ndarray, faces: Sequence[Face], roi: Optional[Sequence[float]] = None) -> np.ndarray:
    """A copy of a BGR frame with the ROI, each face's box, label and score drawn.

    ``roi`` is ``[x1, y1, x2, y2]`` as fractions of the frame (``detector.roi``); outside it the
    frame is dimmed, since faces there are ignored.
    """
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    scale = 0.4 * thick
    if roi is not None:
        x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(roi, (w, h, w, h)))
        inside = out[y1:y2, x1:x2].copy()
        out //= 2  # dim everything, then put the region back
        out[y1:y2, x1:x2] = inside
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), ROI_COLOR, thick)
        cv2.putText(out, "ROI", (x1 + 3, y1 + int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    ROI_COLOR, thick, cv2.LINE_AA)
    for f in faces:
        bx1, by1, bx2, by2 = (int(round(v)) for v in _clip(f.box, w, h))
        color = LABEL_COLORS.get(f.label or "", UNLABELLED_COLOR)
        cv2.rectangle(out, (bx1, by1), (bx2, by2), color, thick)
        text = f"{f.label} {f.score:.2f}" if f.label else f"face {f.face_score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = by1 - 4 if by1 - th - 6 >= 0 else min(by2 + th + 4, h - 3)
        cv2.rectangle(out, (bx1, ty - th - 2), (bx1 + tw + 2, ty + 2), color, -1)
        ink = (0, 0, 0) if color == UNLABELLED_COLOR else (255, 255, 255)  # readable on the light grey
        cv2.putText(out, text, (bx1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thick, cv2.LINE_AA)
    return out


def _clip(box: Tuple[float, float, float, float], w: int, h: int) -> Tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), w - 1.0), min(max(y1, 0.0), h - 1.0), min(max(x2, 0.0), w - 1.0),
            min(max(y2, 0.0), h - 1.0))


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a viewer left open never keeps the agent from exiting
    allow_reuse_address = True  # a restart may bind while old connections sit in TIME_WAIT
    allow_reuse_port = False  # ... but never share the port with a running program
    preview: "PreviewServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # One log line instead of socketserver's traceback on stderr; the agent keeps running.
        log.warning("preview: request from %s failed: %r", client_address[0], sys.exc_info()[1],
                    exc_info=log.isEnabledFor(logging.DEBUG))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection; the stream ends by closing

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        preview = self.server.preview
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", _PAGE.format(camera=preview.camera).encode())
        elif path == "/snapshot.jpg":
            jpeg = preview.snapshot()
            if jpeg is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no frame yet; try again shortly\n")
            else:
                self._send(HTTPStatus.OK, "image/jpeg", jpeg)
        elif path == "/stream.mjpg":
            self._stream(preview)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found; try / or /stream.mjpg or /snapshot.jpg\n")

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, preview: "PreviewServer") -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        preview._client_joined()
        try:
            seq = 0  # frames are numbered from 1
            period = 1.0 / preview.config.max_fps
            while not preview.stopping:
                t0 = time.monotonic()
                got = preview.wait_newer(seq, _WAIT_S)
                if got is None:
                    continue
                seq, jpeg = got
                self.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg + b"\r\n"
                )
                self.wfile.flush()
                rest = period - (time.monotonic() - t0)
                if rest > 0:
                    preview.wait_stopping(rest)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the viewer closed the page
        finally:
            preview._client_left()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("preview: %s %s", self.address_string(), format % args)


class PreviewServer:
    """The preview's HTTP server and its newest frame.

    ``start()`` binds (raising :class:`PreviewError` when it cannot), ``update()`` hands it a
    frame, ``stop()`` closes the port. ``encoded`` counts JPEG encodes, for the stats and tests.
    """

    def __init__(self, config: PreviewConfig, camera: str = "") -> None:
        self.config = config
        self.camera = camera
        self.encoded = 0  # frames drawn and JPEG-encoded
        self._cond = threading.Condition()
        self._frame: Optional[Tuple[np.ndarray, Tuple[Face, ...], Optional[Tuple[float, ...]]]] = None
        self._seq = 0  # bumped by every update()
        self._jpeg: Optional[Tuple[int, bytes]] = None  # (seq, bytes) of the last encode
        self._encode_lock = threading.Lock()
        self._clients = 0
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> "PreviewServer":
        """Listen and serve in a daemon thread; raises PreviewError when the address is unusable."""
        if self._server is not None:
            return self
        cfg = self.config
        try:
            server = _Server((cfg.host, cfg.port), _Handler)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise PreviewError(
                f"preview: cannot listen on {cfg.host}:{cfg.port} ({reason})\n  fix: set `preview.port` to a free"
                " port (or 0 for any), stop the program using it, or set `preview.enabled: false`"
            ) from None
        server.preview = self
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="preview-http", daemon=True)
        self._thread.start()
        if is_loopback(cfg.host):
            log.info("preview: %s (this machine only)", self.url)
        else:
            log.warning("preview: %s is reachable from the network without a password and shows faces",
                        self.url)
        return self

    def stop(self) -> None:
        """Stop serving and free the port (stream viewers are disconnected)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> "PreviewServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the chosen one when configured with port 0)."""
        return self._server.server_address[1] if self._server is not None else self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    @property
    def clients(self) -> int:
        """Stream viewers connected now."""
        return self._clients

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- the pipeline's side --------------------------------------------------------------

    def update(self, image: np.ndarray, faces: Sequence[Face] = (), roi: Optional[Sequence[float]] = None) -> None:
        """Offer the newest frame (BGR uint8) and its faces; returns at once, never encodes.

        Only a reference is kept: the caller must not modify ``image`` afterwards (sources hand
        out a new array per frame).
        """
        with self._cond:
            self._frame = (image, tuple(faces), tuple(roi) if roi is not None else None)
            self._seq += 1
            self._cond.notify_all()

    # --- the viewers' side ----------------------------------------------------------------

    def snapshot(self) -> Optional[bytes]:
        """The newest frame drawn and encoded as JPEG, or None before the first frame."""
        with self._cond:
            seq = self._seq
        return (self._encoded(seq) or None) if seq else None

    def wait_newer(self, seq: int, timeout: float) -> Optional[Tuple[int, bytes]]:
        """(seq, JPEG) of a frame newer than ``seq``, waiting up to ``timeout``; None if none came."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > seq or self._stopping.is_set(), timeout):
                return None
            if self._stopping.is_set():
                return None
            newest = self._seq
        jpeg = self._encoded(newest)
        return (newest, jpeg) if jpeg else None

    def wait_stopping(self, timeout: float) -> bool:
        return self._stopping.wait(timeout)

    def _encoded(self, seq: int) -> bytes:
        """The JPEG of frame ``seq`` or newer: encoded once, shared by all viewers; b"" before any frame."""
        with self._encode_lock:
            cached = self._jpeg
            if cached is not None and cached[0] >= seq:
                return cached[1]
            with self._cond:
                seq = self._seq
                frame = self._frame
            if frame is None:
                return b""
            image, faces, roi = frame
            drawn = draw_overlay(image, faces, roi)
            ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
            if not ok:  # cannot happen for a BGR uint8 image; keep the last good one
                return cached[1] if cached else b""
            self.encoded += 1
            self._jpeg = (seq, buf.tobytes())
            return self._jpeg[1]

    def _client_joined(self) -> None:
        with self._cond:
            self._clients += 1
        log.info("preview: a viewer connected (%d watching)", self._clients)

    def _client_left(self) -> None:
        with self._cond:
            self._clients -= 1
        log.info("preview: a viewer left (%d watching)", self._clients)


__all__ = ["PreviewConfig", "PreviewError", "PreviewServer", "draw_overlay", "is_loopback"]
