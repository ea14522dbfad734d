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
import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.draw import draw_overlay
from agent.types import Face

log = logging.getLogger("maskwatch.preview")


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
        self._server: Optional[Any] = None  # agent.service.preview_http._Server once started
        self._thread: Optional[threading.Thread] = None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> "PreviewServer":
        """Listen and serve in a daemon thread; raises PreviewError when the address is unusable."""
        if self._server is not None:
            return self
        cfg = self.config
        # http.server (and the ssl it pulls in) costs ~7 MB of RSS: load it only when serving.
        from agent.service.preview_http import make_server

        try:
            server = make_server(cfg.host, cfg.port)
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
        out a new array per frame). A caller that draws its own frames (the demo: track ids, alert
        banners) passes them with no faces and no ROI, and they are served as they are.
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

    def client_joined(self) -> None:
        with self._cond:
            self._clients += 1
        log.info("preview: a viewer connected (%d watching)", self._clients)

    def client_left(self) -> None:
        with self._cond:
            self._clients -= 1
        log.info("preview: a viewer left (%d watching)", self._clients)


__all__ = ["PreviewConfig", "PreviewError", "PreviewServer", "is_loopback"]
