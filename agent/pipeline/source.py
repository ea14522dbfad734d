"""Frame sources behind one interface: cameras, streams, video files, images.

``open_source(cfg)`` picks the source from ``source.uri``:

* ``picamera2`` or ``picamera2:N``: the Raspberry Pi camera (picamera2, imported only then);
* a number or ``/dev/videoN``: a V4L2 camera;
* ``rtsp://``, ``http(s)://`` ...: a network stream;
* a video file; an image file, a folder of images, or a glob.

Live sources (cameras, streams) run a grabber thread that keeps only the newest frame (older ones
are counted as dropped) and reopens the device with exponential backoff when it fails. Files are
read in order, every frame, and end cleanly.

Every frame leaves as :class:`agent.types.Frame` in BGR uint8. Grayscale, RGBA, 16-bit and float
images are converted; empty, oddly shaped and oversized ones are skipped and counted, never raised.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from agent.types import Frame

log = logging.getLogger("maskwatch.source")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".mjpg", ".mjpeg", ".webm", ".m4v", ".mpg", ".mpeg", ".h264")


@dataclass
class SourceConfig:
    """``source:`` section -- where frames come from."""

    uri: str = field(
        default="0",
        metadata={
            "help": "picamera2[:N] | V4L2 index or /dev/videoN | rtsp:// or http:// URL | video file |"
            " image file, folder or glob",
            "path": True,
        },
    )
    width: int = field(default=640, metadata={"help": "requested capture width (cameras)"})
    height: int = field(default=480, metadata={"help": "requested capture height (cameras)"})
    fps: float = field(default=15.0, metadata={"help": "requested camera frame rate"})
    live: Optional[bool] = field(
        default=None,
        metadata={"help": "treat as a live camera (newest frame only, reopen on failure); null = by kind"},
    )
    reopen_min_s: float = field(default=0.5, metadata={"help": "first wait before reopening a failed camera"})
    reopen_max_s: float = field(default=30.0, metadata={"help": "longest wait between reopen attempts"})
    max_pixels: int = field(default=40_000_000, metadata={"help": "frames larger than this are skipped"})
    stall_s: float = field(
        default=60.0,
        metadata={"help": "a camera call blocked this long marks the agent unhealthy (systemd's watchdog restarts it)"},
    )

    def __post_init__(self) -> None:
        if self.width <= 0:  # one key per message: the config loader points at the key it starts with
            raise ValueError("width must be positive")
        if self.height <= 0:
            raise ValueError("height must be positive")
        if self.fps <= 0:
            raise ValueError("fps must be positive")
        if not 0 < self.reopen_min_s <= self.reopen_max_s:
            raise ValueError("reopen_min_s must be > 0 and <= reopen_max_s")
        if self.max_pixels <= 0:
            raise ValueError("max_pixels must be positive")
        if self.stall_s <= 0:
            raise ValueError("stall_s must be positive")


PICAMERA2_MISSING = (
    "source.uri is picamera2 but the picamera2 module is not installed (it exists only on a Raspberry Pi)"
    "\n  fix: on a Pi: sudo apt install python3-picamera2 (and create the venv with --system-site-packages);"
    " elsewhere set source.uri to a camera index, /dev/videoN, a URL or a file"
)


def import_picamera2() -> Any:
    """The ``Picamera2`` class, or a :class:`SourceError` saying how to mend the install.

    Absent (off a Pi, or the venv made without ``--system-site-packages``) and present but
    unloadable are told apart: Raspberry Pi OS bookworm's picamera2 (and its simplejpeg) is built
    for the OS's numpy 1, and a numpy 2 that pip put into the venv breaks its import with
    "numpy.dtype size changed" (raspberrypi/picamera2#1088)."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "picamera2":
            raise SourceError(PICAMERA2_MISSING) from None
        raise SourceError(_picamera2_broken(e)) from None
    except (ImportError, ValueError, AttributeError) as e:
        raise SourceError(_picamera2_broken(e)) from None
    return Picamera2


def _picamera2_broken(e: BaseException) -> str:
    """The message for a picamera2 that is installed but does not import."""
    why = f"source.uri is picamera2 but picamera2 does not import: {type(e).__name__}: {e}"
    if "numpy" in str(e).lower():
        return (f"{why} (numpy {np.__version__} here)\n  fix: the OS's picamera2 is built for the OS's numpy;"
                " on Raspberry Pi OS bookworm run the venv's pip install again with 'numpy<2'"
                " 'opencv-python-headless<4.12' added (README, Run as a service)")
    return (f"{why}\n  fix: reinstall the OS packages (sudo apt install --reinstall python3-picamera2"
            " python3-libcamera); python3 -c 'import picamera2' shows the whole error")


_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@", re.S)
_SECRET_PARAM = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|token|secret|key|auth|sig|cred)[^=&;#]*=)[^&;#]*", re.I)


def redact_uri(uri: str) -> str:
    """A camera URI safe for logs and STATUS=: ``rtsp://user:pass@cam/x`` -> ``rtsp://user:***@cam/x``;
    a user-info without ``:`` (a token) and secret-looking query values (``?pwd=``, ``&token=``) become
    ``***`` too. Paths, device numbers and ``picamera2`` come back unchanged."""
    m = _URL_USERINFO.match(uri)
    if m:
        user, sep, _ = m.group(2).partition(":")
        userinfo = f"{user}:***" if sep else "***"
        uri = f"{m.group(1)}{userinfo}@{uri[m.end():]}"
    if "://" in uri:
        uri = _SECRET_PARAM.sub(r"\1***", uri)
    return uri


class SourceError(Exception):
    """A source that cannot be opened at all (a user mistake: wrong path, missing picamera2)."""


@dataclass
class SourceCounters:
    """What a source did with frames, for the stats message."""

    frames: int = 0  # frames delivered
    dropped: int = 0  # live frames replaced by a newer one before they were read
    skipped: Dict[str, int] = field(default_factory=dict)  # reason -> frames not delivered
    reopens: int = 0  # successful reopen after a failure
    failures: int = 0  # failed reads / opens

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def normalize_image(image: Any, counters: SourceCounters, max_pixels: int) -> Optional[np.ndarray]:
    """Return a BGR uint8 (H, W, 3) image, or None (counted in ``counters.skipped``) when unusable."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        counters.skip("empty")
        return None
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        counters.skip("bad_shape")
        return None
    if image.shape[0] < 2 or image.shape[1] < 2:
        counters.skip("empty")
        return None
    if image.shape[0] * image.shape[1] > max_pixels:
        counters.skip("too_large")
        return None
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif image.dtype.kind == "f":
            if not np.isfinite(image).all():
                counters.skip("bad_values")
                return None
            top = 1.0 if float(image.max(initial=0.0)) <= 1.0 else 255.0
            image = np.clip(image * (255.0 / top), 0, 255).astype(np.uint8)
        else:
            counters.skip("bad_dtype")
            return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


class FrameSource:
    """The interface every source implements.

    ``read(timeout)`` returns the next frame, or None when none came within ``timeout`` seconds
    (a live camera that is down) or the source has ended (``finished`` is then True).
    """

    name: str = ""
    live: bool = False

    def __init__(self) -> None:
        self.counters = SourceCounters()

    @property
    def finished(self) -> bool:
        return False

    @property
    def up(self) -> bool:
        """Whether the camera delivers frames (files: until they end)."""
        return not self.finished

    @property
    def healthy(self) -> bool:
        """False when the source is stuck (a device call that never returns)."""
        return True

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is not None:
                yield frame
            elif self.finished:
                return

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- files -----------------------------------------------------------------------------------


def list_images(spec: str) -> List[str]:
    """Image paths from a file, a folder (sorted, not recursive) or a glob; [] when nothing matches."""
    if os.path.isdir(spec):
        return sorted(str(p) for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if any(c in spec for c in "*?["):
        return sorted(p for p in globlib.glob(spec) if os.path.isfile(p))
    return [spec]


def read_image(path: str, orient: bool = True) -> Optional[np.ndarray]:
    """Read an image file (keeps 16-bit and gray for :func:`normalize_image`; drops alpha, as frames
    are BGR); None if unreadable.

    ``orient``: turn it upright by its EXIF orientation, as photo viewers and ``cv2.imread`` show it.
    A phone stores a portrait photo sideways with a tag saying so; read as stored, every face in it
    lies on its side and the detector, trained on upright faces, finds none. ``orient=False`` keeps
    the stored pixels (boxes drawn by an annotation tool that ignores the tag, e.g. labelImg).
    ``IMREAD_UNCHANGED`` would keep alpha but always ignores the tag, so it is not used."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | (0 if orient else cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.imdecode(data, flags)


def no_frame_error(what: str, skipped: Dict[str, int], fix: str) -> SourceError:
    """The error of a finite source that ended without one usable frame: a run that printed
    "0 frames" and exited 0 looked like a quiet doorway, not like a wrong file."""
    why = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(skipped.items()))
    return SourceError(f"{what}: no frame could be read{f' ({why})' if why else ''}\n  fix: {fix}")


