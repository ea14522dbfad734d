"""The bundled sample: a doorway clip built at run time from scikit-image's astronaut photo, and
what ``maskwatch demo`` shows of the agent's work on it.

People (copies of the astronaut's head and shoulders, public domain) walk past the camera one after
another; some get a surgical-style mask drawn over nose and mouth. Nothing is stored in the repo:
the clip is made when the demo or a test needs it (``pip install scikit-image``).

The demo writes into its ``--out`` folder:

* ``annotated.mp4``: every frame as the agent saw it: each face's box in its label's colour with the
  label, score and track id, and a banner across the top for ``BANNER_S`` after each alert;
* ``contact-sheet.png``: one tile per alerted person, the first frame that person was seen in;
* ``annotated.json``: what was drawn (per frame the ids of the alerts on its banner, the alerts,
  people by label, timings), so a test can hold the clip against the alerts printed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent import logs
from agent.assemble import build_pipeline, load_models
from agent.config import load_config
from agent.draw import contact_sheet, draw_banner, draw_overlay, label_color
from agent.errors import EXIT_OK, UsageError
from agent.pipeline.loop import FrameResult
from agent.pipeline.publish.stdout import StdoutPublisher
from agent.pipeline.source import VideoFileSource
from agent.service.preview import PreviewServer
from agent.types import AlertEvent

# Where things are in skimage.data.astronaut() (512 x 512): the head-and-shoulders sprite and,
# inside it, the mask outline (over nose, mouth and chin) and the ear-loop anchors.
_SPRITE = (130, 10, 330, 270)  # x1, y1, x2, y2
_MASK = np.array([(178, 116), (200, 112), (225, 114), (250, 112), (272, 116), (268, 150), (250, 174),
                  (225, 184), (200, 174), (182, 150)], np.int32)
_LOOPS = (((178, 118), (170, 104)), ((272, 118), (280, 104)))


class DemoError(Exception):
    """The demo cannot run here (no scikit-image, an ``--out`` folder it cannot write); ``str()`` is
    the message with its fix."""


@dataclass(frozen=True)
class Person:
    """One walker: masked or not, its size (sprite height in pixels) and direction."""

    masked: bool
    height: int = 220
    left_to_right: bool = True


@dataclass(frozen=True)
class Clip:
    path: Path
    people: Tuple[Person, ...]
    frames: int
    fps: float
    size: Tuple[int, int]  # width, height


def astronaut_bgr() -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise DemoError("the demo clip is built from scikit-image's sample photo\n  fix: pip install"
                           " scikit-image  (or: pip install 'maskwatch[demo]')") from None
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def draw_mask(image: np.ndarray, color: Tuple[int, int, int] = (230, 200, 150)) -> np.ndarray:
    """The astronaut photo with a pleated surgical mask and ear loops drawn on (BGR, in place on a copy)."""
    out = image.copy()
    cv2.fillPoly(out, [_MASK], color, lineType=cv2.LINE_AA)
    shade = tuple(int(c * 0.8) for c in color)
    for dy in (0, 18, 36):  # pleats
        cv2.line(out, (186, 130 + dy), (264, 130 + dy), shade, 2, cv2.LINE_AA)
    cv2.polylines(out, [_MASK], True, shade, 2, cv2.LINE_AA)
    for a, b in _LOOPS:
        cv2.line(out, a, b, (245, 245, 245), 2, cv2.LINE_AA)
    return out


def background(width: int, height: int) -> np.ndarray:
    """A plain doorway: a wall gradient with a door frame."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    wall = (np.array([170, 180, 185], np.float32) * (1.0 - 0.25 * y)).astype(np.uint8)
    img = np.broadcast_to(wall, (height, width, 3)).copy()
    cv2.rectangle(img, (width // 8, height // 12), (width - width // 8, height), (90, 110, 130), 12)
    return img


def sprites(people: Sequence[Person]) -> List[np.ndarray]:
    base = astronaut_bgr()
    masked = draw_mask(base)
    x1, y1, x2, y2 = _SPRITE
    out = []
    for p in people:
        s = (masked if p.masked else base)[y1:y2, x1:x2]
        s = cv2.resize(s, (round(s.shape[1] * p.height / s.shape[0]), p.height), interpolation=cv2.INTER_AREA)
        out.append(s if p.left_to_right else s[:, ::-1].copy())
    return out


def render(people: Sequence[Person], size: Tuple[int, int] = (640, 480), walk_frames: int = 40,
           gap_frames: int = 12) -> List[np.ndarray]:
    """The clip's frames: each person crosses the frame in ``walk_frames``, then ``gap_frames`` empty."""
    width, height = size
    bg = background(width, height)
    frames = [bg.copy() for _ in range(gap_frames)]
    for person, sprite in zip(people, sprites(people)):
        sh, sw = sprite.shape[:2]
        top = max(0, (height - sh) // 2 - height // 10)
        for i in range(walk_frames):
            f = bg.copy()
            t = i / max(1, walk_frames - 1)
            x = int(round(-sw * 0.3 + t * (width - sw * 0.4))) if person.left_to_right else \
                int(round(width - sw * 0.7 - t * (width - sw * 0.4)))
            # Paste the part of the sprite inside the frame.
            fx1, fx2 = max(0, x), min(width, x + sw)
            if fx2 > fx1:
                f[top : top + sh, fx1:fx2] = sprite[:, fx1 - x : fx2 - x]
            frames.append(f)
        frames.extend(bg.copy() for _ in range(gap_frames))
    return frames


def make_clip(path: Path, people: Sequence[Person], fps: float = 15.0, size: Tuple[int, int] = (640, 480),
              walk_frames: int = 40, gap_frames: int = 12) -> Clip:
    """Write the clip as MJPEG in an AVI (readable by every OpenCV build) and describe it."""
    path = Path(path)
    frames = render(people, size, walk_frames, gap_frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise DemoError(f"{path}: OpenCV cannot write an MJPEG AVI here\n  fix: install opencv-python-headless"
                        " (pip install 'maskwatch[demo]')")
    for f in frames:
        writer.write(f)
    writer.release()
    return Clip(path=path, people=tuple(people), frames=len(frames), fps=fps, size=size)


def doorway_scene(width: int = 640, height: int = 480, people: int = 3) -> np.ndarray:
    """A still of ``people`` faces side by side in a doorway (the bench's budget case)."""
    bg = background(width, height)
    walkers = [dataclasses.replace(p, height=min(150, height - 110)) for p in DEFAULT_PEOPLE[:people]]
    step = width // max(1, people)
    for i, s in enumerate(sprites(walkers)):
        x = 20 + i * step
        w = min(s.shape[1], width - x)
        bg[100 : 100 + s.shape[0], x : x + w] = s[:, :w]
    return bg


DEFAULT_PEOPLE = (
    Person(masked=False, height=230),
    Person(masked=True, height=220, left_to_right=False),
    Person(masked=False, height=200, left_to_right=False),
    Person(masked=True, height=240),
    Person(masked=False, height=250),
)



# --- what the demo shows: the annotated clip, the contact sheet, the summary -------------------

CLIP_NAME, SHEET_NAME, RECORD_NAME = "annotated.mp4", "contact-sheet.png", "annotated.json"
# An alert's banner stays this long: long enough to read, gone before the next person arrives.
BANNER_S = 1.5
TILE_SCALE = 0.5  # contact-sheet tiles are frames at this scale


def banner_text(events: Sequence[AlertEvent]) -> str:
    """What the banner says: every alert on it, oldest first."""
    return "   ".join(f"ALERT #{e.track_id} {e.label} {e.score:.2f}" for e in events)


class Recorder:
    """Draws each frame the pipeline processed (faces with their track ids; a banner while an alert
    is fresh), writes it to ``annotated.mp4``, offers it to the preview (paced to the clip's frame
    rate, so it plays live) and keeps each alerted person's first frame for the contact sheet.

    Call it with each :class:`agent.pipeline.loop.FrameResult`; :meth:`close` releases the clip (also on
    an interrupted run), :meth:`save` writes the sheet and ``annotated.json``.
    """

    def __init__(self, out: Path, fps: float, size: Tuple[int, int], roi: Optional[Sequence[float]] = None,
                 preview: Optional[PreviewServer] = None) -> None:
        self.out = Path(out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoError(f"--out {out}: cannot create the folder ({exc.strerror or exc})\n  fix: pass --out"
                            " with a folder you can write to") from None
        self.clip_path = self.out / CLIP_NAME
        self.writer = cv2.VideoWriter(str(self.clip_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise DemoError(f"--out {out}: cannot write {self.clip_path} (mp4v)\n  fix: pass --out with a folder"
                            " you can write to; opencv-python-headless writes mp4v (pip install 'maskwatch[demo]')")
        self.fps = fps
        self.size = size
        self.roi = roi
        self.preview = preview
        self.banner_frames = max(1, round(BANNER_S * fps))
        self.frames = 0
        self.draw_s = 0.0  # spent drawing and writing frames (the pipeline times itself)
        self.banners: List[List[str]] = []  # per frame: the ids of the alerts on its banner
        self.alerts: List[Dict[str, Any]] = []
        self._shown: List[Tuple[int, AlertEvent]] = []  # (last frame on the banner, event)
        self._first: Dict[int, Tuple[int, np.ndarray]] = {}  # live track id -> (its first frame, tile)
        self._tiles: Dict[int, Tuple[np.ndarray, str, Tuple[int, int, int]]] = {}  # alerted track -> tile
        self._started: Optional[float] = None  # when the first frame was shown: the pace's origin

    def __call__(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        index = self.frames
        ids = {id(t.face): t.track_id for t in result.tracks if t.missed == 0 and t.face is not None}
        image = draw_overlay(result.frame.image, result.faces, self.roi, ids)
        self._remember_first_frames(result, index, image)
        for event in result.events:
            self._shown.append((index + self.banner_frames - 1, event))
            self.alerts.append({"id": event.event_id, "track": event.track_id, "label": event.label,
                                "score": event.score, "frame": index})
            self._tile(event, index)
        self._shown = [(last, e) for last, e in self._shown if last >= index]
        if self._shown:
            draw_banner(image, banner_text([e for _, e in self._shown]), label_color(self._shown[-1][1].label))
        self.banners.append([e.event_id for _, e in self._shown])
        self.writer.write(image)
        self.frames += 1
        self.draw_s += time.perf_counter() - t0
        if self.preview is not None:
            self.preview.update(image)
            # Play at the clip's own pace so the preview can be watched; the pipeline runs ahead.
            if self._started is None:
                self._started = time.monotonic()
            rest = self._started + self.frames / self.fps - time.monotonic()
            if rest > 0:
                time.sleep(rest)

    def _remember_first_frames(self, result: FrameResult, index: int, image: np.ndarray) -> None:
        live = {t.track_id for t in result.tracks}
        for tid in set(self._first) - live:
            del self._first[tid]  # ended without an alert (alerted ones have their tile already)
        for tid in live - set(self._first):
            tile = cv2.resize(image, None, fx=TILE_SCALE, fy=TILE_SCALE, interpolation=cv2.INTER_AREA)
            self._first[tid] = (index, tile)

    def _tile(self, event: AlertEvent, index: int) -> None:
        if event.track_id in self._tiles or event.track_id not in self._first:
            return  # one tile per person (a lingering person alerts again after the cooldown)
        first, tile = self._first[event.track_id]
        caption = f"#{event.track_id} {event.label} {event.score:.2f}: frame {first}, alert {index}"
        self._tiles[event.track_id] = (tile, caption, label_color(event.label))

    def close(self) -> None:
        """Finish the clip (what was written so far stays readable)."""
        self.writer.release()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def save(self, final: Mapping[str, Any]) -> Dict[str, Any]:
        """Write the contact sheet (none without alerts: an old one is removed) and ``annotated.json``
        from the pipeline's final stats; returns what ``annotated.json`` holds."""
        sheet_path = self.out / SHEET_NAME
        if self._tiles:
            tiles, captions, colors = zip(*self._tiles.values())
            cv2.imwrite(str(sheet_path), contact_sheet(tiles, captions, colors))
        else:
            sheet_path.unlink(missing_ok=True)
        total = final.get("ms", {}).get("total", {})
        record = {
            "clip": CLIP_NAME, "fps": self.fps, "size": list(self.size), "frames": self.frames,
            "contact_sheet": SHEET_NAME if self._tiles else None, "banner_frames": self.banner_frames,
            "alerts": self.alerts, "banners": self.banners, "people": dict(final.get("people", {})),
            "ms_per_frame": {"median": total.get("median"), "p95": total.get("p95"),
                             "drawing": round(self.draw_s * 1e3 / self.frames, 3) if self.frames else None},
        }
        (self.out / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
        return record


def summary_table(record: Mapping[str, Any], labels: Sequence[str]) -> str:
    """The demo's closing table: people seen and alerts per label (every label of the classifier's
    sidecar, in its order), then frames and the pipeline's milliseconds per frame."""
    people = record["people"]
    alerts: Dict[str, int] = {}
    for a in record["alerts"]:
        alerts[a["label"]] = alerts.get(a["label"], 0) + 1
    rows = [("label", "people", "alerts")]
    rows += [(label, str(people.get(label, 0)), str(alerts.get(label, 0))) for label in labels]
    rows.append(("all", str(sum(people.values())), str(len(record["alerts"]))))
    width = max(len(r[0]) for r in rows)
    lines = [f"  {a:<{width}}  {b:>6}  {c:>6}" for a, b, c in rows]
    ms = record["ms_per_frame"]
    if ms["median"] is not None:
        lines.append(f"  {record['frames']} frames, {ms['median']:.1f} ms per frame (median; p95 {ms['p95']:.1f})"
                     f" detect to publish, + {ms['drawing']:.1f} ms drawing and writing the clip")
    else:
        lines.append("  no frame processed")
    return "\n".join(lines)


# --- the command -----------------------------------------------------------------------------


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C/C++ code writes to fd 2 meanwhile to /dev/null: the TFLite runtime's "INFO: Created
    TensorFlow Lite XNNPACK delegate" line, which no Python setting reaches (``demo --quiet``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def wait_for_viewer(preview: PreviewServer, stop: threading.Event, timeout_s: float) -> None:
    """Until someone watches the preview (so they see the clip from its start), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while preview.clients == 0 and not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.1)


def run(args: argparse.Namespace) -> int:
    """The agent on a generated doorway clip: alerts as JSON lines on stdout; the annotated clip, the
    contact sheet and a summary table (stderr) show its work; ``--preview`` plays it live."""
    cfg = load_config(args.config)
    cfg.mqtt = dataclasses.replace(cfg.mqtt, enabled=False)
    cfg.runtime = dataclasses.replace(cfg.runtime, stats_interval_s=0.0)
    say: Callable[[str], None] = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    if args.quiet:
        logs.set_level("warning")
        with native_stderr_silenced():
            models = load_models(cfg)
    else:
        models = load_models(cfg)
    # The pipeline's own preview hook would draw faces without tracks or banners: the recorder
    # hands the preview its drawn frames instead.
    preview = PreviewServer(dataclasses.replace(cfg.preview, enabled=True), cfg.runtime.camera) if args.preview else None
    cfg.preview = dataclasses.replace(cfg.preview, enabled=False)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if preview is not None:
            preview.start()  # first: a busy port fails before anything is written
        with tempfile.TemporaryDirectory(prefix="maskwatch-demo-") as tmp:
            clip = make_clip(Path(tmp) / "doorway.avi", DEFAULT_PEOPLE)
            pipeline = build_pipeline(cfg, StdoutPublisher(), models)
            with Recorder(Path(args.out), clip.fps, clip.size, cfg.detector.roi, preview) as recorder:
                unmasked = sum(not p.masked for p in clip.people)
                say(f"demo: {len(clip.people)} people walk past a doorway ({unmasked} without a mask), "
                    f"{clip.frames} frames; alerts follow as JSON lines")
                if preview is not None:
                    say(f"demo: watch it at {preview.url} (it starts when a viewer connects, or in"
                        f" {args.wait:g} s; Ctrl-C stops)")
                    wait_for_viewer(preview, stop, args.wait)
                source = VideoFileSource(str(clip.path), cfg.source.max_pixels)
                try:
                    final = pipeline.run(source, stop, stats_interval_s=0.0, on_frame=recorder)
                finally:
                    source.close()
            record = recorder.save(final)
    except DemoError as exc:
        raise UsageError(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if preview is not None:
            preview.stop()
    wrote = [record["clip"], record["contact_sheet"] or "no contact sheet (no alert)", RECORD_NAME]
    say(("demo: stopped early\n" if stop.is_set() else "") + "demo summary:\n"
        + summary_table(record, models[1].face_labels) + f"\n  in {Path(args.out)}/: {', '.join(wrote)}")
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="folder for annotated.mp4, contact-sheet.png and annotated.json (default: demo-out)")
    p.add_argument("--preview", action="store_true",
                   help="also play the annotated clip live on the local preview (preview.host/port of the config)")
    p.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="with --preview: seconds to wait for a viewer before the clip starts (default 30)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the JSON alert lines")


__all__ = ["BANNER_S", "CLIP_NAME", "Clip", "DEFAULT_PEOPLE", "DemoError", "Person", "RECORD_NAME", "Recorder",
           "SHEET_NAME", "add_arguments", "astronaut_bgr", "banner_text", "doorway_scene", "draw_mask", "make_clip",
           "native_stderr_silenced", "render", "run", "summary_table", "wait_for_viewer"]
