"""Training and validation crops for the mask classifier, cut with the agent's own crop function.

Sources (read-only, under ``--data-root``, default ``../shared/datasets`` from the repo root):

* ``scenes-ilc2021``: real scenes with annotated face boxes. ``train`` faces are cut several
  times with box jitter (centre +-8 %, size +-10 %, like real detections) and a small roll
  (+-10 degrees); ``val`` faces are cut once, unjittered, and are used for validation only.
* ``faces``: face crops of mixed framing (tight synthetic masks, head-and-shoulders VGGFace2,
  web photos). Cutting them "as they are" teaches "framing = class", so every image is re-framed:
  a face detector (MediaPipe BlazeFace short range) finds the face, its box is mapped to the
  annotators' box convention (fitted on ``scenes-ilc2021`` train faces), and the crop is cut from
  that box like any scene face. Images where no face is found are skipped and counted.
* ``not_face``: random background boxes of scene images (IoU < 0.1 with every face) and
  partial-face boxes (a face cut off by the box edge, or a close-up of part of a face).
* with ``--agent-detector``: ``train`` faces as the agent's own detector frames them, cut by the
  agent's crop path (its box, levelled by its eye keypoints), at full and 0.6x image size; the
  ``val`` faces it finds (IoU >= 0.5) instead of the annotated boxes, so val scores the faces the
  pipeline classifies; the faces/ sets and synthetic masks framed and placed by it too.

Crops are RGB uint8 at the classifier's input size, cached as one ``.npz`` under ``build/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.crop import CropSpec, crop_face
from agent.pipeline.boxes import iou  # the runtime's IoU: one definition for both sides
from agent.pipeline.detectors import blazeface
from agent.types import Box
from convert.ports.blazeface_keras import FACE_DIR, MODEL_FILES, decoding_fields, mediapipe_dir
from convert.data.masks import is_frontal, load_mask_templates, paste_mask
from convert.errors import float_in, int_at_least
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT

LABELS: Tuple[str, ...] = ("mask", "incorrect_mask", "no_mask", "not_face")
# Where crops are cached unless --out says otherwise (trainers, finetune and the card read it too).
DEFAULT_CROPS = REPO_ROOT / "build" / "classifier" / "crops.npz"
DEFAULT_FACE_DETECTOR = mediapipe_dir() / FACE_DIR / MODEL_FILES["short"]  # fetched by ensure_mediapipe()

# faces/<folder> -> label; the folder name is also the crop's source tag.
FACE_FOLDERS: Dict[str, str] = {
    "web/mask": "mask",
    "web/no_mask": "no_mask",
    "vggface2/no_mask": "no_mask",
    "vggface2-synthetic/mask": "mask",
}


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides which crops are made; stored in the cache next to the crops."""

    size: int = 64
    scale: float = 1.3
    shift_y: float = 0.0
    seed: int = 0
    jitter_centre: float = 0.08  # +- fraction of the box size
    jitter_size: float = 0.10  # +- fraction of the box size
    max_roll_deg: float = 10.0
    # jittered copies of each scenes-ilc2021 train face, per label (incorrect_mask is rare)
    scene_copies: Dict[str, int] = field(
        default_factory=lambda: {"mask": 3, "no_mask": 3, "incorrect_mask": 8}
    )
    face_copies: int = 1  # jittered copies of each re-framed faces/ image
    background_per_image: int = 2  # not_face background boxes per scene image
    partial_per_face: float = 0.4  # not_face partial-face boxes per scene face (expected)
    limit: Optional[int] = None  # at most this many images per source (tests, tiny runs)
    anchor: str = "box"  # the agent's crop.anchor: "box" or "keypoints" (see agent.pipeline.crop)
    anchor_side: float = 2.2
    anchor_centre: float = 0.8

    def crop_spec(self) -> CropSpec:
        """The agent's crop geometry; the classifier sidecar's ``crop`` is derived from it."""
        return CropSpec(width=self.size, height=self.size, scale=self.scale, align="eyes", shift_y=self.shift_y,
                        anchor=self.anchor, anchor_side=self.anchor_side, anchor_centre=self.anchor_centre)

    @classmethod
    def from_crop(cls, size: int, crop: Dict[str, object], **kw: object) -> "DataConfig":
        """The config whose crops a sidecar ``crop`` mapping describes, at ``size`` px (``kw``: the rest)."""
        spec = CropSpec.from_sidecar(crop, size, size)
        return cls(size=size, scale=spec.scale, shift_y=spec.shift_y, anchor=spec.anchor, anchor_side=spec.anchor_side,
                   anchor_centre=spec.anchor_centre, **kw)  # type: ignore[arg-type]


