"""The frame loop: source -> detect -> classify -> track -> alert -> publish, with per-stage timings.

The loop only wires the stages and measures them; each decision lives in its stage's module.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Union

import cv2
import numpy as np

from agent.config import READY_ANYWAY_S, Config
from agent.pipeline.alert import AlertPolicy
from agent.pipeline.classify import MaskClassifier
from agent.pipeline.detect import FaceDetector
from agent.model import ModelError
from agent.service.preview import PreviewServer
from agent.pipeline.publish.stdout import Publisher
from agent.service.sdnotify import Notifier
from agent.pipeline.source import FrameSource
from agent.pipeline.track import Tracker
from agent.types import AlertEvent, Face, Frame, Track

STAGES = ("detect", "classify", "track", "alert", "publish")
# Shutdown budget (systemd's stop timeout is 5 s here): the publisher gets this long to deliver
# in-flight alerts and the retained `stopped`; a live source's grabber gets SOURCE_CLOSE_S.
PUBLISHER_CLOSE_S = 3.0


class ReconfigureError(ValueError):
    """A new config that cannot be applied to the running pipeline; the old one stays."""


def set_image_threads(n: int) -> None:
    """Run OpenCV's image operations (letterbox, crops, colour tables) on ``n`` threads, like the
    models (``runtime.num_threads``): a 1-thread agent leaves the other core to the camera, and on
    images this small OpenCV's second thread saves nothing (``maskwatch bench --threads 1 2`` shows
    it). Process-wide: OpenCV has one pool."""
    cv2.setNumThreads(int(n))


@dataclass
class FrameResult:
    """What one frame produced, for callers that look (``detect`` command, tests)."""

    frame: Frame
    faces: List[Face]
    tracks: List[Track]
    events: List[AlertEvent]
    ms: Dict[str, float]


class Timings:
    """Recent per-stage durations in milliseconds (bounded), with median and 95th percentile."""

    def __init__(self, keep: int = 1000) -> None:
        self._ms: Dict[str, Deque[float]] = {}
        self._keep = keep

    def add(self, stage: str, ms: float) -> None:
        self._ms.setdefault(stage, deque(maxlen=self._keep)).append(ms)

    def summary(self) -> Dict[str, Dict[str, float]]:
        out = {}
        for stage, values in self._ms.items():
            a = np.fromiter(values, float)
            out[stage] = {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3)}
        return out


def _proc_kb(path: str, key: str) -> Optional[int]:
    """The kB figure on the line of a /proc file that starts with ``key``; None where unreadable."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb(pid: Union[int, str] = "self") -> float:
    """Resident memory of a process now, in MB (MiB, as ``top``; Linux /proc; this process's peak
    elsewhere, nan for another process there).

    RSS counts the library code pages the process has mapped (OpenCV's are many) as well as its
    own memory, and how many of those pages a mapping brings in depends on the kernel's page
    cache: the same agent reads differently from run to run (:func:`anon_mb` is the steady part).
    """
    kb = _proc_kb(f"/proc/{pid}/status", "VmRSS:")
    if kb is not None:
        return kb / 1024
    if pid == "self":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float("nan")


def anon_mb(pid: Union[int, str] = "self") -> float:
    """Anonymous memory of a process (heap, interpreter arenas, frames: what it allocated, which
    the kernel cannot drop and re-read like library pages), in MB (MiB); 0 where unknown."""
    kb = _proc_kb(f"/proc/{pid}/smaps_rollup", "Anonymous:")
    return kb / 1024 if kb is not None else 0.0


# Instruction-set features that decide how fast int8 (and float) graphs run under XNNPACK: the same
# models ran 4-6x slower on an AVX2-only x86 than on one with AVX-512 VNNI (README, Benchmarks).
INT8_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",  # x86 (flags)
                 "asimd", "asimddp", "i8mm", "sve")                               # ARM (Features)


def cpu_summary(cpuinfo: str = "/proc/cpuinfo") -> Dict[str, Any]:
    """What a benchmark figure depends on: the CPU's name and the int8-relevant features it has.

    ``{"name": str, "features": [...]}`` from Linux's cpuinfo (first processor, plus a board
    ``Model`` line where the kernel gives one, as on a Raspberry Pi); name "unknown" and no
    features elsewhere.
    """
    fields: Dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {"name": "unknown", "features": []}
    name = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or "unknown"
    if "cpu family" in fields:  # x86: the family/model pair tells CPU generations of one brand name apart
        name += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    elif "Model" in fields and fields.get("CPU part"):
        name += f" (CPU part {fields['CPU part']})"
    have = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"name": name, "features": [f for f in INT8_FEATURES if f in have]}


