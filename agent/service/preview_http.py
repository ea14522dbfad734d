"""The preview's HTTP side (http.server), imported only when the preview is enabled.

Kept apart from agent/service/preview.py so that an agent with the preview off (the default) never loads
http.server and ssl (megabytes of RSS against the agent's small memory budget).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Protocol, Tuple

log = logging.getLogger("maskwatch.preview")


class Feed(Protocol):
    """What the HTTP side serves from (:class:`agent.service.preview.PreviewServer` is the one):
    named here so that this module needs nothing of preview.py."""

    camera: str
    config: Any  # max_fps

    @property
    def stopping(self) -> bool: ...

    def snapshot(self) -> Optional[bytes]: ...

    def wait_newer(self, seq: int, timeout: float) -> Optional[Tuple[int, bytes]]: ...

    def wait_stopping(self, timeout: float) -> bool: ...

    def client_joined(self) -> None: ...

    def client_left(self) -> None: ...


BOUNDARY = "maskwatchframe"

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a viewer left open never keeps the agent from exiting
    allow_reuse_address = True  # a restart may bind while old connections sit in TIME_WAIT
    allow_reuse_port = False  # ... but never share the port with a running program
    preview: Feed

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

    def _stream(self, preview: Feed) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        preview.client_joined()
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
            preview.client_left()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("preview: %s %s", self.address_string(), format % args)


def make_server(host: str, port: int) -> _Server:
    """Bind the preview's HTTP server (raises OSError when the address is unusable)."""
    return _Server((host, port), _Handler)