class ImageSource(FrameSource):
    """Image files one after another; unreadable files are counted and skipped.

    ``fail_if_empty``: when the last file is passed and none gave a frame, ``read`` raises
    :class:`SourceError` naming the (first) file instead of ending quietly (``open_source`` sets it).
    """

    def __init__(self, paths: List[str], max_pixels: int = 40_000_000, name: str = "",
                 fail_if_empty: bool = False) -> None:
        super().__init__()
        self.paths = list(paths)
        self.max_pixels = max_pixels
        self.name = name or (paths[0] if len(paths) == 1 else f"{len(paths)} images")
        self.fail_if_empty = fail_if_empty
        self._next = 0

    @property
    def finished(self) -> bool:
        return self._next >= len(self.paths)

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            image = read_image(path)
            if image is None:
                self.counters.skip("unreadable")
                continue
            image = normalize_image(image, self.counters, self.max_pixels)
            if image is None:
                continue
            self.counters.frames += 1
            return Frame(image=image, timestamp=time.time(), index=self._next - 1, source=path)
        if self.fail_if_empty and self.counters.frames == 0:
            self.fail_if_empty = False  # said once
            what = self.paths[0]
            if len(self.paths) > 1:
                what = f"{self.name} (none of its {len(self.paths)} images; the first is {self.paths[0]})"
            raise no_frame_error(what, self.counters.skipped, "give an image file OpenCV can decode (jpg, png, bmp,"
                                 " webp, tiff ...), a folder or glob of them, a video file or a camera")
        return None


