"""Training data for the fine-tuned BlazeFace detector: scenes, augmentation, anchor targets.

Source: ``scenes-ilc2021`` (under ``--data-root``, default ``../shared/datasets`` from the repo
root). All three labels (``mask``, ``no_mask``, ``incorrect_mask``) are faces; boxes are the human
annotators' convention, so a model trained on them needs no ``box_adjust``.

One training example is an RGB view of a scene at the model's input size (width x height, e.g.
192x192, or 192x144 to fill a 4:3 camera frame without padding): either the whole image letterboxed with a
zoom jitter (what the agent sees at run time, faces mostly 5-40 px) or a crop that puts a chosen
face at 10-150 px. Flips swap the left/right keypoints; colour, blur, noise, low light and
down-scaling follow. Faces cut by the view edge or too small to learn become *ignore* regions.

Keypoint targets are the ORIGINAL model's keypoints for each annotated face
(:func:`original_keypoints`): the original full-range model is run once per face on a view that
puts the face at ~48 px (and on its mirror, averaged), the anchor whose decoded box overlaps the
annotated box best gives the six points, stored in image pixels. Augmentation maps them with the
same affine as the pixels. Faces the original model cannot place (no anchor box with IoU >= 0.5)
get no keypoint loss. This keeps the fine-tuned keypoints where the crop alignment (agent/pipeline/crop.py)
and the classifier expect them.

Anchor targets (:func:`match_anchors`): an anchor is positive when its centre lies in the central
half of a face box, and the anchor nearest each face centre is always positive; other anchors
inside any face box are ignored; the rest are negatives. Regression targets use the sidecar's
decoding in reverse (:func:`encode`), so ``agent.pipeline.detectors.blazeface.decode`` inverts them exactly.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.detectors import blazeface
from agent.pipeline.detect import Letterbox
from agent.pipeline.crop import warp_shrinking
from convert.data.masks import MaskTemplate, face_points, is_frontal, paste_mask
from agent.pipeline.boxes import iou_matrix

SCENES = "scenes-ilc2021"
FACE_LABELS: Tuple[str, ...] = ("mask", "no_mask", "incorrect_mask")
# Mirror image: subject's right eye <-> left eye, right ear <-> left ear (sidecar keypoint_names).
KEYPOINT_FLIP: Tuple[int, ...] = (1, 0, 2, 3, 5, 4)
NUM_KEYPOINTS = 6
# a mirrored view swaps left and right: BlazeFace's eyes and ears, YuNet's eyes and mouth corners
KEYPOINT_FLIPS: Dict[int, Tuple[int, ...]] = {6: KEYPOINT_FLIP, 5: (1, 0, 2, 4, 3)}

# Target planes of one example, concatenated on the last axis of a (N_anchors, TARGET_DIM) array.
REG_DIM = 4 + 2 * NUM_KEYPOINTS  # raw regressor targets, the model's own units
T_CLS = REG_DIM  # 1 positive, 0 negative, -1 ignored
T_SIZE = REG_DIM + 1  # face size in regressor units (loss scale)
T_KPW = REG_DIM + 2  # 1 when the keypoint targets are trusted
TARGET_DIM = REG_DIM + 3


@dataclass
class Scene:
    """One annotated image: boxes (M, 4) x1, y1, x2, y2 in pixels, labels, optional keypoints."""

    image: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: Tuple[str, ...]
    keypoints: Optional[np.ndarray] = None  # (M, K, 2) image pixels, original model's (BlazeFace 6, YuNet 5)
    keypoints_ok: Optional[np.ndarray] = None  # (M,) bool
    unlabelled: Optional[np.ndarray] = None  # (K, 4) confident original-model faces nobody boxed


def read_scenes(root: Path, split: str) -> List[Scene]:
    """Scenes of ``split`` from ``root/scenes-ilc2021`` (images.csv + boxes.csv), sorted by name.

    Raises ``FileNotFoundError`` naming the missing file and the flag that moves the data root.
    """
    base = Path(root) / SCENES
    for name in ("images.csv", "boxes.csv"):
        if not (base / name).is_file():
            raise FileNotFoundError(f"{base / name} not found; fix: pass --data-root DIR holding {SCENES}/")
    with open(base / "images.csv", newline="") as f:
        meta = {r["image"]: r for r in csv.DictReader(f) if r["split"] == split}
    faces: Dict[str, List[Tuple[List[float], str]]] = {k: [] for k in meta}
    with open(base / "boxes.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["image"] in faces:
                box = [float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
                faces[r["image"]].append((box, r["label"]))
    scenes = []
    for name in sorted(meta):
        m = meta[name]
        boxes = np.array([b for b, _ in faces[name]], np.float32).reshape(-1, 4)
        scenes.append(Scene(name, base / "images" / name, int(m["width"]), int(m["height"]), boxes,
                            tuple(lbl for _, lbl in faces[name])))
    return scenes


def load_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8; ``FileNotFoundError`` if it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def bgr_loader() -> Callable[[Scene], np.ndarray]:
    """Scene -> BGR pixels, cached (the evaluation reads each image several times)."""
    cache: Dict[str, np.ndarray] = {}

    def load(s: Scene) -> np.ndarray:
        if s.image not in cache:
            img = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"cannot read image {s.path}")
            cache[s.image] = img
        return cache[s.image]

    return load


# ----------------------------------------------------------------------------- geometry

def letterbox_matrix(width: int, height: int, out_w: int, out_h: int) -> np.ndarray:
    """2x3 affine from image pixels to a centred letterbox of ``out_w`` x ``out_h``: the agent's own
    geometry (:meth:`agent.pipeline.detect.Letterbox.fit`)."""
    lb = Letterbox.fit(width, height, out_w, out_h)
    return np.array([[lb.scale_x, 0.0, lb.pad_x], [0.0, lb.scale_y, lb.pad_y]])


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (..., 2) points with a 2x3 affine."""
    return pts @ m[:, :2].T + m[:, 2]


