"""Soak benchmark: RSS of a running `maskwatch run` over time (not a test: prints figures).

Serves the demo walkers as an endless MJPEG stream on loopback (a live camera as the agent sees
it), runs the real `maskwatch run` (with config.yaml's models) on it for --seconds, samples the
process's RSS and anonymous memory (`agent.pipeline.loop.rss_mb`, `anon_mb`), and prints a
table plus the growth from the end of the first minute to the end.

    python bench/soak.py --seconds 600
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

from agent.config import load_config
from agent.tools.demo import DEFAULT_PEOPLE, render
from agent.pipeline.loop import anon_mb, rss_mb

REPO = Path(__file__).resolve().parents[1]


def serve_stream(frames, fps: float) -> ThreadingHTTPServer:
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for jpg in itertools.cycle(jpegs):
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg))
                    self.wfile.write(jpg + b"\r\n")
                    time.sleep(1.0 / fps)
            except OSError:
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between RSS samples")
    ap.add_argument("--fps", type=float, default=15.0)
    args = ap.parse_args()

    server = serve_stream(render(DEFAULT_PEOPLE), args.fps)
    url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    shipped = load_config(str(REPO / "config.yaml"))  # the models a default install runs
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(
            f"runtime: {{camera: soak, state_dir: {tmp}, stats_interval_s: 60, log_level: warning}}\n"
            f"source: {{uri: '{url}'}}\n"
            f"detector: {{model: '{shipped.detector.model}'}}\n"
            f"classifier: {{model: '{shipped.classifier.model}'}}\n"
        )
        exe = Path(sys.executable).with_name("maskwatch")
        proc = subprocess.Popen([str(exe), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        alerts = [0]
        threading.Thread(target=lambda: [alerts.__setitem__(0, alerts[0] + ('"alert"' in l)) for l in proc.stdout],
                         daemon=True).start()
        samples = []
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < args.seconds and proc.poll() is None:
                time.sleep(min(args.every, args.seconds))
                samples.append((time.monotonic() - t0, rss_mb(proc.pid), anon_mb(proc.pid), alerts[0]))
                t, rss, anon, n = samples[-1]
                print(f"{t:7.0f} s  RSS {rss:7.1f} MB  anon {anon:6.1f} MB  alerts {n}", flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
            server.shutdown()
    if len(samples) < 3:
        print("soak: too few samples (did the agent exit?)", file=sys.stderr)
        return 1
    base = next((s for s in samples if s[0] >= 60.0), samples[0])
    end = samples[-1]
    print(f"soak: {end[0]:.0f} s with {Path(shipped.detector.model).name} and {Path(shipped.classifier.model).name},"
          f" alerts {end[3]}")
    for k, name in ((1, "RSS"), (2, "anon")):
        print(f"  {name:4s} after 1 min {base[k]:.1f} MB, end {end[k]:.1f} MB, peak {max(s[k] for s in samples):.1f} MB,"
              f" growth {end[k] - base[k]:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
