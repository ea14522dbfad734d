"""Plain values passed between the stages of the pipeline.

Each arrow of the data flow is one of these, so each stage can be tested alone.
Coordinates are pixels of the original frame unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

Box = Tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass
class Frame:
    """One image from a source: BGR uint8 (H, W, 3), with the time it was captured."""

    image: np.ndarray
    timestamp: float  # seconds since the epoch
    index: int = 0  # frame number within the source
    source: str = ""  # what produced it (path, URL, device) for logs and JSON output
    # Seconds into a played-back video file (whose ``timestamp`` then follows the video's clock,
    # not the wall clock); None for cameras, streams and images.
    position_s: Optional[float] = None


@dataclass
class Face:
    """A detected face, optionally classified.

    ``keypoints`` is (K, 2) in pixels, in the order of the detector sidecar's
    ``keypoint_names`` (YuNet: right eye, left eye, nose tip, right and left mouth corners; the person's right eye is
    on the image's left).
    """

    box: Box
    face_score: float
    keypoints: Optional[np.ndarray] = None
    label: Optional[str] = None
    score: float = 0.0  # probability of ``label``
    scores: Dict[str, float] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass
class Track:
    """A person followed across frames by the tracker."""

    track_id: int
    box: Box
    first_seen: float
    last_seen: float
    hits: int = 1  # frames in which it was matched
    missed: int = 0  # consecutive frames without a match
    label: Optional[str] = None  # decided label, None while undecided
    score: float = 0.0  # decided label's aggregated score
    scores: Dict[str, float] = field(default_factory=dict)  # aggregated per-label scores
    face: Optional[Face] = None  # the latest face matched to this track


@dataclass
class AlertEvent:
    """A decided unmasked person: what the publisher turns into one MQTT message / JSON line."""

    event_id: str  # unique, stable across retries
    camera: str
    epoch: float
    label: str  # "no_mask" or "incorrect_mask"
    score: float
    track_id: int
    box: Box
    frame_width: int
    frame_height: int
    models: Dict[str, str] = field(default_factory=dict)  # model name -> version
    crop_jpeg: Optional[bytes] = None  # small face crop, only when enabled in config
    position_s: Optional[float] = None  # where in a played-back video file (``Frame.position_s``)
