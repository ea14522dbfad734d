"""Shared fixtures: the shipped models, real images, a generated doorway clip, a live MJPEG camera.

Tests that need a model use the shipped pair in ``models/`` and skip, saying why, while it is
absent. ``MASKWATCH_TEST_MODELS=DIR`` points them at another folder holding the default detector's and
classifier's sidecars under their default names (to try a candidate model before shipping it).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# Before any test module imports TensorFlow: its oneDNN kernels crashed on these CPUs (a plain
# `pytest` run without scripts/test.sh's environment must not segfault).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def models_dir() -> Path:
    return Path(os.environ.get("MASKWATCH_TEST_MODELS") or REPO / "models")


def _model(name: str, who: str) -> Path:
    sidecar = models_dir() / f"{name}.json"
    if not sidecar.is_file():
        pytest.skip(f"{sidecar} is not there yet (built by {who}); this test needs the shipped model")
    return sidecar


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def detector_json() -> Path:
    """The sidecar of the detector the agent runs by default (``DetectorConfig.model``; skips while
    models/ has none)."""
    from agent.pipeline.detect import DetectorConfig

    return _model(Path(DetectorConfig().model).stem, "convert/ (detector training and conversion)")


@pytest.fixture(scope="session")
def classifier_json() -> Path:
    """The shipped classifier's sidecar (skips while models/ has none)."""
    return _model("mask_classifier", "convert/ (classifier training)")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (one real frontal unmasked face), BGR uint8 512x512."""
    pytest.importorskip("skimage")
    from agent.tools.demo import astronaut_bgr

    return astronaut_bgr()


@pytest.fixture(scope="session")
def astronaut_face():
    """Where the astronaut's face is (pixels, x1 y1 x2 y2), checked by eye on the photo."""
    return (172.0, 62.0, 278.0, 180.0)


def _copy_model(src_json: Path, dst: Path, change: Callable[[Dict[str, Any]], None] = lambda m: None) -> Path:
    meta = json.loads(Path(src_json).read_text())
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(src_json).parent / meta["model_file"], dst / meta["model_file"])
    meta.pop("variants", None)  # the pair alone: the variants it pins stay behind (tests/agent/test_variants.py)
    change(meta)
    out = dst / Path(src_json).name
    out.write_text(json.dumps(meta))
    return out


@pytest.fixture
def copy_model(tmp_path):
    """copy_model(sidecar, change=fn) -> a sidecar copy (with its model) in a temp folder, after
    ``change(meta)`` edited its metadata: for bad-model cases made from a real model."""
    count = [0]

    def make(src_json: Path, change: Callable[[Dict[str, Any]], None] = lambda m: None) -> Path:
        count[0] += 1
        return _copy_model(src_json, tmp_path / f"model{count[0]}", change)

    return make


@pytest.fixture(scope="session")
def models_config(tmp_path_factory, detector_json, classifier_json) -> Path:
    """A config file using the shipped models, alerts on stdout, no stats."""
    d = tmp_path_factory.mktemp("cfg")
    p = d / "config.yaml"
    p.write_text(
        # int8 as named: the same scores on every host, and no second of timing per test (auto: test_variants.py)
        "runtime:\n  camera: test-door\n  stats_interval_s: 0\n  precision: int8\n  state_dir: " + str(d) + "\n"
        f"detector:\n  model: {detector_json}\n"
        f"classifier:\n  model: {classifier_json}\n"
    )
    return p


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """A generated doorway clip: 3 unmasked people walking past one after another."""
    pytest.importorskip("skimage")
    from agent.tools.demo import Person, make_clip

    people = [Person(masked=False, height=230), Person(masked=False, height=200, left_to_right=False),
              Person(masked=False, height=250)]
    return make_clip(tmp_path_factory.mktemp("clip") / "doorway.avi", people)


# --- a live camera: MJPEG over HTTP ----------------------------------------------------------

BOUNDARY = b"camframe"


