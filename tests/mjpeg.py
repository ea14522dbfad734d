"""Reading an MJPEG stream (multipart/x-mixed-replace) in tests: the preview's and the demo's."""

from __future__ import annotations

import http.client
from typing import Dict, List, Tuple


def read_parts(resp: http.client.HTTPResponse, boundary: bytes, count: int) -> List[Tuple[Dict[str, str], bytes]]:
    """Parse ``count`` parts of a multipart/x-mixed-replace body: [(headers, body)]."""
    parts = []
    while len(parts) < count:
        line = resp.readline()
        if not line:
            break
        if line.strip() != b"--" + boundary:
            continue
        headers = {}
        while True:
            h = resp.readline().strip()
            if not h:
                break
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        parts.append((headers, resp.read(int(headers["content-length"]))))
    return parts
