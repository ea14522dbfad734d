"""The bundled sample: a doorway clip built at run time from scikit-image's astronaut photo.

People (copies of the astronaut's head and shoulders, public domain) walk past the camera one after
another; some get a surgical-style mask drawn over nose and mouth. Nothing is stored in the repo:
the clip is made when the demo or a test needs it (``pip install scikit-image``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

# Where things are in skimage.data.astronaut() (512 x 512): the head-and-shoulders sprite and,
# inside it, the mask outline (over nose, mouth and chin) and the ear-loop anchors.
_SPRITE = (130, 10, 330, 270)  # x1, y1, x2, y2
_MASK = np.array([(178, 116), (200, 112), (225, 114), (250, 112), (272, 116), (268, 150), (250, 174),
                  (225, 184), (200, 174), (182, 150)], np.int32)
_LOOPS = (((178, 118), (170, 104)), ((272, 118), (280, 104)))


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
        raise RuntimeError("the demo clip is built from scikit-image's sample photo\n  fix: pip install"
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
        raise RuntimeError(f"{path}: OpenCV cannot write an MJPEG AVI here")
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

__all__ = ["Clip", "DEFAULT_PEOPLE", "Person", "astronaut_bgr", "doorway_scene", "draw_mask", "make_clip", "render"]
