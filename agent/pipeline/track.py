"""A light IoU tracker: follows faces across frames and decides each person's label over a window.

Flat and data-only in the norfair manner: a :class:`agent.types.Track` is plain data, the distance
is a function passed in (IoU by default), and one call, :meth:`Tracker.update`, takes the labelled
faces of a frame and returns the live tracks.

A track's label is decided from the last ``window`` per-frame class scores (median by default, so a
few bad frames -- a hand over the mouth, motion blur -- do not flip it), once the track has been
matched in ``min_hits`` frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Literal, Mapping, Optional, Sequence, Tuple

import math
import statistics

import numpy as np

from agent.pipeline.boxes import iou
from agent.pipeline.classify import pick_label
from agent.types import Box, Face, Track

Distance = Callable[[Box, Box], float]


@dataclass
class TrackerConfig:
    """``tracker:`` section -- following people across frames."""

    iou_threshold: float = field(default=0.2, metadata={"help": "least IoU between a face and a track's predicted box to match"})
    max_missed: int = field(default=10, metadata={"help": "frames a track survives without a match"})
    min_hits: int = field(default=3, metadata={"help": "matched frames before a track's label is decided"})
    window: int = field(default=15, metadata={"help": "frames of class scores the label is decided over"})
    aggregate: Literal["median", "mean"] = field(default="median", metadata={"help": "how window scores are combined"})
    velocity: bool = field(default=True, metadata={"help": "predict boxes with a constant velocity (walking people)"})
    max_centre_distance: float = field(
        default=1.0,
        metadata={"help": "fallback when boxes barely overlap (missed detections, jittery boxes): match a face whose"
                  " centre is within this many face sizes of the predicted one, size within 1.5x; 0: off"},
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold < 1.0:
            raise ValueError("iou_threshold must be between 0 and 1")
        # one message per key: the config loader points at the key a message starts with
        if self.max_missed < 0:
            raise ValueError("max_missed must be >= 0")
        if self.min_hits < 1:
            raise ValueError("min_hits must be >= 1")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if self.max_centre_distance < 0:
            raise ValueError("max_centre_distance must be >= 0")


def centre_similarity(a: Box, b: Box, max_distance: float, max_size_ratio: float = 1.5) -> float:
    """1 at the same centre, falling to 0 at ``max_distance`` face sizes (sqrt of the area of ``a``);
    0 when the sizes differ by more than ``max_size_ratio``."""
    sa = math.sqrt(max((a[2] - a[0]) * (a[3] - a[1]), 1e-9))
    sb = math.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1e-9))
    if max_distance <= 0 or max(sa, sb) > max_size_ratio * min(sa, sb):
        return 0.0
    d = math.hypot((a[0] + a[2] - b[0] - b[2]) / 2.0, (a[1] + a[3] - b[1] - b[3]) / 2.0) / sa
    return max(0.0, 1.0 - d / max_distance)


@dataclass
class _History:
    """What the tracker remembers about a track beyond the public :class:`Track`."""

    scores: Deque[Dict[str, float]]
    centres: Deque[Tuple[int, float, float]]  # (frame number, cx, cy) of recent matches
    velocity: Tuple[float, float] = (0.0, 0.0)  # pixels per frame


class Tracker:
    """Greedy IoU matching of faces to tracks, highest overlap first."""

    def __init__(self, cfg: TrackerConfig, distance: Distance = iou, thresholds: Optional[Mapping[str, float]] = None) -> None:
        self.cfg = cfg
        self.similarity = distance
        # the classifier's per-label thresholds (config classifier.thresholds): a track's label is
        # decided by the same rule as a frame's (agent.pipeline.classify.pick_label)
        self.thresholds: Dict[str, float] = dict(thresholds or {})
        self.tracks: List[Track] = []
        self._history: Dict[int, _History] = {}
        self._frame = 0  # updates so far: the tracker's clock for velocities
        self._next_id = 1

    def predicted_box(self, track: Track) -> Box:
        """Where a track's face is expected in the next frame."""
        if not self.cfg.velocity:
            return track.box
        vx, vy = self._history[track.track_id].velocity
        k = track.missed + 1
        x1, y1, x2, y2 = track.box
        return (x1 + vx * k, y1 + vy * k, x2 + vx * k, y2 + vy * k)

    def update(self, faces: Sequence[Face], timestamp: float) -> List[Track]:
        """Match this frame's faces to tracks, start new tracks, drop lost ones; returns live tracks."""
        self._frame += 1
        predicted = [self.predicted_box(t) for t in self.tracks]
        # (rank, similarity, track, face): overlap matches first, centre-distance fallbacks after.
        pairs: List[Tuple[int, float, int, int]] = []
        for ti, pbox in enumerate(predicted):
            for fi, face in enumerate(faces):
                s = self.similarity(pbox, face.box)
                if s >= self.cfg.iou_threshold:
                    pairs.append((0, s, ti, fi))
                else:
                    # The longer a track went unseen, the farther its face may have moved.
                    reach = self.cfg.max_centre_distance * (1.0 + 0.5 * self.tracks[ti].missed)
                    c = centre_similarity(pbox, face.box, reach)
                    if c > 0.0:
                        pairs.append((1, c, ti, fi))
        pairs.sort(key=lambda p: (p[0], -p[1]))
        used_t, used_f = set(), set()
        for _, _, ti, fi in pairs:
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            self._match(self.tracks[ti], faces[fi], timestamp)
        for ti, track in enumerate(self.tracks):
            if ti not in used_t:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.cfg.max_missed]
        live = {t.track_id for t in self.tracks}
        self._history = {k: v for k, v in self._history.items() if k in live}
        for fi, face in enumerate(faces):
            if fi not in used_f:
                self._start(face, timestamp)
        return list(self.tracks)

    def _start(self, face: Face, timestamp: float) -> None:
        track = Track(track_id=self._next_id, box=face.box, first_seen=timestamp, last_seen=timestamp, face=face)
        self._next_id += 1
        self._history[track.track_id] = _History(scores=deque(maxlen=self.cfg.window),
                                                 centres=deque([(self._frame, *_centre(face.box))], maxlen=8))
        self._remember(track, face)
        self.tracks.append(track)

    def _match(self, track: Track, face: Face, timestamp: float) -> None:
        hist = self._history[track.track_id]
        hist.centres.append((self._frame, *_centre(face.box)))
        hist.velocity = _velocity(hist.centres)
        track.box = face.box
        track.last_seen = timestamp
        track.hits += 1
        track.missed = 0
        track.face = face
        self._remember(track, face)

    def _remember(self, track: Track, face: Face) -> None:
        hist = self._history[track.track_id]
        if face.scores:
            hist.scores.append(dict(face.scores))
        if track.hits >= self.cfg.min_hits and hist.scores:
            track.label, track.score, track.scores = decide(hist.scores, self.cfg.aggregate, self.thresholds)


