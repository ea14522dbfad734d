"""The labelling page's HTTP side (http.server), imported only when ``maskwatch label`` runs.

Kept apart from agent/tools/label.py, like agent/service/preview_http.py from agent/service/preview.py: the CLI
imports label.py to build the parser (``maskwatch --help``), and nothing but labelling should load
http.server and ssl (megabytes of RSS).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Dict, Optional
from urllib.parse import unquote

from agent.tools.site import LabelError, SiteLabeller

log = logging.getLogger("maskwatch.label")

_MAX_BODY = 64 * 1024


def page_html() -> bytes:
    """The labelling page (agent/tools/label_page.html, shipped as package data)."""
    return resources.files("agent.tools").joinpath("label_page.html").read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    labeller: SiteLabeller
    page: bytes

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("label: request from %s failed: %r", client_address[0], sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def _host_ok(self) -> bool:
        # Only pages served from here may call the API: a Host other than ours means DNS rebinding.
        host = self.headers.get("Host")
        port = self.server.server_address[1]
        return host is None or host in (f"127.0.0.1:{port}", f"localhost:{port}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        labeller = self.server.labeller
        if not self._host_ok():
            self._json(HTTPStatus.FORBIDDEN, {"error": "wrong Host; open the URL maskwatch label printed"})
        elif path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page)
        elif path == "/api/next":
            self._json(HTTPStatus.OK, labeller.state())
        elif path.startswith("/crops/"):
            try:
                data = labeller.crop_path(unquote(path[len("/crops/"):])).read_bytes()
            except (LabelError, OSError) as exc:
                self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
                return
            self._send(HTTPStatus.OK, "image/png", data)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found; try / or /api/next"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        labeller = self.server.labeller
        try:
            if not self._host_ok():
                raise LabelError("wrong Host; open the URL maskwatch label printed", HTTPStatus.FORBIDDEN)
            # JSON only: a cross-site form cannot send it without a CORS preflight we never grant.
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                raise LabelError("send JSON (Content-Type: application/json)", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            body = self._body()
            if path == "/api/label":
                self._json(HTTPStatus.OK, labeller.label(body.get("file"), body.get("label")))
            elif path == "/api/undo":
                self._json(HTTPStatus.OK, labeller.undo())
            else:
                raise LabelError("not found; POST /api/label or /api/undo", HTTPStatus.NOT_FOUND)
        except LabelError as exc:
            self._json(exc.status, {"error": str(exc)})

    def _body(self) -> Dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            raise LabelError(f"body must be a JSON object of at most {_MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LabelError(f"body is not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise LabelError("body must be a JSON object")
        return body

    def _json(self, status: int, obj: Dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(obj).encode())

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("label: %s %s", self.address_string(), format % args)


class LabelServer:
    """The labelling page for one site folder, on 127.0.0.1.

    ``LabelServer(dir, port=0)`` binds at once (port 0: a free one; SiteError for a folder that
    is not a site folder, OSError for a port in use); :attr:`url` is the page, :meth:`start` serves
    in a daemon thread, :meth:`close` stops. Also a context manager (started on enter).
    """

    def __init__(self, folder: os.PathLike | str, port: int = 0) -> None:
        self.labeller = SiteLabeller(folder)
        page = page_html()
        self._server = _Server(("127.0.0.1", port), _Handler)  # never another address: the page shows faces
        self._server.labeller = self.labeller
        self._server.page = page
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "LabelServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="maskwatch-label", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "LabelServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["LabelServer", "page_html"]
