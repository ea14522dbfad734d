"""``maskwatch collect``: save aligned face crops from a source into a site folder, for labelling.

The folder is the contract of docs/site-data.md: ``DIR/unlabeled/<run>_t<track>_f<frame>.png``
crops cut by :func:`agent.pipeline.crop.crop_face` with the classifier sidecar's geometry (framed as the
classifier sees faces at run time, only larger), one ``DIR/crops.csv`` row per crop with the
current model's guess, and ``DIR/collect.json`` saying what cut them. Every run appends under its
own run id: no file is ever overwritten.

The agent's own detector, classifier and tracker pick the crops: at most ``--per-track`` per
person, none smaller than ``--min-face``, and none that is a near-duplicate of one already saved
for the same person (see :data:`DUPLICATE_MAD`).

An explicit command only: no config key turns it on, so the service never stores faces.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from agent.assemble import load_models
from agent.config import load_config
from agent.pipeline.classify import MaskClassifier
from agent.pipeline.crop import CropSpec, crop_face, crop_size_ok
from agent.pipeline.detect import FaceDetector, clip_box
from agent.model import Model, sha256_of
from agent.pipeline.publish.stdout import iso_utc
from agent.pipeline.source import FrameSource, SourceError, open_source, redact_uri
from agent.pipeline.track import Tracker
from agent.tools.site import LABELS, UNLABELED, SiteError, SiteFolder, sigterm_as_interrupt
from agent.types import Face, Frame

if TYPE_CHECKING:
    from agent.config import Config

DEFAULT_SIZE = 128
DEFAULT_PER_TRACK = 5
# Near-duplicates: a crop whose 16x16 grayscale thumbnail differs from one already saved for the
# same track by less than this mean absolute difference (grey levels, 0-255) is skipped. Measured
# on 128 px crops of a real face: sensor noise gives ~0.5, box jitter of 1-2 % of the face 3.5-7,
# a 4 % shift or a 10 % change of light 13 or more. So a person standing still is saved once,
# while a step, a head turn or new light is kept.
THUMB = 16
DUPLICATE_MAD = 8.0


@dataclass(frozen=True)
class Options:
    """What to collect, checked: from the command line."""

    source: str
    out: Path
    per_track: int = DEFAULT_PER_TRACK
    min_face: Optional[float] = None  # None: the config's detector.min_face_px
    max_crops: Optional[int] = None  # None: until the source ends (or Ctrl-C)
    size: int = DEFAULT_SIZE


@dataclass
class Stats:
    """What a run did; goes into collect.json and the summary line."""

    frames: int = 0
    crops: int = 0
    tracks: int = 0  # tracks with at least one crop saved
    duplicates: int = 0
    too_small: int = 0  # face detections below --min-face
    capped: int = 0  # faces of tracks that already had --per-track crops
    stopped: str = "end of source"  # or "--max N", "interrupted"
    run: str = ""  # the run id
    min_face: float = 0.0  # the --min-face applied


# --- the site folder ---------------------------------------------------------------------------


def model_info(model: Model) -> Dict[str, str]:
    """Name, version and sha256 of a model file: what made a crop or a guess."""
    return {"name": model.name, "version": model.version, "sha256": sha256_of(model.model_path)}


# --- choosing crops ----------------------------------------------------------------------------


def thumbnail(crop: np.ndarray) -> np.ndarray:
    """A THUMB x THUMB grayscale float32 summary of a crop, for near-duplicate tests."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class Deduper:
    """Thumbnails of the crops saved per track; a new crop too close to one of them is a duplicate."""

    def __init__(self, threshold: float = DUPLICATE_MAD) -> None:
        self.threshold = threshold
        self._thumbs: Dict[int, List[np.ndarray]] = {}

    def is_duplicate(self, track_id: int, crop: np.ndarray) -> bool:
        t = thumbnail(crop)
        return any(float(np.abs(t - s).mean()) < self.threshold for s in self._thumbs.get(track_id, []))

    def add(self, track_id: int, crop: np.ndarray) -> None:
        self._thumbs.setdefault(track_id, []).append(thumbnail(crop))

    def saved(self, track_id: int) -> int:
        return len(self._thumbs.get(track_id, []))

    def keep_only(self, live: Sequence[int]) -> None:
        """Forget ended tracks (a long run on a camera must not grow without bound)."""
        keep = set(live)
        self._thumbs = {k: v for k, v in self._thumbs.items() if k in keep}