@dataclass
class SceneFace:
    image: str
    box: Box
    label: str
    split: str


@dataclass
class CropSet:
    """Crops of one split: images (N, H, W, 3) RGB uint8, labels (N,) int, and where each came from."""

    x: np.ndarray
    y: np.ndarray
    source: np.ndarray  # str tag per crop, e.g. "scenes", "web/mask", "background", "partial"
    image: np.ndarray  # source image file name per crop (for leakage checks)
    box_h: Optional[np.ndarray] = None  # face-box height in source pixels (0 for not_face)

    def __len__(self) -> int:
        return int(self.y.shape[0])


# ---------------------------------------------------------------- geometry

def covered(face: Box, region: Box) -> float:
    """Fraction of ``face``'s area that lies inside ``region``."""
    ix = max(0.0, min(face[2], region[2]) - max(face[0], region[0]))
    iy = max(0.0, min(face[3], region[3]) - max(face[1], region[1]))
    area = (face[2] - face[0]) * (face[3] - face[1])
    return ix * iy / area if area > 0 else 0.0


def crop_region(box: Box, scale: float) -> Box:
    """The square a crop of ``box`` covers (unrotated, shift_y 0): side ``scale`` * larger side."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = scale * max(box[2] - box[0], box[3] - box[1]) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def jitter_box(box: Box, rng: np.random.Generator, centre: float, size: float) -> Box:
    """Move the centre by +-``centre`` and scale by +-``size`` of the box size, like a detector would."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2 + rng.uniform(-centre, centre) * w
    cy = (y1 + y2) / 2 + rng.uniform(-centre, centre) * h
    s = 1.0 + rng.uniform(-size, size)
    return (cx - s * w / 2, cy - s * h / 2, cx + s * w / 2, cy + s * h / 2)


def roll_keypoints(box: Box, degrees: float) -> Optional[np.ndarray]:
    """Eye keypoints whose line is tilted by ``degrees``, so ``crop_face`` rolls the crop by that much.

    Training crops use this for rotation augmentation through the very function the agent runs.
    """
    if degrees == 0.0:
        return None
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    d = (box[2] - box[0]) / 4
    t = math.radians(degrees)
    return np.array([[cx - d * math.cos(t), cy - d * math.sin(t)], [cx + d * math.cos(t), cy + d * math.sin(t)]])


def background_boxes(
    width: int, height: int, faces: Sequence[Box], rng: np.random.Generator, n: int, scale: float = 1.3, tries: int = 50
) -> List[Box]:
    """Up to ``n`` random boxes shaped like faces that overlap no face (IoU < 0.1).

    A big box can hold a whole small face at a low IoU, so the crop it makes must also hold
    less than 10 % of every face.
    """
    out: List[Box] = []
    for _ in range(tries):
        if len(out) >= n:
            break
        side = rng.uniform(0.05, 0.45) * min(width, height)
        w, h = side, side * rng.uniform(1.0, 1.35)
        x1, y1 = rng.uniform(0, max(1.0, width - w)), rng.uniform(0, max(1.0, height - h))
        b = (x1, y1, x1 + w, y1 + h)
        region = crop_region(b, scale)
        if all(iou(b, f) < 0.1 and covered(f, region) < 0.1 for f in faces):
            out.append(b)
    return out


def partial_face_box(face: Box, faces: Sequence[Box], rng: np.random.Generator, scale: float = 1.3) -> Optional[Box]:
    """A box that catches only part of a face: shifted off it, or a close-up of one feature.

    These are what a detector's edge or duplicate detections look like; the classifier should
    call them ``not_face`` rather than guess a mask state. Its crop shows less than 35 % of any
    face of the image (``faces``); None when no such box was found.
    """
    x1, y1, x2, y2 = face
    w, h = x2 - x1, y2 - y1
    for _ in range(20):
        if rng.random() < 0.6:  # shifted: the face is cut by the crop border
            ang = rng.uniform(0, 2 * math.pi)
            dist = rng.uniform(0.7, 1.0)
            s = rng.uniform(0.8, 1.3)
            cx = (x1 + x2) / 2 + math.cos(ang) * dist * w
            cy = (y1 + y2) / 2 + math.sin(ang) * dist * h
            bw, bh = s * w, s * h
        else:  # close-up of an eye, an ear, the forehead...
            bw = bh = rng.uniform(0.25, 0.4) * max(w, h)
            cx, cy = rng.uniform(x1, x2), rng.uniform(y1, y2)
        b = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        region = crop_region(b, scale)
        if iou(b, face) < 0.25 and all(covered(f, region) < 0.35 for f in faces):
            return b
    return None


