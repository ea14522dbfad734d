"""Alert policy: which decided tracks become :class:`agent.types.AlertEvent`s, and how often.

One person walking past is one track; the policy raises at most one event per track, and raises it
again only if the same track is still unmasked after ``cooldown_s`` (someone lingering at the door).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from agent.pipeline.crop import CropSpec, crop_face
from agent.types import AlertEvent, Track

# Faces in an alert's optional thumbnail are cut like the classifier's crops, at this size.
_THUMB_SCALE = 1.6
DEFAULT_LABELS = ("no_mask", "incorrect_mask")  # the alerting labels when the config names none


@dataclass
class AlertConfig:
    """``alerts:`` section -- which people raise an alert."""

    labels: List[str] = field(
        default_factory=lambda: list(DEFAULT_LABELS),
        metadata={"help": "decided labels that raise an alert"},
    )
    min_track_age: int = field(default=5, metadata={"help": "frames a person must be seen before an alert"})
    min_score: float = field(default=0.5, metadata={"help": "least decided score of the label to alert"})
    cooldown_s: float = field(
        default=120.0, metadata={"help": "seconds before the same still-unmasked person alerts again"}
    )
    include_crop: bool = field(default=False, metadata={"help": "attach a small JPEG of the face to alerts"})
    crop_size: int = field(default=96, metadata={"help": "side of the attached face JPEG in pixels"})

    def __post_init__(self) -> None:
        if self.min_track_age < 1:
            raise ValueError("min_track_age must be >= 1")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError("min_score must be between 0 and 1")
        if self.cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        if not 16 <= self.crop_size <= 512:
            raise ValueError("crop_size must be between 16 and 512")


class AlertPolicy:
    """Turns the tracker's live tracks into events, remembering which tracks already alerted."""

    def __init__(self, cfg: AlertConfig, camera: str, models: Optional[Dict[str, str]] = None) -> None:
        self.cfg = cfg
        self.camera = camera
        self.models = dict(models or {})
        self._last_alert: Dict[int, float] = {}  # track id -> time of its last alert
        self._count: Dict[int, int] = {}  # track id -> alerts raised (part of the event id)

    def update(self, tracks: Sequence[Track], timestamp: float, image: Optional[np.ndarray] = None,
               position_s: Optional[float] = None) -> List[AlertEvent]:
        """Events for tracks that qualify now; ``image`` is the current frame (for thumbnails),
        ``position_s`` its place in a played-back file (``Frame.position_s``)."""
        events: List[AlertEvent] = []
        live = set()
        for t in tracks:
            live.add(t.track_id)
            if t.missed or t.label not in self.cfg.labels or t.hits < self.cfg.min_track_age:
                continue
            if t.score < self.cfg.min_score:
                continue
            last = self._last_alert.get(t.track_id)
            if last is not None and timestamp - last < self.cfg.cooldown_s:
                continue
            self._last_alert[t.track_id] = timestamp
            n = self._count.get(t.track_id, 0) + 1
            self._count[t.track_id] = n
            events.append(self._event(t, timestamp, n, image, position_s))
        # Forget tracks that ended, so memory stays bounded over days.
        for gone in set(self._last_alert) - live:
            del self._last_alert[gone]
            self._count.pop(gone, None)
        return events

    def _event(self, t: Track, timestamp: float, n: int, image: Optional[np.ndarray],
               position_s: Optional[float] = None) -> AlertEvent:
        h, w = (image.shape[:2] if image is not None else (0, 0))
        # Stable and unique: camera, the track's first sighting (ms) and id, the alert's number.
        event_id = f"{self.camera}-{int(t.first_seen * 1000)}-{t.track_id}-{n}"
        crop = None
        if self.cfg.include_crop and image is not None:
            spec = CropSpec(width=self.cfg.crop_size, height=self.cfg.crop_size, scale=_THUMB_SCALE, align="none")
            ok, buf = cv2.imencode(".jpg", crop_face(image, t.box, None, spec), [cv2.IMWRITE_JPEG_QUALITY, 80])
            crop = buf.tobytes() if ok else None
        return AlertEvent(
            event_id=event_id,
            camera=self.camera,
            # A played-back file runs on the video's clock (faster than real time, alerts would be
            # stamped in the future): its alert carries the wall clock of the decision, and the
            # video position separately. A camera's frame time is the wall clock already.
            epoch=timestamp if position_s is None else time.time(),
            position_s=position_s,
            label=str(t.label),
            score=round(float(t.score), 4),
            track_id=t.track_id,
            box=tuple(round(float(v), 1) for v in t.box),  # type: ignore[arg-type]
            frame_width=int(w),
            frame_height=int(h),
            models=dict(self.models),
            crop_jpeg=crop,
        )


__all__ = ["AlertConfig", "AlertPolicy"]