class MjpegCamera:
    """A stdlib HTTP server streaming one JPEG as multipart/x-mixed-replace at ~20 frames/s."""

    def __init__(self, jpeg: bytes, port: int = 0) -> None:
        self.jpeg = jpeg
        self._stop = threading.Event()
        self._offline = threading.Event()
        self.streams = 0  # streams served: a client that reopens the camera shows up here
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if camera._offline.is_set():  # the camera is away: the stream cannot be opened
                    self.send_error(503, "camera offline")
                    return
                camera.streams += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.end_headers()
                try:
                    while not camera._stop.is_set() and not camera._offline.is_set():
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

    def go_down(self) -> None:
        """The camera goes away: running streams end (the client sees the connection close) and new
        ones are refused with 503 until :meth:`come_back`; the port stays ours."""
        self._offline.set()

    def come_back(self) -> None:
        self._offline.clear()

    def stop(self) -> None:
        """Go away: free the port, then end every stream (the client sees the connection close).

        In that order: a reconnect racing the shutdown must be refused, not accepted by a listening
        socket nobody serves any more (FFmpeg would wait 30 s for an answer).
        """
        self.server.shutdown()
        self.server.server_close()
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def mjpeg_camera(astronaut):
    """mjpeg_camera(jpeg=None) -> a running :class:`MjpegCamera` (the astronaut photo by default),
    read by the agent as ``source.uri: http://127.0.0.1:PORT/x.mjpg``; stopped after the test."""
    import cv2

    started: List[MjpegCamera] = []

    def make(jpeg: bytes = b"") -> MjpegCamera:
        if not jpeg:
            ok, buf = cv2.imencode(".jpg", astronaut, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            jpeg = buf.tobytes()
        cam = MjpegCamera(jpeg)
        started.append(cam)
        return cam

    yield make
    for cam in started:
        cam.stop()


# --- the agent as systemd runs it ------------------------------------------------------------


class AgentProcess:
    """``maskwatch run`` in a child process with a real ``$NOTIFY_SOCKET``; its stdout and stderr
    lines and the sd_notify datagrams are collected as they come. ``journal=True`` runs it as under
    systemd with ``StandardError=journal``: ``$JOURNAL_STREAM`` names the pipe its stderr is."""

    def __init__(self, tmp: Path, config: Path, env: Dict[str, str] | None = None, journal: bool = False) -> None:
        import socket
        import subprocess
        import sys

        self.sock_path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.notes: List[str] = []
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        full_env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, MASKWATCH_STATE_DIR=str(tmp), **(env or {}))
        full_env.pop("JOURNAL_STREAM", None)  # the test runner's own journal is not the child's
        if journal:
            read_fd, write_fd = os.pipe()
            st = os.fstat(write_fd)
            full_env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            err_target: Any = write_fd
        else:
            err_target = subprocess.PIPE
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)], env=full_env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=err_target, text=True)
        if journal:
            os.close(write_fd)
            err_stream = os.fdopen(read_fd, "r")
        else:
            err_stream = self.proc.stderr
        self._threads = [threading.Thread(target=self._lines, args=(self.proc.stdout, self.stdout), daemon=True),
                         threading.Thread(target=self._lines, args=(err_stream, self.stderr), daemon=True),
                         threading.Thread(target=self._notes, daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _lines(stream, out: List[str]) -> None:
        with stream:
            for line in stream:
                out.append(line.rstrip("\n"))

    def _notes(self) -> None:
        self.sock.settimeout(0.2)
        while True:
            try:
                self.notes.append(self.sock.recv(4096).decode())
            except TimeoutError:
                if self.proc.poll() is not None:
                    return
            except OSError:
                return

    def wait_for(self, cond: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Poll ``cond`` until true or ``timeout``; False also when the process died."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            if self.proc.poll() is not None:
                time.sleep(0.3)  # let the readers take the last lines
                return cond()
            time.sleep(0.05)
        return cond()

    def note_count(self, word: str) -> int:
        return sum(word in n for n in list(self.notes))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        self.sock.close()


@pytest.fixture
def agent_process(tmp_path):
    """agent_process(config_path, env=None, journal=False) -> a started :class:`AgentProcess`
    (killed after the test if still running)."""
    started: List[AgentProcess] = []

    def start(config: Path, env: Dict[str, str] | None = None, journal: bool = False) -> AgentProcess:
        p = AgentProcess(tmp_path, config, env, journal)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


@pytest.fixture
def broker(tmp_path):
    """A running mosquitto on a free loopback port (tests/mosquitto.py); skips without mosquitto."""
    import sys

    sys.path.append(str(REPO / "tests"))  # after the repo: tests/agent must not shadow agent/
    import mosquitto as mq

    if mq.skip_reason():
        pytest.skip(mq.skip_reason())
    b = mq.Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def collector(broker):
    """collector(topics) -> a subscriber on ``broker`` keeping every message (closed after the test)."""
    import mosquitto as mq

    made: List[Any] = []

    def make(topics: List[str]) -> Any:
        c = mq.Collector(broker.port, topics)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