# ---------------------------------------------------------------- face detector for re-framing

class FaceFinder:
    """Finds the main face of a face-crop image with MediaPipe BlazeFace short range (float TFLite).

    Used only to re-frame the ``faces`` sets; it returns the highest-scoring face box, mapped to
    the human annotators' box convention by ``adjust`` (dx, dy, sw, sh relative to box size).
    """

    def __init__(self, model_path: Path, min_score: float = 0.5) -> None:
        from convert.litert import TfliteRunner  # noqa: PLC0415

        self._run = TfliteRunner(Path(model_path).read_bytes())
        # decoded as the agent decodes the short-range graph: its sidecar's decoding and anchors
        self._decoding = decoding_fields("short")
        self._anchors = blazeface.generate_anchors(self._decoding["anchors"])
        self.min_score = min_score
        self.adjust = (0.0, 0.0, 1.0, 1.0)

    def detect(self, bgr: np.ndarray, margin: float = 0.25) -> Optional[Tuple[Box, float]]:
        """Best face box (pixels of ``bgr``, annotator convention) and its score, or None."""
        got = self.detect_keypoints(bgr, margin)
        return None if got is None else (got[0], got[1])

    def detect_keypoints(self, bgr: np.ndarray, margin: float = 0.25) -> Optional[Tuple[Box, float, np.ndarray]]:
        """Like ``detect``, plus the 6 BlazeFace keypoints (6, 2) in pixels of ``bgr``.

        The image is padded to a square with ``margin`` of black on each side, so tight crops
        whose face fills the frame are still seen whole, as in a letterboxed frame.
        """
        h, w = bgr.shape[:2]
        side = int(round(max(h, w) * (1 + 2 * margin)))
        ox, oy = (side - w) // 2, (side - h) // 2
        canvas = np.zeros((side, side, 3), np.uint8)
        canvas[oy : oy + h, ox : ox + w] = bgr
        rgb = cv2.cvtColor(cv2.resize(canvas, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        n = len(self._anchors)
        outs = self._run((rgb.astype(np.float32)[None] - 127.5) / 127.5)
        boxes, scores, kps = blazeface.decode(outs[(1, n, 16)][0], outs[(1, n, 1)][0, :, 0], self._anchors, self._decoding)
        i = int(np.argmax(scores))  # the main face: the best cell, no NMS needed
        score = float(scores[i])
        if score < self.min_score:
            return None
        cx, cy = (boxes[i, 0] + boxes[i, 2]) / 2, (boxes[i, 1] + boxes[i, 3]) / 2
        bw, bh = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
        dx, dy, sw, sh = self.adjust
        cx, cy, bw, bh = cx + dx * bw, cy + dy * bh, bw * sw, bh * sh
        box = ((cx - bw / 2) * side - ox, (cy - bh / 2) * side - oy, (cx + bw / 2) * side - ox, (cy + bh / 2) * side - oy)
        return box, score, (kps[i] * side - np.array([ox, oy])).astype(np.float64)

    def fit_adjust(self, root: Path, faces: Sequence[SceneFace], n: int = 600, seed: int = 0) -> Dict[str, float]:
        """Fit ``adjust`` so detector boxes match annotator boxes: medians over scene train faces."""
        rng = np.random.default_rng(seed)
        picks = rng.permutation(len(faces))[:n]
        self.adjust = (0.0, 0.0, 1.0, 1.0)
        rel = []
        cache: Dict[str, np.ndarray] = {}
        for k in picks:
            f = faces[int(k)]
            if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) < 40:
                continue
            img = cache.get(f.image)
            if img is None:
                img = cache.setdefault(f.image, cv2.imread(str(root / "scenes-ilc2021" / "images" / f.image)))
            x1, y1, x2, y2 = f.box
            w, h = x2 - x1, y2 - y1
            # a context window like a face-crop image: the face plus half its size around it
            cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, 1.8 * max(w, h)
            ox, oy = int(max(0, cx - s / 2)), int(max(0, cy - s / 2))
            win = img[oy : int(cy + s / 2), ox : int(cx + s / 2)]
            got = self.detect(win)
            if got is None:
                continue
            (bx1, by1, bx2, by2), _ = got
            b = (bx1 + ox, by1 + oy, bx2 + ox, by2 + oy)
            if iou(b, f.box) < 0.3:
                continue
            bw, bh = b[2] - b[0], b[3] - b[1]
            rel.append((((x1 + x2) - (b[0] + b[2])) / 2 / bw, ((y1 + y2) - (b[1] + b[3])) / 2 / bh, w / bw, h / bh))
        if len(rel) < 20:
            raise RuntimeError(f"face detector matched only {len(rel)} scene faces; cannot fit its box convention")
        med = np.median(np.asarray(rel), axis=0)
        self.adjust = tuple(float(v) for v in med)  # type: ignore[assignment]
        return {"dx": self.adjust[0], "dy": self.adjust[1], "sw": self.adjust[2], "sh": self.adjust[3], "matched": len(rel)}


# ---------------------------------------------------------------- sources

def read_scene_faces(root: Path) -> List[SceneFace]:
    """Every annotated face of scenes-ilc2021 with its image's split."""
    base = root / "scenes-ilc2021"
    try:
        with open(base / "images.csv", newline="") as fh:
            split = {r["image"]: r["split"] for r in csv.DictReader(fh)}
        with open(base / "boxes.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc.filename}: scenes-ilc2021 not found; pass --data-root DIR holding scenes-ilc2021/ and faces/") from None
    return [
        SceneFace(r["image"], (float(r["xmin"]), float(r["ymin"]), float(r["xmax"]), float(r["ymax"])), r["label"], split[r["image"]])
        for r in rows
    ]


class _Builder:
    """Accumulates crops of one split."""

    def __init__(self, spec: CropSpec) -> None:
        self.spec = spec
        self.x: List[np.ndarray] = []
        self.y: List[int] = []
        self.source: List[str] = []
        self.image: List[str] = []
        self.box_h: List[float] = []

    def add(self, bgr: np.ndarray, box: Box, label: str, source: str, image: str, roll: float = 0.0, face_h: float = 0.0,
            keypoints: Optional[np.ndarray] = None) -> None:
        """One crop; ``keypoints`` (a detector's, in pixels) level the eyes as at run time, else ``roll`` degrees."""
        crop = crop_face(bgr, box, roll_keypoints(box, roll) if keypoints is None else keypoints, self.spec)
        self.x.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        self.y.append(LABELS.index(label))
        self.source.append(source)
        self.image.append(image)
        self.box_h.append(face_h)

    def done(self) -> CropSet:
        s = self.spec
        x = np.stack(self.x) if self.x else np.zeros((0, s.height, s.width, 3), np.uint8)
        return CropSet(x, np.asarray(self.y, np.int64), np.asarray(self.source, dtype=str), np.asarray(self.image, dtype=str), np.asarray(self.box_h, np.float32))


def build_crops(
    root: Path, cfg: DataConfig, face_detector: Optional[Path] = DEFAULT_FACE_DETECTOR, log=print,
    agent_detector: Optional[Path] = None,
) -> Tuple[CropSet, CropSet, Dict[str, object]]:
    """Cut train and val crops from every source; returns (train, val, info about what was made).

    ``agent_detector`` (a detector sidecar) adds train faces framed by it (:func:`detector_crops`)."""
    rng = np.random.default_rng(cfg.seed)
    spec = cfg.crop_spec()
    faces = read_scene_faces(root)
    by_image: Dict[str, List[SceneFace]] = {}
    for f in faces:
        by_image.setdefault(f.image, []).append(f)
    images = sorted(by_image)
    if cfg.limit is not None:
        per_split = {s: [i for i in images if by_image[i][0].split == s][: cfg.limit] for s in ("train", "val")}
        images = per_split["train"] + per_split["val"]
    train, val = _Builder(spec), _Builder(spec)
    info: Dict[str, object] = {"config": asdict(cfg)}
    t0 = time.time()
    for name in images:
        img = cv2.imread(str(root / "scenes-ilc2021" / "images" / name))
        if img is None:
            raise FileNotFoundError(f"{root / 'scenes-ilc2021' / 'images' / name}: unreadable image")
        fs = by_image[name]
        split = fs[0].split
        out = train if split == "train" else val
        h, w = img.shape[:2]
        for f in fs:
            fh = f.box[3] - f.box[1]
            if split == "train":
                for _ in range(cfg.scene_copies[f.label]):
                    box = jitter_box(f.box, rng, cfg.jitter_centre, cfg.jitter_size)
                    out.add(img, box, f.label, "scenes", name, rng.uniform(-cfg.max_roll_deg, cfg.max_roll_deg), fh)
            elif agent_detector is None:  # with a detector, val faces are cut as it frames them (below)
                out.add(img, f.box, f.label, "scenes", name, face_h=fh)
            if rng.random() < cfg.partial_per_face:
                b = partial_face_box(f.box, [g.box for g in fs], rng, cfg.scale)
                if b is not None:
                    out.add(img, b, "not_face", "partial", name)
        for b in background_boxes(w, h, [f.box for f in fs], rng, cfg.background_per_image, cfg.scale):
            out.add(img, b, "not_face", "background", name)
    log(f"scenes-ilc2021: {len(images)} images, {len(train.y)} train / {len(val.y)} val crops ({time.time() - t0:.0f} s)")
    if agent_detector is not None:
        info["agent_detector"] = {"model": agent_detector.name, **detector_crops(root, cfg, agent_detector, train, log=log)}
        info["agent_detector"]["val"] = detector_crops(root, cfg, agent_detector, val, scales=(1.0,), log=log,
                                                       split="val", min_iou=0.5)

    if face_detector is not None:
        # the agent's detector re-frames the faces/ sets when given (its box convention is the agent's)
        det = agent_face_detector(agent_detector) if agent_detector is not None else None
        if det is None:
            finder = FaceFinder(face_detector)
            n_fit = 600 if cfg.limit is None else 120  # tiny runs: a rougher fit, faster
            info["face_detector"] = {"model": face_detector.name, **finder.fit_adjust(root, [f for f in faces if f.split == "train"], n=n_fit, seed=cfg.seed)}
            log(f"face detector box convention fitted: {info['face_detector']}")
        else:
            info["face_detector"] = {"model": agent_detector.name, "keypoints": "levelled by its eyes, as at run time"}
        skipped: Dict[str, int] = {}
        for folder, label in FACE_FOLDERS.items():
            files = sorted((root / "faces" / folder).glob("*.jpg"))
            if cfg.limit is not None:
                files = files[: cfg.limit]
            if not files:
                raise FileNotFoundError(f"{root / 'faces' / folder}: no images; pass --data-root DIR holding faces/")
            miss = 0
            for p in files:
                img = cv2.imread(str(p))
                if img is not None and det is not None:
                    found = face_image_detection(det, img)
                    if found is None:
                        miss += 1
                        continue
                    train.add(img, found[0], label, folder, f"{folder}/{p.name}", face_h=found[0][3] - found[0][1], keypoints=found[1])
                    continue
                got = finder.detect(img) if img is not None else None
                if got is None:
                    miss += 1
                    continue
                for _ in range(cfg.face_copies):
                    box = jitter_box(got[0], rng, cfg.jitter_centre, cfg.jitter_size)
                    train.add(img, box, label, folder, f"{folder}/{p.name}", rng.uniform(-cfg.max_roll_deg, cfg.max_roll_deg), got[0][3] - got[0][1])
            skipped[folder] = miss
            log(f"faces/{folder}: {len(files) - miss} re-framed, {miss} without a face found")
        info["faces_skipped"] = skipped
    tr, va = train.done(), val.done()
    info["train_counts"] = {lab: int((tr.y == i).sum()) for i, lab in enumerate(LABELS)}
    info["val_counts"] = {lab: int((va.y == i).sum()) for i, lab in enumerate(LABELS)}
    return tr, va, info


# ---------------------------------------------------------------- faces as the agent's detector frames them


def detector_crops(root: Path, cfg: DataConfig, detector: Path, out: "_Builder", scales: Sequence[float] = (1.0, 0.6),
                   log=print, split: str = "train", min_iou: float = 0.4) -> Dict[str, object]:
    """Add train faces framed by the agent's own detector (``detector`` sidecar) and cut exactly as
    the agent cuts them at run time: its box, its eye keypoints levelling the crop.

    Annotator boxes with random jitter only imitate a detector; these crops carry its real box
    offsets and keypoint-driven roll. Each train image is also run at smaller ``scales`` (faces
    farther from the door, coarser boxes). A detection takes the label of the annotated face it
    overlaps at IoU >= ``min_iou``. Detections that overlap no annotated face are counted, never used as
    ``not_face``: looked at, most of them are real faces the annotators left unboxed (people in
    the background), and teaching the classifier to drop real faces would hide unmasked people.
    ``split`` "val" (scale 1.0, ``min_iou`` 0.5: the pipeline's matching rule) gives the faces the
    classifier is scored on, as the shipped detector frames them. Returns counts by kind and the scales.
    """
    det = agent_face_detector(detector)
    by_image: Dict[str, List[SceneFace]] = {}
    for f in read_scene_faces(root):
        if f.split == split:
            by_image.setdefault(f.image, []).append(f)
    images = sorted(by_image)[: cfg.limit] if cfg.limit is not None else sorted(by_image)
    counts: Dict[str, int] = {"matched": 0, "loose": 0, "unannotated": 0, "missed": 0}
    t0 = time.time()
    for name in images:
        full = cv2.imread(str(root / "scenes-ilc2021" / "images" / name))
        if full is None:
            raise FileNotFoundError(f"{root / 'scenes-ilc2021' / 'images' / name}: unreadable image")
        for scale in scales:
            img = full if scale == 1.0 else cv2.resize(full, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            faces = [(tuple(v * scale for v in f.box), f.label) for f in by_image[name]]
            found = set()
            for d in det.detect(img):
                ious = [iou(d.box, fb) for fb, _ in faces]
                k = int(np.argmax(ious))
                if ious[k] >= min_iou and k not in found:
                    found.add(k)
                    out.add(img, d.box, faces[k][1], "detector", name, face_h=d.box[3] - d.box[1], keypoints=d.keypoints)
                    counts["matched"] += 1
                elif ious[k] < 0.1:
                    counts["unannotated"] += 1
                else:
                    counts["loose"] += 1  # a loose box on a real face: its label would not be honest
            counts["missed"] += len(faces) - len(found)
    log(f"detector crops ({detector.name}, scales {list(scales)}): {counts} from {len(images)} {split} images ({time.time() - t0:.0f} s)")
    return {**counts, "scales": [float(v) for v in scales]}


def face_image_detection(det, img: np.ndarray) -> Optional[Tuple[Box, np.ndarray]]:
    """(box, keypoints) of the best-scored face the agent's detector ``det`` finds in a face-crop
    image (a faces/ set image), padded by a quarter of its height of black on each side as a
    letterboxed frame would be, so a face filling the image is still seen whole; None if none."""
    pad = img.shape[0] // 4
    faces = det.detect(cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)))
    if not faces or faces[0].keypoints is None:
        return None
    return tuple(float(v) - pad for v in faces[0].box), faces[0].keypoints.astype(np.float64) - pad  # type: ignore[return-value]