class Pipeline:
    """Runs each frame through the stages and keeps the counters the stats message reports."""

    def __init__(
        self,
        detector: FaceDetector,
        classifier: MaskClassifier,
        tracker: Tracker,
        policy: AlertPolicy,
        publisher: Publisher,
        clock: Callable[[], float] = time.perf_counter,
        preview: Optional[PreviewServer] = None,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.policy = policy
        self.publisher = publisher
        self.clock = clock
        self.preview = preview  # optional live view: gets every frame with its faces (never blocks)
        self.timings = Timings()
        self.frames = 0
        self.alerts = 0
        self.people: Dict[str, int] = {}  # decided label -> people seen (counted when their track ends)
        self._counted: set = set()
        self._fps_window: Deque[float] = deque(maxlen=100)
        self.stats_interval_s: Optional[float] = None  # set by run(); reconfigure() may change it
        self.source: Optional[FrameSource] = None  # the one run() reads (a reload may replace it)

    def reconfigure(self, cfg: "Config", detector: Optional[FaceDetector] = None,
                    classifier: Optional[MaskClassifier] = None, publisher: Optional[Publisher] = None) -> None:
        """Apply a new config between frames (call it from the loop's thread), keeping what it can.

        Detector and classifier settings (min_score, iou, min_face_px, roi, thresholds, batching)
        are applied around the loaded models, unless new ``detector``/``classifier`` objects (new
        model files) are given; the tracker keeps its tracks and the alert policy its memory of
        who was alerted; a given ``publisher`` replaces the running one (closed first). Everything
        is built before anything is swapped: on :class:`ReconfigureError` nothing changed.
        """
        threads = cfg.runtime.num_threads
        try:
            new_detector = detector or FaceDetector(cfg.detector, threads, model=self.detector.model)
            new_classifier = classifier or MaskClassifier(cfg.classifier, threads, model=self.classifier.model)
        except ModelError as exc:
            raise ReconfigureError(str(exc)) from None
        unknown = [label for label in cfg.alerts.labels if label not in new_classifier.face_labels]
        if unknown:
            raise ReconfigureError(f"{cfg.source_file}: `alerts.labels`: {unknown} not among the classifier's"
                                   f" labels {new_classifier.face_labels}\n  fix: use those names")
        self.detector, self.classifier = new_detector, new_classifier
        self.tracker.cfg = cfg.tracker  # live tracks carry on; new ones use the new window
        self.tracker.thresholds = dict(cfg.classifier.thresholds)  # labels are decided by the new thresholds
        self.policy.cfg = cfg.alerts
        self.policy.camera = cfg.runtime.camera
        self.policy.models = {new_detector.model.name: new_detector.model.version,
                              new_classifier.model.name: new_classifier.model.version}
        self.stats_interval_s = cfg.runtime.stats_interval_s
        if publisher is not None and publisher is not self.publisher:
            old, self.publisher = self.publisher, publisher
            old.close(timeout=PUBLISHER_CLOSE_S)
            publisher.start()

    def process(self, frame: Frame) -> FrameResult:
        """One frame through every stage."""
        ms: Dict[str, float] = {}
        t0 = t = self.clock()

        def lap(stage: str) -> None:
            nonlocal t
            now = self.clock()
            ms[stage] = (now - t) * 1e3
            t = now

        faces = self.detector.detect(frame.image)
        lap("detect")
        faces = self.classifier.classify(frame.image, faces)
        lap("classify")
        if self.preview is not None:
            self.preview.update(frame.image, faces, self.detector.cfg.roi)
        before = {tr.track_id: tr for tr in self.tracker.tracks}
        tracks = self.tracker.update(faces, frame.timestamp)
        lap("track")
        events = self.policy.update(tracks, frame.timestamp, frame.image, frame.position_s)
        lap("alert")
        for event in events:
            self.publisher.alert(event)
        lap("publish")
        ms["total"] = (t - t0) * 1e3
        for stage, v in ms.items():
            self.timings.add(stage, v)
        self._count_people(before, tracks)
        self.frames += 1
        self.alerts += len(events)
        self._fps_window.append(time.monotonic())
        return FrameResult(frame, faces, tracks, events, ms)

    def _count_people(self, before: Dict[int, Track], after: List[Track]) -> None:
        live = {t.track_id for t in after}
        for tid, track in before.items():
            if tid not in live:
                self._count_track(track)

    def _count_track(self, track: Track) -> None:
        if track.label is not None and track.track_id not in self._counted:
            self._counted.add(track.track_id)
            self.people[track.label] = self.people.get(track.label, 0) + 1

    def finish(self) -> None:
        """Count the people still in view (at the end of a file or on shutdown)."""
        for track in self.tracker.tracks:
            self._count_track(track)

    def fps(self) -> float:
        w = self._fps_window
        return (len(w) - 1) / (w[-1] - w[0]) if len(w) > 1 and w[-1] > w[0] else 0.0

    def stats(self, source: Optional[FrameSource] = None) -> Dict[str, Any]:
        """The stats report: fps, per-stage ms, frames, drops, camera state, people by label."""
        out: Dict[str, Any] = {
            "fps": round(self.fps(), 2),
            "frames": self.frames,
            "alerts": self.alerts,
            "ms": self.timings.summary(),
            "people": dict(self.people),
            "tracks_live": len(self.tracker.tracks),
            "rss_mb": round(rss_mb(), 1),
        }
        if source is not None:
            c = source.counters
            out.update(camera_up=bool(source.up), dropped_frames=c.dropped, skipped_frames=dict(c.skipped),
                       camera_reopens=c.reopens, camera_failures=c.failures)
        return out

    def run(
        self,
        source: FrameSource,
        stop: Optional[threading.Event] = None,
        stats_interval_s: float = 60.0,
        notifier: Optional[Notifier] = None,
        read_timeout: float = 0.5,
        reload: Optional[threading.Event] = None,
        reloader: Optional[Callable[[FrameSource], FrameSource]] = None,
        ready_anyway_s: float = READY_ANYWAY_S,
        on_frame: Optional[Callable[[FrameResult], None]] = None,
    ) -> Dict[str, Any]:
        """Process frames until the source ends or ``stop`` is set; returns the final stats.

        When ``reload`` is set, ``reloader(source)`` runs here, between two frames, and returns the
        source to go on with (the same one unless the ``source`` section changed); the caller
        closes the source it ends with (``self.source``). READY=1 goes out after the first frame
        went through every stage, or after ``ready_anyway_s`` with a live camera that is down (it
        keeps being retried; STATUS= follows the camera). ``on_frame`` gets each frame's result
        (the demo draws and records it).
        """
        stop = stop or threading.Event()
        notifier = notifier or Notifier()
        self.stats_interval_s = stats_interval_s
        self.source = source

        def next_stats_at() -> float:
            return time.monotonic() + self.stats_interval_s if self.stats_interval_s else float("inf")

        next_stats = next_stats_at()
        started = time.monotonic()
        ready = False
        camera_up: Optional[bool] = None
        if self.preview is not None:
            self.preview.start()  # first: a busy port fails here, before anything else started
        self.publisher.start()
        try:
            while not stop.is_set():
                if reload is not None and reload.is_set():
                    reload.clear()
                    if reloader is not None:
                        interval = self.stats_interval_s
                        source = self.source = reloader(source)
                        if self.stats_interval_s != interval:
                            next_stats = next_stats_at()
                        camera_up = None  # report the (maybe new) camera afresh
                frame = source.read(read_timeout)
                if source.live:  # files have no camera to report on
                    up = source.up
                    self.publisher.camera_status(up)
                    if ready and up != camera_up:
                        notifier.status(f"processing {source.name}" if up else f"camera down: {source.name}")
                    camera_up = up
                if source.healthy:  # a grabber stuck in a driver call stops the pings: systemd restarts us
                    notifier.watchdog()
                if frame is not None:
                    result = self.process(frame)
                    if on_frame is not None:
                        on_frame(result)
                    if not ready:  # READY=1 once a frame went through every stage
                        notifier.ready(f"processing {source.name}")
                        ready = True
                elif source.finished:
                    break
                elif not ready and source.live and time.monotonic() - started >= ready_anyway_s:
                    # Started without a camera: say so and keep retrying, rather than leave systemd
                    # waiting for READY=1 until it kills and restarts us in a loop.
                    notifier.ready(f"camera down: {source.name}")
                    ready = True
                if time.monotonic() >= next_stats:  # also while the camera is down
                    next_stats = next_stats_at()
                    self.publisher.stats(self.stats(source))
        finally:
            self.finish()
            final = self.stats(source)
            if self.stats_interval_s:
                self.publisher.stats(final)
            self.publisher.close(timeout=PUBLISHER_CLOSE_S)
            if self.preview is not None:
                self.preview.stop()
        return final


__all__ = ["FrameResult", "PUBLISHER_CLOSE_S", "Pipeline", "ReconfigureError",
           "STAGES", "Timings", "anon_mb", "rss_mb", "set_image_threads"]