class VideoFileSource(FrameSource):
    """Every frame of a video file in order; ends cleanly at the end of the file (``fail_if_empty``:
    raises :class:`SourceError` there when not one frame was usable, as :class:`ImageSource`)."""

    def __init__(self, path: str, max_pixels: int = 40_000_000, fail_if_empty: bool = False) -> None:
        super().__init__()
        self.name = path
        self.max_pixels = max_pixels
        self.fail_if_empty = fail_if_empty
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise SourceError(f"{path}: cannot open as a video\n  fix: check the path and that the format is"
                              " one OpenCV/FFmpeg reads (mp4, avi, mkv ...)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        self._index = 0
        self._done = False
        self._t0 = time.time()

    @property
    def finished(self) -> bool:
        return self._done

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        while not self._done:
            ok, image = self._cap.read()
            if not ok:
                self._done = True
                self._cap.release()
                if self.fail_if_empty and self.counters.frames == 0:
                    raise no_frame_error(self.name, self.counters.skipped, "check that the file is a whole video"
                                         " OpenCV/FFmpeg reads (mp4, avi, mkv ...); `ffprobe FILE` shows what it holds")
                return None
            index = self._index
            self._index += 1
            image = normalize_image(image, self.counters, self.max_pixels)
            if image is None:
                continue
            self.counters.frames += 1
            # Timestamps follow the video's clock so tracking and cooldowns see real time spacing.
            return Frame(image=image, timestamp=self._t0 + index / self.fps, index=index, source=self.name,
                         position_s=index / self.fps)
        return None

    def close(self) -> None:
        self._done = True
        self._cap.release()


# --- live ------------------------------------------------------------------------------------


class Capture:
    """What a live source needs from a device: ``read() -> image or None`` and ``release()``."""

    def read(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def release(self) -> None:
        pass


class OpenCVCapture(Capture):
    """A V4L2 camera, network stream or (as a stand-in camera) a file, through cv2.VideoCapture."""

    def __init__(self, target: Any, width: int, height: int, fps: float) -> None:
        if isinstance(target, int) or (isinstance(target, str) and target.startswith("/dev/video")):
            self._cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            self._cap.set(cv2.CAP_PROP_FPS, fps)
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # we want the newest frame, not a queue
        else:
            self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise OSError(f"cannot open {redact_uri(target) if isinstance(target, str) else target}")

    def read(self) -> Optional[np.ndarray]:
        ok, image = self._cap.read()
        return image if ok else None

    def release(self) -> None:
        self._cap.release()


class Picamera2Capture(Capture):
    """The Raspberry Pi camera through picamera2 (imported only when this source is used)."""

    def __init__(self, camera: int, width: int, height: int, fps: float) -> None:
        self._cam = import_picamera2()(camera)
        config = self._cam.create_video_configuration(
            main={"size": (width, height), "format": "RGB888"},  # RGB888 in libcamera = BGR bytes
            controls={"FrameRate": fps},
        )
        self._cam.configure(config)
        self._cam.start()

    def read(self) -> Optional[np.ndarray]:
        return self._cam.capture_array("main")

    def release(self) -> None:
        try:
            self._cam.stop()
        finally:
            self._cam.close()


class LiveSource(FrameSource):
    """A grabber thread over a :class:`Capture` that keeps only the newest frame.

    When the device fails (read error, unplugged, stream gone) it is released and reopened with
    exponential backoff between ``reopen_min_s`` and ``reopen_max_s``; ``up`` tells whether frames
    are flowing.
    """

    live = True
    CLOSE_TIMEOUT_S = 1.0  # longest wait for the grabber thread on close()

    def __init__(
        self,
        name: str,
        opener: Callable[[], Capture],
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        max_pixels: int = 40_000_000,
        max_read_failures: int = 5,
        stall_s: float = 60.0,
    ) -> None:
        super().__init__()
        self.name = redact_uri(name)  # it goes into logs, STATUS= and stats: never a password
        self._opener = opener
        self._reopen = (reopen_min_s, reopen_max_s)
        self._max_pixels = max_pixels
        self._max_failures = max_read_failures
        self._stall_s = stall_s
        self._busy_since: Optional[float] = None  # monotonic time a device call started, while in one
        self._cond = threading.Condition()
        self._latest: Optional[Frame] = None
        self._up = False
        self._stop = threading.Event()
        self._index = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._grab_loop, name=f"grab:{name}", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        return self._up

    @property
    def finished(self) -> bool:
        return self._stop.is_set()

    @property
    def healthy(self) -> bool:
        busy = self._busy_since
        return busy is None or time.monotonic() - busy < self._stall_s

    def _grab_loop(self) -> None:
        delay = self._reopen[0]
        ever_opened = False
        while not self._stop.is_set():
            try:
                self._busy_since = time.monotonic()
                cap = self._opener()
            except Exception as exc:  # any device/driver failure: count it and retry later
                self._busy_since = None
                self.counters.failures += 1
                self.last_error = str(exc)
                self._set_up(False)
                self._stop.wait(delay)
                delay = min(delay * 2, self._reopen[1])
                continue
            self._busy_since = None
            if ever_opened:
                self.counters.reopens += 1
            ever_opened = True
            failures = 0
            try:
                while not self._stop.is_set():
                    self._busy_since = time.monotonic()
                    try:
                        image = cap.read()
                    except Exception as exc:  # a driver error mid-stream is a failed read
                        image = None
                        self.last_error = str(exc)
                    self._busy_since = None
                    if image is None:
                        failures += 1
                        self.counters.failures += 1
                        if failures >= self._max_failures:
                            break
                        self._stop.wait(0.01)
                        continue
                    failures = 0
                    delay = self._reopen[0]
                    self._publish(image)
            finally:
                cap.release()
            self._set_up(False)
            self._stop.wait(delay)
            delay = min(delay * 2, self._reopen[1])

    def _set_up(self, up: bool) -> None:
        with self._cond:
            was, self._up = self._up, up
            if not up and self._latest is not None:
                # A frame from before the outage is stale: never hand it out as if it were now.
                self._latest = None
                self.counters.dropped += 1
            self._cond.notify_all()
        if self._stop.is_set():
            return  # closing: not a camera failure
        if was and not up:
            log.warning("camera %s is down (%s); reopening with backoff", self.name, self.last_error or "no frames")
        elif not was and not up and self.counters.failures == 1:
            log.warning("camera %s cannot be opened (%s); retrying with backoff", self.name, self.last_error)

    def _publish(self, raw: np.ndarray) -> None:
        image = normalize_image(raw, self.counters, self._max_pixels)
        with self._cond:
            if not self._up:
                log.info("camera %s is up", self.name)
            self._up = True
            if image is None:
                return
            if self._latest is not None:
                self.counters.dropped += 1
            self._latest = Frame(image=image, timestamp=time.time(), index=self._index, source=self.name)
            self._index += 1
            self._cond.notify_all()

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        with self._cond:
            if self._latest is None:
                self._cond.wait_for(lambda: self._latest is not None or self._stop.is_set(), timeout)
            frame, self._latest = self._latest, None
        if frame is not None:
            self.counters.frames += 1
        return frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # Bounded: a driver call that never returns must not hold up the shutdown (systemd's stop
        # timeout); the grabber is a daemon thread and releases the device when the call returns.
        self._thread.join(timeout=self.CLOSE_TIMEOUT_S)


# --- choosing --------------------------------------------------------------------------------


def classify_uri(uri: str) -> Tuple[str, Any]:
    """(kind, target) for a source URI: picamera2 | v4l2 | stream | video | images."""
    u = uri.strip()
    if u == "picamera2" or u.startswith("picamera2:"):
        num = u.partition(":")[2]
        return "picamera2", int(num) if num.isdigit() else 0
    if u.isdigit():
        return "v4l2", int(u)
    if u.startswith("/dev/video"):
        return "v4l2", u
    if "://" in u and not u.startswith("file://"):
        return "stream", u
    if u.startswith("file://"):
        u = u[len("file://"):]
    if os.path.isdir(u) or any(c in u for c in "*?["):
        return "images", u
    if u.lower().endswith(IMAGE_EXTS):
        return "images", u
    return "video", u


def open_source(cfg: SourceConfig) -> FrameSource:
    """Open the source a config names; raises SourceError when it cannot work at all, and a file
    source raises it from ``read`` when it ends without one usable frame."""
    kind, target = classify_uri(cfg.uri)
    live = cfg.live if cfg.live is not None else kind in ("picamera2", "v4l2", "stream")
    if kind == "picamera2":
        import_picamera2()  # fail at start-up, not in the grabber thread, when picamera2 cannot load
        opener: Callable[[], Capture] = lambda: Picamera2Capture(target, cfg.width, cfg.height, cfg.fps)  # noqa: E731
        return LiveSource(cfg.uri, opener, cfg.reopen_min_s, cfg.reopen_max_s, cfg.max_pixels, stall_s=cfg.stall_s)
    if kind == "images":
        paths = list_images(target)
        if not paths or (len(paths) == 1 and not os.path.exists(paths[0])):
            raise SourceError(f"source.uri {cfg.uri!r}: no image found\n  fix: give an existing image, folder"
                              " or glob")
        return ImageSource(paths, cfg.max_pixels, name=cfg.uri, fail_if_empty=True)
    if kind == "video" and not live and not os.path.exists(target):
        raise SourceError(f"source.uri {cfg.uri!r}: no such file\n  fix: give an existing video file, a camera"
                          " index (0), /dev/videoN, an rtsp:// URL or picamera2")
    if not live:
        return VideoFileSource(target, cfg.max_pixels, fail_if_empty=True)
    opener = lambda: OpenCVCapture(target, cfg.width, cfg.height, cfg.fps)  # noqa: E731
    return LiveSource(cfg.uri, opener, cfg.reopen_min_s, cfg.reopen_max_s, cfg.max_pixels, stall_s=cfg.stall_s)


__all__ = [
    "FrameSource", "ImageSource", "LiveSource", "OpenCVCapture", "Picamera2Capture", "SourceConfig",
    "SourceCounters", "SourceError", "VideoFileSource", "classify_uri", "list_images", "normalize_image",
    "open_source", "read_image", "redact_uri",
]