def csv_row(name: str, source: str, frame: Frame, track_id: int, face: Face) -> List[Any]:
    """One crops.csv row (columns :data:`CSV_COLUMNS`)."""
    h, w = frame.image.shape[:2]
    box = [round(v, 1) for v in clip_box(face.box, w, h)]
    probs = ["" if label not in face.scores else round(face.scores[label], 4) for label in LABELS]
    return [name, source, iso_utc(frame.timestamp), frame.index, track_id, *box, round(face.face_score, 4),
            face.label, round(face.score, 4), *probs]


@dataclass
class Collector:
    """Runs frames through detector, classifier and tracker and saves the crops worth labelling."""

    detector: FaceDetector  # built with min_face_px 0: faces below --min-face are counted, not unseen
    classifier: MaskClassifier
    tracker: Tracker
    folder: SiteFolder
    source_name: str  # as written to crops.csv (credentials redacted)
    opts: Options
    min_face: float
    spec: CropSpec = field(init=False)
    deduper: Deduper = field(default_factory=Deduper)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.stats.min_face = self.min_face
        self.spec = CropSpec.from_sidecar(self.classifier.model.meta.get("crop", {}), self.opts.size, self.opts.size)

    @property
    def full(self) -> bool:
        return self.opts.max_crops is not None and self.stats.crops >= self.opts.max_crops

    def process(self, frame: Frame) -> None:
        """Detect, classify, track one frame; save a crop per visible track that still needs one."""
        self.stats.frames += 1
        faces = self.detector.detect(frame.image)
        small = [f for f in faces if not crop_size_ok(f.box, self.min_face)]
        self.stats.too_small += len(small)
        labelled = self.classifier.label_all(frame.image, [f for f in faces if crop_size_ok(f.box, self.min_face)])
        # Small faces are tracked too: a person walking closer keeps one track id.
        tracks = self.tracker.update(labelled + small, frame.timestamp)
        wanted = {id(f) for f in labelled}
        for track in tracks:
            if self.full:
                break
            face = track.face
            if track.missed or face is None or id(face) not in wanted:
                continue
            self._offer(frame, track.track_id, face)
        self.deduper.keep_only([t.track_id for t in tracks])

    def _offer(self, frame: Frame, track_id: int, face: Face) -> None:
        saved = self.deduper.saved(track_id)
        if saved >= self.opts.per_track:
            self.stats.capped += 1
            return
        crop = crop_face(frame.image, face.box, face.keypoints, self.spec)
        if self.deduper.is_duplicate(track_id, crop):
            self.stats.duplicates += 1
            return
        name = f"{self.folder.run}_t{track_id}_f{frame.index}.png"
        self.folder.save(name, crop, csv_row(name, self.source_name, frame, track_id, face))
        self.deduper.add(track_id, crop)
        self.stats.crops += 1
        self.stats.tracks += saved == 0

    def run(self, source: FrameSource) -> Stats:
        """Until the source ends, --max crops are saved, or Ctrl-C."""
        try:
            for frame in source:
                self.process(frame)
                if self.full:
                    self.stats.stopped = f"--max {self.opts.max_crops}"
                    break
        except KeyboardInterrupt:
            self.stats.stopped = "interrupted"
        return self.stats


# --- command ---------------------------------------------------------------------------------


def _number(value: Optional[str], flag: str, lo: float, hi: float, whole: bool = True) -> Optional[float]:
    """A command-line number within [lo, hi] (None when not given), or a SiteError naming the flag."""
    if value is None:
        return None
    try:
        n: Optional[float] = int(value) if whole else float(value)
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        kind, span = ("a whole number", f"{int(lo)} to {int(hi)}") if whole else ("a number", f"{lo:g} to {hi:g}")
        raise SiteError(f"{flag} {value!r}: must be {kind} from {span}; fix: give {kind} in that range")
    return n


def options(args: argparse.Namespace) -> Options:
    """Check the command line (before anything slow happens)."""
    if not args.source.strip():
        raise SiteError("--source is empty; fix: give a video file, image folder, camera index or URL")
    out = Path(args.out)
    SiteFolder.check_path(out)
    per_track = _number(args.per_track, "--per-track", 1, 1_000_000)
    max_crops = _number(args.max, "--max", 1, 1_000_000_000)
    size = _number(args.size, "--size", 16, 2048)
    return Options(
        source=args.source,
        out=out,
        per_track=DEFAULT_PER_TRACK if per_track is None else int(per_track),
        min_face=_number(args.min_face, "--min-face", 0, 100_000, whole=False),
        max_crops=None if max_crops is None else int(max_crops),
        size=DEFAULT_SIZE if size is None else int(size),
    )