def transform_boxes(m: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Map (M, 4) axis-aligned boxes through an affine made of scale, translation and flips."""
    corners = apply_affine(m, boxes.reshape(-1, 2, 2))  # (M, 2, 2): two opposite corners
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).astype(np.float32)


def warp(image: np.ndarray, m: np.ndarray, size: Tuple[int, int],
         border: Tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Warp ``image`` into ``size`` (width, height) with black (or ``border``) padding, through the
    agent's shrink-then-warp (``agent.pipeline.crop.warp_shrinking``)."""
    return warp_shrinking(image, m, (int(size[0]), int(size[1])), cv2.BORDER_CONSTANT, border)


# ----------------------------------------------------------------------------- anchor targets

@dataclass(frozen=True)
class Decoding:
    """A detector sidecar's ``decoding`` block with its anchors, as training needs it."""

    decoding: Dict  # the sidecar's ``decoding`` mapping, verbatim
    anchors: np.ndarray  # (N, 4) x_center, y_center, w, h, normalized (MediaPipe anchors)
    width: int = 192
    height: int = 192

    @classmethod
    def from_sidecar(cls, meta: Dict) -> "Decoding":
        """From a detector sidecar (its ``decoding`` and ``input`` size)."""
        dec = dict(meta["decoding"])
        return cls(dec, blazeface.generate_anchors(dec["anchors"]), int(meta["input"]["width"]),
                   int(meta["input"]["height"]))

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the model input."""
        return self.width, self.height

    @property
    def scale(self) -> Tuple[float, float, float, float]:
        sx, sy, sw, sh = (float(v) for v in self.decoding.get("scale", [1, 1, 1, 1]))
        return sx, sy, sw, sh

    @property
    def centres_px(self) -> np.ndarray:
        """(N, 2) anchor centres in input pixels."""
        return self.anchors[:, :2] * np.array([self.width, self.height], np.float32)


def encode(boxes_px: np.ndarray, keypoints_px: np.ndarray, anchors: np.ndarray, dec: Decoding) -> np.ndarray:
    """Raw regressor values (M, 16) that decode to the given boxes/keypoints at the given anchors.

    The inverse of :func:`agent.pipeline.detectors.blazeface.decode`: ``x = raw / x_scale * anchor_w + anchor_x``
    (centre and keypoints), ``w = raw / w_scale * anchor_w``. Inputs in input pixels; ``anchors`` (M, 4).
    """
    nx, ny = float(dec.width), float(dec.height)
    sx, sy, sw, sh = dec.scale
    ax, ay, aw, ah = (anchors[:, i:i + 1] for i in range(4))
    cx = (boxes_px[:, 0:1] + boxes_px[:, 2:3]) / 2 / nx
    cy = (boxes_px[:, 1:2] + boxes_px[:, 3:4]) / 2 / ny
    w = (boxes_px[:, 2:3] - boxes_px[:, 0:1]) / nx
    h = (boxes_px[:, 3:4] - boxes_px[:, 1:2]) / ny
    kx = keypoints_px[:, :, 0] / nx
    ky = keypoints_px[:, :, 1] / ny
    out = np.empty((len(boxes_px), REG_DIM), np.float32)
    out[:, 0:1] = (cx - ax) / aw * sx
    out[:, 1:2] = (cy - ay) / ah * sy
    out[:, 2:3] = w / aw * sw
    out[:, 3:4] = h / ah * sh
    out[:, 4::2] = (kx - ax) / aw * sx
    out[:, 5::2] = (ky - ay) / ah * sy
    return out


def match_anchors(centres: np.ndarray, boxes: np.ndarray, ignore: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Anchor classes and assigned faces for one example.

    ``centres`` (N, 2) and ``boxes`` (M, 4) in the same pixels; ``ignore`` (M,) marks faces that
    must not be learned (cut off, too small) -- anchors inside them are ignored, never negative.
    Returns ``cls`` (N,) int8: 1 positive, 0 negative, -1 ignored, and ``face`` (N,) int: index of
    the face a positive anchor regresses (-1 elsewhere). An anchor in the central half of several
    faces goes to the face whose centre is nearest relative to its size.
    """
    n = len(centres)
    cls = np.zeros(n, np.int8)
    face = np.full(n, -1, np.int64)
    if len(boxes) == 0:
        return cls, face
    x, y = centres[:, 0:1], centres[:, 1:2]  # (N, 1)
    x1, y1, x2, y2 = (boxes[None, :, i] for i in range(4))  # (1, M)
    w, h = np.maximum(x2 - x1, 1e-6), np.maximum(y2 - y1, 1e-6)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    inside = (x >= x1) & (x <= x2) & (y >= y1) & (y <= y2)
    cls[inside.any(axis=1)] = -1
    dx, dy = np.abs(x - cx) / w, np.abs(y - cy) / h  # (N, M) offsets relative to the face size
    central = (dx <= 0.25) & (dy <= 0.25)  # the central half of the box
    # Nearest anchor to each face centre is positive even for faces smaller than the stride.
    nearest = np.argmin((x - cx) ** 2 + (y - cy) ** 2, axis=0)  # (M,)
    central[nearest, np.arange(len(boxes))] = True
    central[:, np.asarray(ignore, bool)] = False
    pos = central.any(axis=1)
    cost = np.where(central, dx * dx + dy * dy, np.inf)
    face[pos] = np.argmin(cost[pos], axis=1)
    cls[pos] = 1
    return cls, face


def make_targets(dec: Decoding, boxes: np.ndarray, keypoints: np.ndarray, keypoints_ok: np.ndarray,
                 ignore: np.ndarray) -> np.ndarray:
    """(N_anchors, TARGET_DIM) float32 targets for one example (boxes in input pixels)."""
    cls, face = match_anchors(dec.centres_px, boxes, ignore)
    t = np.zeros((len(cls), TARGET_DIM), np.float32)
    t[:, T_CLS] = cls
    t[:, T_SIZE] = 1.0
    pos = np.flatnonzero(cls == 1)
    if len(pos):
        f = face[pos]
        t[pos, :REG_DIM] = encode(boxes[f], keypoints[f], dec.anchors[pos], dec)
        size_px = np.maximum(boxes[f, 2] - boxes[f, 0], boxes[f, 3] - boxes[f, 1])
        # face size in the regressor's units (w raw value of the face's larger side)
        t[pos, T_SIZE] = np.maximum(size_px / dec.width / dec.anchors[pos, 2] * dec.scale[2], 1.0)
        t[pos, T_KPW] = keypoints_ok[f].astype(np.float32)
    return t


# ----------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class AugmentConfig:
    """How training views are drawn; stored with the training run."""

    width: int = 192  # the model input
    height: int = 192
    p_full_view: float = 0.4  # whole image letterboxed (run-time view) with zoom 1-2.5 and shift
    min_face: float = 10.0  # face-centred views: face height at the input, log-uniform
    max_face: float = 150.0
    p_flip: float = 0.5
    brightness: float = 0.25  # +- fraction of 255
    contrast: Tuple[float, float] = (0.7, 1.3)
    saturation: Tuple[float, float] = (0.6, 1.4)
    hue_deg: float = 8.0
    p_gray: float = 0.05
    p_blur: float = 0.25
    p_noise: float = 0.25
    p_low_light: float = 0.15
    p_downscale: float = 0.15  # shrink to 35-70 % and back: soft, low-resolution faces
    min_visible: float = 0.6  # a face less visible than this in the view is ignored
    min_face_px: float = 6.0  # faces smaller than this (max side) are ignored
    p_synthetic_mask: float = 0.0  # chance that an unmasked frontal face gets a pasted mask template
    p_mask_correct: float = 0.6  # of those: over nose and mouth; the rest lowered (under the nose, chin)
    p_composite: float = 0.0  # chance that a view gets 1-3 faces from faces/ blended in
    composite_face: Tuple[float, float] = (8.0, 90.0)  # their height at the input, log-uniform


def view_matrix(scene: Scene, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """2x3 affine from the scene's pixels to a training view (before any flip)."""
    vw, vh = cfg.width, cfg.height
    if len(scene.boxes) == 0 or rng.random() < cfg.p_full_view:
        m = letterbox_matrix(scene.width, scene.height, vw, vh)
        zoom = math.exp(rng.uniform(0.0, math.log(2.5)))
        # zoom about a random point of the letterbox, then shift so the view stays on the image
        px, py = rng.uniform(0, vw), rng.uniform(0, vh)
        m = np.array([[zoom, 0, px - zoom * px], [0, zoom, py - zoom * py]]) @ np.vstack([m, [0, 0, 1]])
        return m
    box = scene.boxes[rng.integers(len(scene.boxes))]
    h = max(float(box[3] - box[1]), float(box[2] - box[0]) / 0.8, 1.0)
    target = math.exp(rng.uniform(math.log(cfg.min_face), math.log(cfg.max_face)))
    s = target / h
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    # place the face centre anywhere that keeps at least its central part in view
    half = min(target / 2, vh / 2)
    tx = rng.uniform(half * 0.5, vw - half * 0.5)
    ty = rng.uniform(half * 0.5, vh - half * 0.5)
    return np.array([[s, 0, tx - s * cx], [0, s, ty - s * cy]])


def photometric(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Colour jitter, grey, blur, noise, low light and down-scaling on an RGB uint8 view."""
    x = img.astype(np.float32)
    if rng.random() < 0.8:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue_deg, cfg.hue_deg) * 256 / 360) % 256
        hsv[..., 1] *= rng.uniform(*cfg.saturation)
        x = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
        mean = x.mean()
        x = (x - mean) * rng.uniform(*cfg.contrast) + mean + rng.uniform(-1, 1) * cfg.brightness * 255
    if rng.random() < cfg.p_gray:
        x[:] = x.mean(axis=2, keepdims=True)
    if rng.random() < cfg.p_low_light:
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(1.5, 3.0) * rng.uniform(0.4, 0.9)
        x += rng.normal(0, rng.uniform(2, 8), x.shape)
    if rng.random() < cfg.p_downscale:
        f = rng.uniform(0.35, 0.7)
        small = cv2.resize(np.clip(x, 0, 255).astype(np.uint8), None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if rng.random() < cfg.p_blur:
        k = int(rng.choice([3, 5]))
        x = cv2.GaussianBlur(x, (k, k), rng.uniform(0.5, 1.5))
    if rng.random() < cfg.p_noise:
        x += rng.normal(0, rng.uniform(2, 10), x.shape)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Example:
    """One augmented view: image (H, W, 3) RGB uint8 and its faces in input pixels."""

    image: np.ndarray
    boxes: np.ndarray  # (M, 4)
    keypoints: np.ndarray  # (M, 6, 2)
    keypoints_ok: np.ndarray  # (M,) bool
    ignore: np.ndarray  # (M,) bool
    labels: Tuple[str, ...] = field(default_factory=tuple)


def flip_matrix(size: int) -> np.ndarray:
    """3x3 horizontal mirror of a ``size``-wide view (pixel centres map to pixel centres)."""
    return np.array([[-1.0, 0, size], [0, 1, 0], [0, 0, 1]])


def _faces(scene: Scene) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Tuple[str, ...]]:
    """Boxes, keypoints, keypoints_ok, ignore and labels of a scene, unlabelled faces appended.

    Web photos have background faces nobody boxed; learning them as background would teach the
    model to miss faces, so confident original-model faces with no annotation are ignore regions.
    """
    m = len(scene.boxes)
    kps = scene.keypoints if scene.keypoints is not None else np.zeros((m, NUM_KEYPOINTS, 2), np.float32)
    ok = scene.keypoints_ok if scene.keypoints_ok is not None else np.zeros(m, bool)
    extra = scene.unlabelled if scene.unlabelled is not None else np.zeros((0, 4), np.float32)
    k = len(extra)
    boxes = np.concatenate([scene.boxes.reshape(-1, 4), extra.reshape(-1, 4)]).astype(np.float32)
    kps = np.concatenate([kps, np.zeros((k, kps.shape[1], 2), np.float32)])
    ok = np.concatenate([ok, np.zeros(k, bool)])
    ignore = np.concatenate([np.zeros(m, bool), np.ones(k, bool)])
    return boxes, np.nan_to_num(kps), ok, ignore, tuple(scene.labels) + ("unlabelled",) * k


def augment(scene: Scene, image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            templates: Sequence[MaskTemplate] = (), patches: Sequence["FacePatch"] = ()) -> Example:
    """Draw one augmented training view of ``scene`` (``image`` is its RGB pixels).

    With ``templates`` and ``cfg.p_synthetic_mask`` > 0, unmasked faces may get a pasted mask
    (:func:`paste_synthetic_masks`); with ``patches`` and ``cfg.p_composite`` > 0, faces from
    ``faces/`` may be blended into free space (:func:`composite_faces`). Both happen before the
    photometric jitter, so blur, noise and colour cover them like the scene.
    """
    m = view_matrix(scene, rng, cfg)
    flip = rng.random() < cfg.p_flip
    if flip:
        m = (flip_matrix(cfg.width) @ np.vstack([m, [0, 0, 1]]))[:2]
    border = (0, 0, 0) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(0, 256, 3))
    view = warp(image, m, (cfg.width, cfg.height), border)
    boxes, kps, kps_ok, ignored, labels = _faces(scene)
    boxes = transform_boxes(m, boxes)
    kps = apply_affine(m, kps).astype(np.float32)
    if flip:
        kps = kps[:, list(KEYPOINT_FLIPS[kps.shape[1]])]
    if templates and cfg.p_synthetic_mask > 0:
        view, labels = paste_synthetic_masks(view, kps, kps_ok, labels, rng, templates, cfg)
    if patches and cfg.p_composite > 0 and rng.random() < cfg.p_composite:
        # only where the photo is, not on the letterbox padding
        area = transform_boxes(m, np.array([[0.0, 0.0, scene.width, scene.height]], np.float32))[0]
        view, added, added_labels = composite_faces(view, boxes, rng, patches, cfg, area)
        if len(added):
            n = len(added)
            boxes = np.concatenate([boxes, added]).astype(np.float32)
            kps = np.concatenate([kps, np.zeros((n, kps.shape[1], 2), np.float32)])
            kps_ok = np.concatenate([kps_ok, np.zeros(n, bool)])  # no keypoint targets for them
            ignored = np.concatenate([ignored, np.zeros(n, bool)])
            labels = tuple(labels) + added_labels
    view = photometric(view, rng, cfg)
    clipped = np.clip(boxes, 0, [cfg.width, cfg.height, cfg.width, cfg.height])
    area = lambda b: np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)  # noqa: E731
    visible = area(clipped) / np.maximum(area(boxes), 1e-6)
    big = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ignore = ignored | (visible < cfg.min_visible) | (big < cfg.min_face_px)
    keep = visible > 0
    # visible-enough faces keep their full (unclipped) box: the annotators' convention
    return Example(view, boxes[keep], kps[keep], kps_ok[keep], ignore[keep],
                   tuple(lbl for lbl, k in zip(labels, keep) if k))


# ----------------------------------------------------------------------------- synthetic masks

def shrink_templates(templates: Sequence[MaskTemplate], max_side: int = 160) -> List[MaskTemplate]:
    """Templates scaled so their longer side is ``max_side`` (anchors scaled with them).

    Views hold faces of 6-150 px; warping a 600 px template straight down to that aliases its
    edges, and the warp costs less from a small source.
    """
    out = []
    for t in templates:
        f = min(1.0, max_side / max(t.bgra.shape[:2]))
        img = cv2.resize(t.bgra, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else t.bgra
        out.append(MaskTemplate(t.name, img, t.points * f))
    return out


def paste_synthetic_masks(view: np.ndarray, kps: np.ndarray, kps_ok: np.ndarray, labels: Tuple[str, ...],
                          rng: np.random.Generator, templates: Sequence[MaskTemplate],
                          cfg: AugmentConfig) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Paste mask templates on some ``no_mask`` faces of a view (RGB); their labels become
    ``mask`` or ``incorrect_mask``.

    Only faces whose original-model keypoints are trusted, that look frontal (the templates are
    frontal) and are >= 8 px between the eyes' midpoint and the mouth get one. The face box and
    keypoint targets stay as they were: a mask does not move a face. Placement comes from
    :func:`convert.data.masks.mask_points`, the classifier's own synthetic masks; a random
    tint varies the templates' colours.
    """
    out = list(labels)
    bgr = None
    for i, lbl in enumerate(labels):
        if lbl != "no_mask" or not kps_ok[i] or rng.random() >= cfg.p_synthetic_mask:
            continue
        k = kps[i]
        right_eye, left_eye, _, mouth, _ = face_points(k)
        if not is_frontal(k) or np.hypot(*(mouth - (right_eye + left_eye) / 2)) < 8.0:
            continue
        t = templates[int(rng.integers(len(templates)))]
        if rng.random() < 0.5:  # tint: same shading, another colour
            tint = rng.uniform(0.3, 1.2, 3)
            t = MaskTemplate(t.name, np.concatenate([np.clip(t.bgra[..., :3] * tint, 0, 255).astype(np.uint8), t.bgra[..., 3:]], axis=2), t.points)
        correct = rng.random() < cfg.p_mask_correct
        placement = "correct" if correct else ("under_nose" if rng.random() < 0.7 else "chin")
        if bgr is None:
            bgr = np.ascontiguousarray(view[..., ::-1])
        bgr = paste_mask(bgr, k, t, placement, rng)
        out[i] = "mask" if correct else "incorrect_mask"
    if bgr is None:
        return view, labels
    return np.ascontiguousarray(bgr[..., ::-1]), tuple(out)


# ----------------------------------------------------------------------------- composited faces

@dataclass
class FacePatch:
    """A face photo from ``faces/`` (RGB) and its face box in the annotators' convention."""

    image: np.ndarray
    box: np.ndarray  # (4,) x1, y1, x2, y2 in the patch's pixels
    label: str  # "mask" or "no_mask" (the folder's)


def face_patches(root: Path, finder: Any, folders: Dict[str, str], per_folder: int, seed: int,
                 log: Callable[[str], None] = print) -> List[FacePatch]:
    """Up to ``per_folder`` seeded picks of each ``faces/<folder>`` ({folder: label}) whose face
    ``finder`` (``convert.data.classifier.FaceFinder``, box convention fitted) locates, >= 40 px."""
    rng = np.random.default_rng(seed)
    out: List[FacePatch] = []
    for folder, label in folders.items():
        files = sorted((Path(root) / "faces" / folder).glob("*.jpg"))
        if not files:
            raise FileNotFoundError(f"{Path(root) / 'faces' / folder}: no face images; pass --data-root DIR"
                                    " holding faces/, or --composite 0")
        got = 0
        for k in rng.permutation(len(files)):
            if got >= per_folder:
                break
            bgr = cv2.imread(str(files[int(k)]))
            found = finder.detect(bgr) if bgr is not None else None
            if found is None:
                continue
            box = np.asarray(found[0], np.float32)
            if min(box[2] - box[0], box[3] - box[1]) < 40:
                continue
            out.append(FacePatch(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), box, label))
            got += 1
        log(f"faces/{folder}: {got} faces to composite")
    return out


def composite_faces(view: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                    patches: Sequence[FacePatch], cfg: AugmentConfig,
                    area: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    """Blend 1-3 face patches into free space of an RGB view; (view, their boxes (n, 4), labels).

    Each face is scaled to a log-uniform height (``cfg.composite_face``), placed wholly inside the
    view and inside ``area`` (x1, y1, x2, y2: where the photo is), away from every existing box (faces and ignore regions alike), and blended through a
    feathered ellipse a little larger than its box (head, not the photo's rectangle), its
    brightness pulled toward the spot it lands on.
    """
    vh, vw = view.shape[:2]
    ax1, ay1, ax2, ay2 = np.clip(area if area is not None else [0, 0, vw, vh], 0, [vw, vh, vw, vh])
    out = view.astype(np.float32)
    taken = [b for b in np.asarray(boxes, np.float32).reshape(-1, 4)]
    added: List[np.ndarray] = []
    labels: List[str] = []
    for _ in range(int(rng.integers(1, 4))):
        p = patches[int(rng.integers(len(patches)))]
        lo, hi = cfg.composite_face
        target = math.exp(rng.uniform(math.log(lo), math.log(min(hi, 0.8 * vh))))
        s = target / float(p.box[3] - p.box[1])
        small = cv2.resize(p.image, (max(1, round(p.image.shape[1] * s)), max(1, round(p.image.shape[0] * s))),
                           interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        fx, fy = small.shape[1] / p.image.shape[1], small.shape[0] / p.image.shape[0]
        box = p.box * np.array([fx, fy, fx, fy], np.float32)
        if rng.random() < 0.5:  # mirror the photo and its box
            small = np.ascontiguousarray(small[:, ::-1])
            box = np.array([small.shape[1] - box[2], box[1], small.shape[1] - box[0], box[3]], np.float32)
        w, h = box[2] - box[0], box[3] - box[1]
        halo = 0.35  # the blended ellipse and its feathering reach this far beyond the box
        if (1 + 2 * halo) * w >= ax2 - ax1 or (1 + 2 * halo) * h >= ay2 - ay1:
            continue
        # top-left of the patch in the view so that the face and its halo lie inside the photo's area
        ox = rng.uniform(ax1 - box[0] + halo * w, ax2 - box[2] - halo * w)
        oy = rng.uniform(ay1 - box[1] + halo * h, ay2 - box[3] - halo * h)
        nb = box + np.array([ox, oy, ox, oy], np.float32)
        grown = nb + np.array([-halo * w, -halo * h, halo * w, halo * h], np.float32)
        if taken and iou_matrix(grown[None], np.asarray(taken)).max() > 0:
            continue
        # the patch's pixels through a feathered ellipse, in view coordinates
        m = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]])
        warped = cv2.warpAffine(small, m, (vw, vh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        inside = cv2.warpAffine(np.full(small.shape[:2], 255, np.uint8), m, (vw, vh), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        alpha = np.zeros((vh, vw), np.float32)
        centre = (float((nb[0] + nb[2]) / 2), float((nb[1] + nb[3]) / 2 - 0.05 * h))
        axes = (float(0.5 * w * rng.uniform(1.1, 1.3)), float(0.5 * h * rng.uniform(1.2, 1.4)))
        cv2.ellipse(alpha, (centre, (2 * axes[0], 2 * axes[1]), 0.0), 1.0, -1, cv2.LINE_AA)
        k = 2 * int(max(1.0, 0.08 * h)) + 1
        alpha = cv2.GaussianBlur(alpha, (k, k), 0) * (inside.astype(np.float32) / 255.0)
        x1, y1, x2, y2 = (int(v) for v in np.clip(nb, 0, [vw - 1, vh - 1, vw, vh]))
        here, there = out[y1:y2, x1:x2].mean(), warped[y1:y2, x1:x2].astype(np.float32).mean()
        gain = float(np.clip((0.5 * here + 0.5 * there) / max(there, 1.0), 0.6, 1.4))
        a = alpha[..., None]
        out = out * (1 - a) + np.clip(warped.astype(np.float32) * gain, 0, 255) * a
        taken.append(nb)
        added.append(nb)
        labels.append(p.label)
    return (np.clip(out + 0.5, 0, 255).astype(np.uint8), np.asarray(added, np.float32).reshape(-1, 4), tuple(labels))


def letterbox_example(scene: Scene, image: np.ndarray, size: Tuple[int, int] = (192, 192)) -> Example:
    """The run-time view of a scene at ``size`` (width, height): centred letterbox, black padding,
    unaugmented."""
    m = letterbox_matrix(scene.width, scene.height, *size)
    boxes = transform_boxes(m, scene.boxes) if len(scene.boxes) else np.zeros((0, 4), np.float32)
    kps = scene.keypoints if scene.keypoints is not None else np.zeros((len(boxes), NUM_KEYPOINTS, 2), np.float32)
    kps_ok = scene.keypoints_ok if scene.keypoints_ok is not None else np.zeros(len(boxes), bool)
    return Example(warp(image, m, size), boxes, apply_affine(m, kps).astype(np.float32), kps_ok,
                   np.zeros(len(boxes), bool), scene.labels)


# ----------------------------------------------------------------------------- original keypoints

RawDetector = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]
"""(H, W, 3) RGB uint8 view -> (raw regressors (N, 16), score logits (N,)) of one model call."""


def original_keypoints(detect: RawDetector, dec: Decoding, image: np.ndarray, box: np.ndarray,
                       face_px: float = 48.0, min_iou: float = 0.5,
                       adjust: Optional[Dict[str, float]] = None) -> Tuple[np.ndarray, float, float]:
    """The original model's six keypoints for one annotated face, in image pixels.

    The face is put at ``face_px`` (height) in the centre of a view, on the image and on its
    mirror; in each, among anchors whose decoded box (mapped by the sidecar's ``box_adjust`` to
    the annotators' convention) has IoU >= ``min_iou`` with the annotated box, the best-scored one
    gives the keypoints. Returns (keypoints (6, 2), best IoU, score logit); keypoints are NaN when
    neither view has such an anchor.
    """
    vw, vh = dec.size
    adjust = adjust or {"dx": 0.0, "dy": 0.0, "sw": 1.0, "sh": 1.0}
    s = face_px / max(float(box[3] - box[1]), 1.0)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    m = np.array([[s, 0, vw / 2 - s * cx], [0, s, vh / 2 - s * cy]])
    found, best_iou, best_logit = [], 0.0, -np.inf
    for flip in (False, True):
        mm = (flip_matrix(vw) @ np.vstack([m, [0, 0, 1]]))[:2] if flip else m
        view = warp(image, mm, dec.size)
        reg, logits = detect(view)
        boxes, _, kps = blazeface.decode(reg, logits, dec.anchors, dec.decoding)
        boxes, kps = boxes * np.array([vw, vh, vw, vh]), kps * np.array([vw, vh])
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        bcx = (boxes[:, 0] + boxes[:, 2]) / 2 + adjust["dx"] * w
        bcy = (boxes[:, 1] + boxes[:, 3]) / 2 + adjust["dy"] * h
        w, h = w * adjust["sw"], h * adjust["sh"]
        adj = np.stack([bcx - w / 2, bcy - h / 2, bcx + w / 2, bcy + h / 2], axis=1)
        gt = transform_boxes(mm, box[None])
        ious = iou_matrix(adj, gt)[:, 0]
        cand = np.flatnonzero(ious >= min_iou)
        if len(cand) == 0:
            continue
        i = cand[np.argmax(logits[cand])]
        best_iou, best_logit = max(best_iou, float(ious[i])), max(best_logit, float(logits[i]))
        pts = kps[i][list(KEYPOINT_FLIP)] if flip else kps[i]
        inv = cv2.invertAffineTransform(mm)
        found.append(apply_affine(inv, pts))
    if not found:
        return np.full((NUM_KEYPOINTS, 2), np.nan, np.float32), best_iou, best_logit
    return np.mean(found, axis=0).astype(np.float32), best_iou, best_logit


def batch(examples: Sequence[Example], dec: Decoding) -> Tuple[np.ndarray, np.ndarray]:
    """Stack examples into (B, H, W, 3) uint8 images and (B, N, TARGET_DIM) float32 targets."""
    images = np.stack([e.image for e in examples])
    targets = np.stack([make_targets(dec, e.boxes, e.keypoints, e.keypoints_ok, e.ignore) for e in examples])
    return images, targets


def tflite_raw_detector(path: Path, mean: float = 127.5, std: float = 127.5, threads: int = 1) -> RawDetector:
    """A float-input TFLite detector file (e.g. the original MediaPipe model) as a RawDetector.

    Outputs are found by shape: (1, N, 16) regressors, (1, N, 1) score logits.
    """
    from convert.litert import TfliteRunner  # noqa: PLC0415 - only the labelling step needs it

    runner = TfliteRunner(Path(path).read_bytes(), threads)
    if np.dtype(runner.inp["dtype"]) != np.float32:
        raise ValueError(f"{path}: expected a float-input model, got {np.dtype(runner.inp['dtype'])}")

    def run(view: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        outs = {shape[-1]: v for shape, v in runner(((view.astype(np.float32) - mean) / std)[None]).items()}
        return outs[REG_DIM][0], outs[1][0, :, 0]

    return run


def unlabelled_faces(detect: RawDetector, dec: Decoding, scene: Scene, image: np.ndarray,
                     min_score: float = 0.8, adjust: Optional[Dict[str, float]] = None) -> np.ndarray:
    """Confident original-model faces on the letterboxed scene that match no annotated face.

    Returns (K, 4) boxes in image pixels (greedy NMS at IoU 0.3; any overlap with an annotated
    face, IoU >= 0.1, disqualifies a box).
    """
    adjust = adjust or {"dx": 0.0, "dy": 0.0, "sw": 1.0, "sh": 1.0}
    m = letterbox_matrix(scene.width, scene.height, dec.width, dec.height)
    reg, logits = detect(warp(image, m, dec.size))
    boxes, scores, _ = blazeface.decode(reg, logits, dec.anchors, dec.decoding)
    keep = np.flatnonzero(scores >= min_score)
    keep = keep[np.argsort(-scores[keep])]
    boxes = boxes[keep] * np.array([dec.width, dec.height, dec.width, dec.height])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + adjust["dx"] * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + adjust["dy"] * h
    w, h = w * adjust["sw"], h * adjust["sh"]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    inv = cv2.invertAffineTransform(m)
    boxes = transform_boxes(inv, boxes) if len(boxes) else np.zeros((0, 4), np.float32)
    out: List[np.ndarray] = []
    for b in boxes:
        if len(scene.boxes) and iou_matrix(b[None], scene.boxes).max() >= 0.1:
            continue
        if out and iou_matrix(b[None], np.array(out)).max() > 0.3:
            continue
        out.append(b)
    return np.array(out, np.float32).reshape(-1, 4)


def label_scenes(scenes: Sequence[Scene], images: Sequence[np.ndarray], detect: RawDetector, dec: Decoding,
                 adjust: Optional[Dict[str, float]] = None, log: Callable[[str], None] = print) -> Dict[str, float]:
    """Fill each scene's ``keypoints``, ``keypoints_ok`` and ``unlabelled`` from the original model.

    Returns a summary: faces, faces with keypoints, unlabelled faces found.
    """
    n = ok = extra = 0
    for i, (scene, image) in enumerate(zip(scenes, images)):
        kps = np.full((len(scene.boxes), NUM_KEYPOINTS, 2), np.nan, np.float32)
        for j, box in enumerate(scene.boxes):
            kps[j] = original_keypoints(detect, dec, image, box, adjust=adjust)[0]
        scene.keypoints = kps
        scene.keypoints_ok = np.isfinite(kps).all(axis=(1, 2))
        scene.unlabelled = unlabelled_faces(detect, dec, scene, image, adjust=adjust)
        n += len(scene.boxes)
        ok += int(scene.keypoints_ok.sum())
        extra += len(scene.unlabelled)
        if (i + 1) % 200 == 0:
            log(f"labelled {i + 1}/{len(scenes)} images: {ok}/{n} faces with keypoints, {extra} unlabelled faces")
    return {"faces": n, "faces_with_keypoints": ok, "unlabelled_faces": extra}


def save_labels(path: Path, scenes: Sequence[Scene]) -> None:
    """Cache the labelling (keypoints, unlabelled faces) of scenes in one .npz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: Dict[str, np.ndarray] = {}
    for s in scenes:
        arrays[f"{s.image}/kp"] = s.keypoints
        arrays[f"{s.image}/extra"] = s.unlabelled
    np.savez_compressed(path, **arrays)


def load_labels(path: Path, scenes: Sequence[Scene]) -> bool:
    """Fill scenes from a cache made by :func:`save_labels`; False if it lacks any scene."""
    if not path.is_file():
        return False
    with np.load(path) as z:
        if not all(f"{s.image}/kp" in z.files for s in scenes):
            return False
        for s in scenes:
            s.keypoints = z[f"{s.image}/kp"]
            s.keypoints_ok = np.isfinite(s.keypoints).all(axis=(1, 2))
            s.unlabelled = z[f"{s.image}/extra"]
    return True