def decide(window: Sequence[Dict[str, float]], aggregate: str = "median",
           thresholds: Optional[Mapping[str, float]] = None) -> Tuple[Optional[str], float, Dict[str, float]]:
    """Combine per-frame class scores: (decided label, its score, all aggregates). The label is the
    one with the highest aggregate that reaches its ``thresholds`` entry (the classifier's rule,
    :func:`agent.pipeline.classify.pick_label`); without thresholds, the highest."""
    labels = sorted({k for s in window for k in s})
    if not labels:
        return None, 0.0, {}
    # Plain Python: for a window of ~15 frames it is several times faster than building arrays.
    combine = statistics.median if aggregate == "median" else statistics.fmean
    agg = {k: float(combine([s.get(k, 0.0) for s in window])) for k in labels}
    best = labels[pick_label(np.array([agg[k] for k in labels]), labels, dict(thresholds or {}))]
    return best, agg[best], agg


def _velocity(centres: Sequence[Tuple[int, float, float]]) -> Tuple[float, float]:
    """Least-squares pixels per frame over recent matched centres: one jittery box barely moves it."""
    if len(centres) < 2:
        return 0.0, 0.0
    n = len(centres)
    tm = sum(c[0] for c in centres) / n
    denom = sum((c[0] - tm) ** 2 for c in centres)
    if denom <= 0:
        return 0.0, 0.0
    return (sum((c[0] - tm) * c[1] for c in centres) / denom, sum((c[0] - tm) * c[2] for c in centres) / denom)


def _centre(box: Box) -> Tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


__all__ = ["Tracker", "TrackerConfig", "centre_similarity", "decide", "iou"]