def collect(opts: Options, cfg: "Config") -> Stats:
    """Load the models, open the source and collect into ``opts.out``; returns what was done."""
    min_face = cfg.detector.min_face_px if opts.min_face is None else opts.min_face
    cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, min_face_px=0.0))
    detector, classifier = load_models(cfg)
    try:
        source = open_source(dataclasses.replace(cfg.source, uri=opts.source))
    except SourceError as exc:
        raise SiteError(str(exc).replace("source.uri", "--source", 1).replace("\n  fix:", "; fix:")) from None
    folder = SiteFolder(opts.out)
    name = redact_uri(opts.source)
    collector = Collector(detector, classifier, Tracker(cfg.tracker, thresholds=cfg.classifier.thresholds), folder, name, opts, min_face)
    spec = collector.spec
    header = {"size": opts.size, "crop": spec.sidecar(),
              "labels": list(classifier.labels), "detector": model_info(detector.model),
              "classifier": model_info(classifier.model)}
    run_info = {"source": name, "started": iso_utc(time.time()), "finished": None, "per_track": opts.per_track,
                "min_face": min_face, "max": opts.max_crops, "duplicate_mad": DUPLICATE_MAD, "thumbnail": THUMB}
    try:
        folder.open(header, run_info)
        collector.stats.run = folder.run
        if source.live:
            print(f"collect: reading {name} into {folder.unlabeled} (run {folder.run}); Ctrl-C to stop",
                  file=sys.stderr, flush=True)
        stats = collector.run(source)
    finally:
        source.close()
        folder.close()
    fields = dataclasses.asdict(stats)
    del fields["run"], fields["min_face"]  # already in the run's record
    folder.finish_run({"finished": iso_utc(time.time()), **fields})
    if stats.frames == 0 and not source.live:
        raise SiteError(f"--source {name}: no readable frame; fix: check the file (a video OpenCV reads,"
                        " or images)")
    return stats


def summary(stats: Stats, opts: Options) -> str:
    """The one line printed at the end."""
    return (f"collect: saved {stats.crops} crops of {stats.tracks} tracks to {opts.out / UNLABELED} (run"
            f" {stats.run}, {stats.frames} frames, stopped: {stats.stopped}); skipped {stats.duplicates}"
            f" near-duplicates, {stats.too_small} too small (< {stats.min_face:g} px), {stats.capped} over"
            f" --per-track {opts.per_track}")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The ``collect`` subcommand's options (``--config`` is added by the CLI)."""
    sp.description = ("Save aligned face crops from a source into DIR/unlabeled for `maskwatch label` (folder format:"
                      " docs/site-data.md). The crops are faces of the people filmed: inform them, and delete DIR"
                      " when done. Never part of the service.")
    sp.add_argument("--source", required=True, metavar="SRC",
                    help="video file, image file/folder/glob, camera index, /dev/videoN, rtsp:// or http:// URL")
    sp.add_argument("--out", required=True, metavar="DIR", help="site folder (created; later runs append)")
    sp.add_argument("--per-track", metavar="K", help=f"most crops kept per person (default {DEFAULT_PER_TRACK})")
    sp.add_argument("--min-face", metavar="PX",
                    help="skip faces smaller than this, shorter side in pixels (default: detector.min_face_px)")
    sp.add_argument("--max", metavar="N", help="stop after N crops in all (default: at the end of the source)")
    sp.add_argument("--size", metavar="PX", help=f"crop side in pixels (default {DEFAULT_SIZE})")


def run(args: argparse.Namespace) -> int:
    """Collect crops and print a one-line summary; user mistakes exit 2 with one message."""
    try:
        opts = options(args)
        with sigterm_as_interrupt():  # a stopped run still completes collect.json
            stats = collect(opts, load_config(args.config))
    except SiteError as exc:  # reported here, not via cli.UsageError, so `python -m agent.cli` works too
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    print(summary(stats, opts), flush=True)
    return 0


__all__ = ["Collector", "DUPLICATE_MAD", "Deduper", "Options", "Stats", "add_arguments", "collect", "csv_row", "model_info",
           "options", "run", "summary", "thumbnail"]