def agent_face_detector(sidecar: Path):
    """The agent's own face detector from its sidecar, keeping faces down to 8 px (what crops are cut from)."""
    from agent.pipeline.detect import DetectorConfig, FaceDetector  # noqa: PLC0415 (a model load; only when asked)

    return FaceDetector(DetectorConfig(model=str(sidecar), min_face_px=8.0))


# ---------------------------------------------------------------- synthetic masks


PLACEMENTS: Tuple[Tuple[str, str], ...] = (("correct", "mask"), ("under_nose", "incorrect_mask"), ("chin", "incorrect_mask"))


def build_synthetic(
    root: Path, cfg: DataConfig, face_detector: Path, n_faces: int = 3000, log=print,
    agent_detector: Optional[Path] = None,
) -> Tuple[CropSet, Dict[str, object]]:
    """Masks pasted on unmasked train faces: over nose and mouth (``mask``), just under the nose and
    on the chin (``incorrect_mask``), the three placements in equal numbers.

    Each template is used equally often for every placement, so a template cannot stand for a
    class. Faces: scenes-ilc2021 ``train`` no_mask faces (>= 40 px), then faces/vggface2/no_mask
    and faces/web/no_mask; never a ``val`` image. Sources are tagged ``synthetic/<label>``.

    With ``agent_detector`` (the shipped detector's sidecar) the masks are placed from *its*
    keypoints (YuNet: eyes, nose tip, mouth corners), and the masked image goes through the detector
    again: the crop is cut from the box and keypoints it finds on the masked face, as the agent would
    cut it (a masked face it no longer finds is skipped and counted). Without it, MediaPipe BlazeFace
    short range places the masks and the crop is cut from its box with a random roll.
    """
    rng = np.random.default_rng(cfg.seed + 1000)
    spec = cfg.crop_spec()
    templates = load_mask_templates(root)
    det = agent_face_detector(agent_detector) if agent_detector is not None else None
    finder = FaceFinder(face_detector) if det is None else None
    adjust = None if finder is None else finder.fit_adjust(
        root, [f for f in read_scene_faces(root) if f.split == "train"], n=600 if cfg.limit is None else 120, seed=cfg.seed)
    out = _Builder(spec)
    tmpl_used: List[str] = []
    lost: Dict[str, int] = {p: 0 for p, _ in PLACEMENTS}

    def find(img: np.ndarray, near: Optional[Box] = None) -> Optional[Tuple[Box, np.ndarray]]:
        """(box, keypoints) of the face: the detection best overlapping ``near`` (IoU >= 0.4), or
        the best-scored one of a face-crop image (padded as a letterboxed frame would be)."""
        if det is None:
            return None
        if near is None:
            return face_image_detection(det, img)
        faces = sorted((f for f in det.detect(img) if iou(f.box, near) >= 0.4), key=lambda f: -iou(f.box, near))
        if not faces or faces[0].keypoints is None:
            return None
        return faces[0].box, faces[0].keypoints.astype(np.float64)

    def candidates() -> Iterator[Tuple[str, np.ndarray, Box, np.ndarray]]:
        faces = [f for f in read_scene_faces(root) if f.split == "train" and f.label == "no_mask" and min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= 40]
        for f in faces[: cfg.limit] if cfg.limit else faces:
            img = cv2.imread(str(root / "scenes-ilc2021" / "images" / f.image))
            if det is not None:
                got = find(img, f.box)
                if got is not None:
                    yield f.image, img, got[0], got[1]
                continue
            x1, y1, x2, y2 = f.box
            s = 1.8 * max(x2 - x1, y2 - y1)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ox, oy = int(max(0, cx - s / 2)), int(max(0, cy - s / 2))
            got = finder.detect_keypoints(img[oy : int(cy + s / 2), ox : int(cx + s / 2)])
            if got is None:
                continue
            b = (got[0][0] + ox, got[0][1] + oy, got[0][2] + ox, got[0][3] + oy)
            if iou(b, f.box) >= 0.3:
                yield f.image, img, f.box, got[2] + np.array([ox, oy])
        for folder in ("vggface2/no_mask", "web/no_mask"):
            files = sorted((root / "faces" / folder).glob("*.jpg"))
            for k in rng.permutation(len(files))[: cfg.limit] if cfg.limit else rng.permutation(len(files)):
                p = files[int(k)]
                img = cv2.imread(str(p))
                if img is None:
                    continue
                if det is not None:
                    got2 = find(img)
                    if got2 is not None:
                        yield f"{folder}/{p.name}", img, got2[0], got2[1]
                    continue
                got = finder.detect_keypoints(img)
                if got is not None:
                    yield f"{folder}/{p.name}", img, got[0], got[2]

    k = 0
    for name, img, box, kps in candidates():
        if k >= n_faces:
            break
        if not is_frontal(kps):
            continue
        t = templates[(k // len(PLACEMENTS)) % len(templates)]
        placement, label = PLACEMENTS[k % len(PLACEMENTS)]
        syn = paste_mask(img, kps, t, placement, rng)
        k += 1
        if det is not None:
            # as the agent sees it: the masked face found again, cut from that box and its keypoints
            got = find(syn, box) if not name.startswith(("vggface2/", "web/")) else find(syn)
            if got is None:
                lost[placement] += 1
                continue
            out.add(syn, got[0], label, f"synthetic/{label}", name, face_h=got[0][3] - got[0][1], keypoints=got[1])
        else:
            jb = jitter_box(box, rng, cfg.jitter_centre, cfg.jitter_size)
            out.add(syn, jb, label, f"synthetic/{label}", name, rng.uniform(-cfg.max_roll_deg, cfg.max_roll_deg), box[3] - box[1])
        tmpl_used.append(f"{t.name}:{placement}")
    crops = out.done()
    info: Dict[str, object] = {
        "n": len(crops), "faces": n_faces, "templates": sorted(set(tmpl_used)),
        "counts": {lab: int((crops.y == i).sum()) for i, lab in enumerate(LABELS)},
        "placements": {p: sum(1 for u in tmpl_used if u.endswith(":" + p)) for p, _ in PLACEMENTS},
    }
    if det is not None:
        info["agent_detector"] = {"model": agent_detector.name, "not_found_after_pasting": lost}
    else:
        info["face_detector"] = adjust
    log(f"synthetic: {info['counts']} by placement {info['placements']}" + (f", lost {lost}" if det is not None else ""))
    return crops, info


def tune_fold_mask(images: np.ndarray, fraction: float) -> np.ndarray:
    """True for crops whose source image falls in the tuning fold: a fixed ``fraction`` of image names
    by hash (so every crop of an image, synthetic ones included, falls on the same side)."""
    import zlib  # noqa: PLC0415

    cut = int(round(fraction * 1000))
    return np.array([zlib.crc32(b"tune:" + str(n).encode()) % 1000 < cut for n in images], bool)


def tune_set(train: CropSet, fraction: float) -> CropSet:
    """The real (not synthetic) train crops of the tuning fold (:func:`tune_fold_mask`)."""
    m = tune_fold_mask(train.image, fraction) & ~np.char.startswith(train.source.astype(str), "synthetic")
    return CropSet(train.x[m], train.y[m], train.source[m], train.image[m], None if train.box_h is None else train.box_h[m])


def save_crops(path: Path, train: CropSet, val: CropSet, info: Dict[str, object]) -> None:
    """One compressed .npz with both splits and the build info (as JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        x_train=train.x, y_train=train.y, source_train=train.source, image_train=train.image, box_h_train=train.box_h,
        x_val=val.x, y_val=val.y, source_val=val.source, image_val=val.image, box_h_val=val.box_h,
        info=np.asarray(json.dumps(info)),
    )
    tmp.replace(path)


def load_crops(path: Path) -> Tuple[CropSet, CropSet, Dict[str, object]]:
    """Read what ``save_crops`` wrote."""
    with np.load(path) as z:
        get = lambda k: z[k] if k in z.files else None  # noqa: E731 (caches made before box_h existed)
        tr = CropSet(z["x_train"], z["y_train"], z["source_train"], z["image_train"], get("box_h_train"))
        va = CropSet(z["x_val"], z["y_val"], z["source_val"], z["image_val"], get("box_h_val"))
        info = json.loads(str(z["info"]))
    return tr, va, info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding scenes-ilc2021/ and faces/ (default: ../shared/datasets)")
    p.add_argument("--size", type=int_at_least(8), default=64, help="crop side in pixels (the classifier input)")
    p.add_argument("--scale", type=float_in(0, low_open=True), default=1.3, help="crop side / larger face-box side")
    p.add_argument("--shift-y", type=float_in(-1, 1), default=0.0, help="move the crop centre down by this many box heights")
    p.add_argument("--anchor", choices=("box", "keypoints"), default="box",
                   help="frame crops by the face box (--scale, --shift-y) or by the eye and mouth keypoints (--anchor-side, --anchor-centre)")
    p.add_argument("--anchor-side", type=float_in(0, low_open=True), default=2.2, help="keypoints anchor: crop side in eye-to-mouth distances")
    p.add_argument("--anchor-centre", type=float, default=0.8, help="keypoints anchor: crop centre below the eyes, in eye-to-mouth distances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="at most N images per source (tiny runs)")
    p.add_argument("--face-detector", type=Path, default=DEFAULT_FACE_DETECTOR, help="BlazeFace short-range .tflite used to re-frame faces/")
    p.add_argument("--no-faces", action="store_true", help="skip the faces/ sets")
    p.add_argument("--agent-detector", type=Path, default=None,
                   help="detector sidecar (e.g. models/face_detector_door.json): also cut train faces as it frames them")


def config_from_args(a: argparse.Namespace) -> DataConfig:
    return DataConfig(size=a.size, scale=a.scale, shift_y=a.shift_y, seed=a.seed, limit=a.limit,
                      anchor=getattr(a, "anchor", "box"), anchor_side=getattr(a, "anchor_side", 2.2),
                      anchor_centre=getattr(a, "anchor_centre", 0.8))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="classifier_data", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--out", type=Path, default=DEFAULT_CROPS)
    p.add_argument("--synthetic", type=int, default=0,
                   help="also paste masks on N unmasked train faces (a third each: over nose and mouth, under the nose, on the chin;"
                        " placed from --agent-detector's keypoints when given)")
    p.add_argument("--synthetic-only", action="store_true", help="only (re)make the synthetic crops")
    a = p.parse_args(argv)
    # with --agent-detector the faces/ sets and synthetic masks use it, not BlazeFace short range
    if not a.no_faces and a.agent_detector is None and not a.face_detector.is_file():
        print(f"error: {a.face_detector}: face detector not found; pass --face-detector PATH or --no-faces", file=sys.stderr)
        return 2
    if a.agent_detector is not None and not a.agent_detector.is_file():
        print(f"error: --agent-detector {a.agent_detector}: no such detector sidecar; pass one such as models/face_detector_door.json",
              file=sys.stderr)
        return 2
    try:
        if not a.synthetic_only:
            tr, va, info = build_crops(a.data_root, config_from_args(a), None if a.no_faces else a.face_detector,
                                       agent_detector=a.agent_detector)
            save_crops(a.out, tr, va, info)
            print(f"wrote {a.out}: train {info['train_counts']}, val {info['val_counts']}")
        if a.synthetic:
            syn, sinfo = build_synthetic(a.data_root, config_from_args(a), a.face_detector, a.synthetic,
                                         agent_detector=a.agent_detector)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.synthetic:
        empty = CropSet(syn.x[:0], syn.y[:0], syn.source[:0], syn.image[:0], syn.box_h[:0])
        save_crops(synthetic_path(a.out), syn, empty, sinfo)
        print(f"wrote {synthetic_path(a.out)}: {sinfo['counts']}")
    return 0


def synthetic_path(crops: Path) -> Path:
    """Where the synthetic crops of a crop cache live (train split only)."""
    return crops.with_name(crops.stem + ".synthetic.npz")


if __name__ == "__main__":
    sys.exit(main())
