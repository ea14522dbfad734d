"""``maskwatch explain IMAGE...``: per face, which regions of the crop the classifier's label rests on.

Occlusion sensitivity (Zeiler & Fergus 2014): a grey square is slid over the exact crop the
classifier sees (``agent.pipeline.crop.crop_face`` with the classifier's ``CropSpec``); every occluded crop is
classified through the agent's own int8 path (``MaskClassifier.prepare`` / ``probabilities``, in
batches). Two maps of the crop's shape come out:

* **drop**: per pixel, how much hiding it lowers the probability of the face's label, averaged over
  the patches that cover the pixel (negative where hiding it makes the label *more* likely);
* **flip**: per pixel, the label most of the patches covering it lead to, where that is another label
  than the face's (-1 elsewhere).

Two regions summarise a map (``--json`` fields ``nose_mouth`` and ``framing``): the share of the
total sensitivity (the positive part of **drop**) that falls

* inside the **nose-and-mouth box**: the box spanning the detector's nose-tip and mouth keypoints (mouth centre or corners)
  keypoints (mapped into the crop with ``agent.pipeline.crop.crop_matrix``), widened by 15 % of the crop side
  to the left and right (mouth corners, cheeks) and by 12.5 % above the nose tip and below the mouth
  centre (nose bridge, chin): where a mask is, or is not;
* in the **framing border**: the band along the crop's edges as wide as the margin the crop adds
  around the face box (``(1 - 1 / crop.scale) / 2`` of the side, 7 px of a 64 px crop at scale 1.3).

A model that decides on the face puts much more than the region's share of the area into the
nose-and-mouth box and little into the border. One PNG per face shows the crop and the map.
Exit codes: 0 all inputs read and all PNGs written; 1 some input unreadable or some PNG not written
(an existing file without ``--force``); 2 usage, config or model errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import cv2
import numpy as np

from agent.assemble import load_models
from agent.config import load_config
from agent.errors import EXIT_OK, EXIT_SOME_FAILED, UsageError
from agent.pipeline.classify import MaskClassifier, pick_label
from agent.pipeline.crop import CropSpec, crop_face, crop_matrix
from agent.pipeline.detect import clip_box
from agent.draw import LABEL_COLORS, label_color, put_text
from agent.pipeline.source import SourceCounters, normalize_image, read_image
from agent.tools.detect import inputs
from agent.types import Face

GREY = (128, 128, 128)  # BGR; normalizes to ~0, the model's "no information" input
# A quarter of the crop side (16 px of a 64 px crop): smaller squares cannot hide a mask or a mouth,
# so a confident model barely moves and the map is noise. 1/16 steps: every pixel under up to 16.
DEFAULT_PATCH = 0.25
DEFAULT_STRIDE = 0.0625
NOSE_MOUTH_PAD_X = 0.15  # of the crop side, left and right of the nose / mouth keypoints
NOSE_MOUTH_PAD_Y = 0.125  # above the nose tip, below the mouth centre
# Keypoints that mark the nose and the mouth, by the names detector families give them (YuNet:
# nose tip and both mouth corners; BlazeFace: nose tip and mouth centre), with their tags.
NOSE_MOUTH_KEYPOINTS = {"nose_tip": "N", "mouth_center": "M", "right_mouth_corner": "M", "left_mouth_corner": "M"}


def nose_mouth_indices(names: Sequence[str], count: int) -> List[Tuple[int, str]]:
    """(index, tag) of the nose and mouth keypoints among ``count`` points named ``names``; empty
    unless both the nose and at least one mouth point are there."""
    found = [(i, NOSE_MOUTH_KEYPOINTS[n]) for i, n in enumerate(names) if n in NOSE_MOUTH_KEYPOINTS and i < count]
    tags = {t for _, t in found}
    return found if tags == {"N", "M"} else []
PANEL = 256  # px, side of each upscaled crop in the PNG
FAINT = 0.05  # a map whose largest drop in probability is below this is mostly noise


class OcclusionMaps(NamedTuple):
    """Per-pixel results of :func:`occlusion_map`, both (H, W) like the crop."""

    drop: np.ndarray  # float32: label probability lost when the pixel is hidden (mean over covering patches)
    flip: np.ndarray  # int16: label index hiding the pixel leads to, where not the face's label; -1 elsewhere


# --- the core: occlusion sensitivity of one crop ----------------------------------------------


def patch_starts(size: int, patch: int, stride: int) -> List[int]:
    """Patch offsets along one side: every ``stride`` px, plus a last one flush with the edge."""
    if not 1 <= patch <= size or stride < 1:
        raise ValueError(f"patch {patch} px and stride {stride} px do not fit a {size} px crop")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def occlusion_map(classifier: MaskClassifier, crop: np.ndarray, label_index: int, patch: int, stride: int,
                  fill: Optional[Tuple[int, int, int]] = GREY, batch: int = 256) -> OcclusionMaps:
    """Occlusion sensitivity of a (H, W, 3) uint8 BGR crop for the label ``label_index``.

    A ``patch`` x ``patch`` square of ``fill`` (BGR; None: the crop's mean colour) is placed every
    ``stride`` px; all occluded crops go through the classifier's own int8 path in batches of
    ``batch`` (the last one padded so the interpreter is not reallocated), and each occluded crop's
    label is picked with the configured thresholds, as the agent does.
    """
    h, w = crop.shape[:2]
    ys, xs = patch_starts(h, patch, stride), patch_starts(w, patch, stride)
    colour = np.asarray(crop.reshape(-1, 3).mean(axis=0).round() if fill is None else fill, np.uint8)
    base = classifier.probabilities(classifier.prepare(crop[None]))[0, label_index]
    spots = [(y, x) for y in ys for x in xs]
    probs = np.empty((len(spots), len(classifier.labels)), np.float32)
    size = min(batch, len(spots))
    for start in range(0, len(spots), size):
        chunk = np.repeat(crop[None], size, axis=0)
        for i, (y, x) in enumerate(spots[start : start + size]):
            chunk[i, y : y + patch, x : x + patch] = colour
        out = classifier.probabilities(classifier.prepare(chunk))
        n = min(size, len(spots) - start)
        probs[start : start + n] = out[:n]
    drop = np.zeros((h, w), np.float64)
    votes = np.zeros((len(classifier.labels), h, w), np.int32)
    for (y, x), p in zip(spots, probs):
        drop[y : y + patch, x : x + patch] += base - p[label_index]
        votes[pick_label(p, classifier.labels, classifier.cfg.thresholds), y : y + patch, x : x + patch] += 1
    covered = votes.sum(axis=0)
    drop /= np.maximum(covered, 1)  # a stride wider than the patch leaves pixels uncovered: drop 0
    winner = votes.argmax(axis=0)  # ties go to the lower index: stable, no noise
    flip = np.where((winner == label_index) | (covered == 0), -1, winner).astype(np.int16)
    return OcclusionMaps(drop.astype(np.float32), flip)


# --- regions and figures ----------------------------------------------------------------------


def crop_keypoints(face: Face, spec: CropSpec) -> Optional[np.ndarray]:
    """The face's keypoints in crop pixels (K, 2), or None when the detector gave none."""
    if face.keypoints is None or len(face.keypoints) == 0:
        return None
    m = crop_matrix(face.box, face.keypoints, spec)
    return np.asarray(face.keypoints, np.float64) @ m[:, :2].T + m[:, 2]


def nose_mouth_box(points: Optional[np.ndarray], names: Sequence[str], width: int,
                   height: int) -> Optional[Tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) in crop pixels, end exclusive, of the nose-and-mouth box (module docstring);
    None when the detector does not name nose and mouth keypoints."""
    idx = [i for i, _ in nose_mouth_indices(names, 0 if points is None else len(points))]
    if not idx:
        return None
    pts = np.asarray(points, np.float64)[idx]
    if not np.isfinite(pts).all():
        return None
    px, py = NOSE_MOUTH_PAD_X * width, NOSE_MOUTH_PAD_Y * height
    x1, y1 = pts.min(axis=0) - (px, py)
    x2, y2 = pts.max(axis=0) + (px, py)
    box = (max(0, int(round(x1))), max(0, int(round(y1))), min(width, int(round(x2))), min(height, int(round(y2))))
    return box if box[2] > box[0] and box[3] > box[1] else None


def border_width(spec: CropSpec) -> int:
    """Width in px of the framing border: the margin the crop adds around the face box."""
    return max(1, int(round(min(spec.width, spec.height) * (1.0 - 1.0 / max(spec.scale, 1.0)) / 2.0)))


def region_masks(shape: Tuple[int, int], nose_mouth: Optional[Tuple[int, int, int, int]],
                 border: int) -> Dict[str, np.ndarray]:
    """Boolean (H, W) masks of the named regions: ``nose_mouth`` (when known) and ``framing``."""
    h, w = shape
    framing = np.ones((h, w), bool)
    framing[border : h - border, border : w - border] = False
    out = {"framing": framing}
    if nose_mouth is not None:
        x1, y1, x2, y2 = nose_mouth
        nm = np.zeros((h, w), bool)
        nm[y1:y2, x1:x2] = True
        out["nose_mouth"] = nm
    return out


def shares(drop: np.ndarray, regions: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Per region: its share of the total sensitivity (positive drop), its share of the area, and
    their ratio ``density`` (1 = as much as an equal area anywhere; > 1 = the model looks there)."""
    sens = np.clip(drop, 0.0, None)
    total = float(sens.sum())
    out = {}
    for name, m in regions.items():
        share = float(sens[m].sum()) / total if total > 0 else 0.0
        area = float(m.mean())
        out[name] = {"share": round(share, 4), "area": round(area, 4),
                     "density": round(share / area, 3) if area > 0 else 0.0}
    return out


# --- the PNG ----------------------------------------------------------------------------------


def _mark_keypoints(img: np.ndarray, points: Optional[np.ndarray], names: Sequence[str], zoom: float) -> None:
    """Nose and mouth keypoints as ringed dots (white on black: visible on skin, mask and heat)."""
    if points is None:
        return
    for i, tag in nose_mouth_indices(names, len(points)):
        x, y = points[i] * zoom
        c = (int(round(x)), int(round(y)))
        cv2.circle(img, c, 6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.circle(img, c, 6, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.circle(img, c, 2, (255, 255, 255), -1, cv2.LINE_AA)
        put_text(img, tag, (c[0] + 9, c[1] + 5), 0.45, (0, 0, 0), 3)
        put_text(img, tag, (c[0] + 9, c[1] + 5), 0.45, (255, 255, 255), 1)


def _dashed_rect(img: np.ndarray, p1: Tuple[int, int], p2: Tuple[int, int], color: Tuple[int, int, int],
                 dash: int = 6) -> None:
    (x1, y1), (x2, y2) = p1, p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = int(max(abs(b[0] - a[0]), abs(b[1] - a[1])))
        for s in range(0, length, 2 * dash):
            t0, t1 = s / max(length, 1), min(s + dash, length) / max(length, 1)
            q0 = (int(a[0] + (b[0] - a[0]) * t0), int(a[1] + (b[1] - a[1]) * t0))
            q1 = (int(a[0] + (b[0] - a[0]) * t1), int(a[1] + (b[1] - a[1]) * t1))
            cv2.line(img, q0, q1, color, 1, cv2.LINE_AA)


@dataclass
class Explanation:
    """Everything known about one explained face: what the PNG draws and the report prints."""

    image: str
    index: int
    box: Tuple[float, float, float, float]  # frame pixels, clipped to the frame
    label: str
    score: float
    scores: Dict[str, float]
    crop: np.ndarray  # (H, W, 3) BGR uint8, the classifier's input
    maps: OcclusionMaps
    labels: List[str]
    keypoints: Optional[np.ndarray]  # crop pixels
    keypoint_names: List[str]
    nose_mouth: Optional[Tuple[int, int, int, int]]
    border: int
    regions: Dict[str, Dict[str, float]]
    patch: int
    stride: int
    fill: str  # "grey" or "mean"


def heat_scale(drop: np.ndarray) -> float:
    """The drop shown at full colour: the map's maximum, but at least :data:`FAINT` so that a model
    the occlusion barely moves shows a faint map, not amplified noise."""
    return max(float(drop.max(initial=0.0)), FAINT)


def render(ex: Explanation) -> np.ndarray:
    """The PNG: a header (label, score, image, box), the upscaled crop and, beside it, the crop with
    the sensitivity heat map, regions and flips drawn; a colour bar and a legend below."""
    faint = float(ex.maps.drop.max(initial=0.0)) < FAINT
    pad, head, foot = 10, 58, 136 + (18 if faint else 0)
    h, w = ex.crop.shape[:2]
    zoom = PANEL / max(h, w)
    pw, ph = int(round(w * zoom)), int(round(h * zoom))
    canvas = np.full((head + ph + foot, 3 * pad + 2 * pw, 3), 32, np.uint8)
    color = label_color(ex.label)
    # Header: the decision, large, in the label's colour; then where it comes from.
    title = f"face {ex.index}: {ex.label} {ex.score:.2f}" + ("  (not a face: dropped by the agent)"
                                                             if ex.label not in LABEL_COLORS else "")
    cv2.rectangle(canvas, (pad, 8), (pad + 10, 30), color, -1)
    put_text(canvas, title, (pad + 18, 27), 0.65, (255, 255, 255), 2)
    others = "  ".join(f"{k} {v:.2f}" for k, v in ex.scores.items() if k != ex.label)
    put_text(canvas, f"{Path(ex.image).name}  box {[round(v) for v in ex.box]}  {others}", (pad, 48), 0.42,
          (200, 200, 200))
    # Left: the crop as the classifier sees it; right: with the heat map.
    plain = cv2.resize(ex.crop, (pw, ph), interpolation=cv2.INTER_CUBIC)
    scale = heat_scale(ex.maps.drop)
    norm = np.clip(ex.maps.drop / scale, 0.0, 1.0)
    norm_up = cv2.resize(norm, (pw, ph), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((norm_up * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    # Opacity grows with sensitivity: the face stays readable where the map is cold.
    alpha = (0.2 + 0.65 * norm_up)[..., None]
    overlay = (plain * (1 - alpha) + heat * alpha).astype(np.uint8)
    if ex.border:
        b = int(round(ex.border * zoom))
        _dashed_rect(overlay, (b, b), (pw - 1 - b, ph - 1 - b), (200, 200, 200))
    if ex.nose_mouth is not None:
        x1, y1, x2, y2 = (int(round(v * zoom)) for v in ex.nose_mouth)
        cv2.rectangle(overlay, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), 1, cv2.LINE_AA)
    flipped = sorted({int(v) for v in np.unique(ex.maps.flip) if v >= 0})
    for k in flipped:
        region = cv2.resize((ex.maps.flip == k).astype(np.uint8), (pw, ph), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(overlay, contours, -1, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.drawContours(overlay, contours, -1, label_color(ex.labels[k]), 2, cv2.LINE_AA)
    for panel in (plain, overlay):
        _mark_keypoints(panel, ex.keypoints, ex.keypoint_names, zoom)
    canvas[head : head + ph, pad : pad + pw] = plain
    canvas[head : head + ph, 2 * pad + pw : 2 * pad + 2 * pw] = overlay
    x_right = 2 * pad + pw
    y = head + ph + 18
    put_text(canvas, f"what the classifier sees ({w}x{h} px)", (pad, y), 0.42)
    put_text(canvas, f"{'grey' if ex.fill == 'grey' else 'mean-colour'} {ex.patch}px squares hidden, every"
          f" {ex.stride}px", (x_right, y), 0.42)
    # Left: the two figures an installer checks; right: what a colour means.
    nm, fr = ex.regions.get("nose_mouth"), ex.regions["framing"]
    nm_text = f"nose+mouth box: {nm['share']:.0%} of the map" if nm else "nose+mouth: no keypoints"
    put_text(canvas, nm_text, (pad, y + 24), 0.5, (255, 255, 255), 1)
    if nm:
        put_text(canvas, f"(white box, {nm['area']:.0%} of the crop)", (pad, y + 42), 0.4, (200, 200, 200))
    put_text(canvas, f"framing border: {fr['share']:.0%} of the map", (pad, y + 64), 0.5, (255, 255, 255), 1)
    put_text(canvas, f"(dashed band, {fr['area']:.0%} of the crop)", (pad, y + 82), 0.4, (200, 200, 200))
    bar = cv2.applyColorMap(np.tile(np.linspace(0, 255, pw).astype(np.uint8), (12, 1)), cv2.COLORMAP_TURBO)
    canvas[y + 12 : y + 24, x_right : x_right + pw] = bar
    put_text(canvas, "0", (x_right, y + 40), 0.42)
    right = f"{scale:.2f}"
    (tw, _), _ = cv2.getTextSize(right, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)
    put_text(canvas, right, (x_right + pw - tw, y + 40), 0.42)
    middle = f"drop in p({ex.label})"
    (tw, _), _ = cv2.getTextSize(middle, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)
    put_text(canvas, middle, (x_right + (pw - tw) // 2, y + 40), 0.42)
    put_text(canvas, "N, M: nose tip, mouth centre", (x_right, y + 64), 0.4, (200, 200, 200))
    put_text(canvas, "(detector keypoints)", (x_right, y + 82), 0.4, (200, 200, 200))
    # Flips: which label hiding a region leads to, each name in its outline's colour.
    y += 108
    if flipped:
        x = pad
        for part, col in [("outlined: hiding there makes it ", (235, 235, 235))] + [
                (("" if i == 0 else ", ") + ex.labels[k], label_color(ex.labels[k])) for i, k in enumerate(flipped)]:
            put_text(canvas, part, (x, y), 0.45, col, 1)
            x += cv2.getTextSize(part, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0]
    else:
        put_text(canvas, f"hiding any one {ex.patch}px square leaves the label {ex.label}", (pad, y), 0.45)
    if faint:  # a near-certain label no small square can move: say so rather than let noise speak
        put_text(canvas, f"faint map: no square moves p({ex.label}) by {FAINT:.2f}; try a larger --patch (0.375)",
              (pad, y + 18), 0.45, (0, 200, 255))
    return canvas


# --- the command ------------------------------------------------------------------------------


def fraction(text: str) -> float:
    """argparse type: a fraction of the crop side in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (a fraction of the crop side, e.g. 0.25)")
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1] (a fraction of the crop side, e.g. 0.25)")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "-o", metavar="DIR", default="explain",
                        help="folder for the PNGs, <image stem>_face<k>.png (default: ./explain)")
    parser.add_argument("--patch", type=fraction, default=DEFAULT_PATCH, metavar="F",
                        help=f"side of the hidden square, as a fraction of the crop side (default {DEFAULT_PATCH}:"
                        " 16 px of a 64 px crop)")
    parser.add_argument("--stride", type=fraction, default=DEFAULT_STRIDE, metavar="F",
                        help=f"step between squares, as a fraction of the crop side (default {DEFAULT_STRIDE})")
    parser.add_argument("--fill", choices=("grey", "mean"), default="grey",
                        help="colour of the hidden square: mid grey (default) or the crop's mean colour")
    parser.add_argument("--force", action="store_true", help="overwrite PNGs that already exist")
    parser.add_argument("--json", action="store_true", help="one JSON object per face instead of a text line")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or globs")


def load_image(path: str, kind: str, max_pixels: int) -> Tuple[Optional[np.ndarray], str]:
    """(BGR image, "") or (None, why it cannot be explained), as ``maskwatch detect`` reads images."""
    if kind in ("missing", "empty-folder"):
        return None, "no such file" if kind == "missing" else "no image in folder"
    if kind == "video":
        return None, "a video: explain takes images (save a frame first)"
    if not os.path.exists(path):
        return None, "no such file"
    raw = read_image(path)
    if raw is None:
        return None, "not a readable image"
    counters = SourceCounters()
    image = normalize_image(raw, counters, max_pixels)
    if image is None:
        reason = next(iter(counters.skipped), "unusable")
        return None, f"unusable image ({reason.replace('_', ' ')})"
    return image, ""


def explain_face(classifier: MaskClassifier, keypoint_names: Sequence[str], image: np.ndarray, face: Face,
                 path: str, index: int, patch_f: float, stride_f: float,
                 fill: Optional[Tuple[int, int, int]]) -> Explanation:
    """Classify one detected face as the agent does (not_face kept) and compute its occlusion maps."""
    spec = classifier.spec
    crop = crop_face(image, face.box, face.keypoints, spec)
    probs = classifier.probabilities(classifier.prepare(crop[None]))[0]
    label_index = pick_label(probs, classifier.labels, classifier.cfg.thresholds)
    side = min(spec.width, spec.height)
    patch = max(1, int(round(patch_f * side)))
    stride = max(1, int(round(stride_f * side)))
    maps = occlusion_map(classifier, crop, label_index, patch, stride, fill)
    points = crop_keypoints(face, spec)
    nm = nose_mouth_box(points, keypoint_names, spec.width, spec.height)
    border = border_width(spec)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(v, 1) for v in clip_box(face.box, w, h))
    return Explanation(
        image=path, index=index, box=(x1, y1, x2, y2),
        label=classifier.labels[label_index], score=float(probs[label_index]),
        scores={lab: round(float(p), 4) for lab, p in zip(classifier.labels, probs)}, crop=crop, maps=maps,
        labels=list(classifier.labels), keypoints=points, keypoint_names=list(keypoint_names), nose_mouth=nm,
        border=border, regions=shares(maps.drop, region_masks(crop.shape[:2], nm, border)), patch=patch,
        stride=stride, fill="grey" if fill is not None else "mean")


def report(ex: Explanation, png: Optional[str]) -> Dict[str, Any]:
    """The JSON object for one face (also what the text line is made from)."""
    flip_area = {ex.labels[k]: round(float((ex.maps.flip == k).mean()), 4)
                 for k in sorted({int(v) for v in np.unique(ex.maps.flip) if v >= 0})}
    return {"image": ex.image, "face": ex.index, "box": list(ex.box), "label": ex.label,
            "score": round(ex.score, 4), "scores": ex.scores, "png": png,
            "nose_mouth": ex.regions.get("nose_mouth"), "framing": ex.regions["framing"],
            "max_drop": round(float(ex.maps.drop.max(initial=0.0)), 4), "flips": flip_area,
            "patch_px": ex.patch, "stride_px": ex.stride}


def text_line(obj: Dict[str, Any]) -> str:
    nm, fr = obj["nose_mouth"], obj["framing"]
    nm_text = (f"nose+mouth {nm['share']:.0%} of the sensitivity ({nm['area']:.0%} of the crop)" if nm
               else "nose+mouth: no keypoints")
    return (f"{obj['image']}: face {obj['face']} {obj['box']} {obj['label']} {obj['score']:.2f}: {nm_text},"
            f" framing {fr['share']:.0%} ({fr['area']:.0%}), largest drop {obj['max_drop']:.2f} -> {obj['png']}")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    detector, classifier = load_models(cfg)
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out_dir}: cannot create the folder ({exc.strerror})\n  fix: pass another"
                         " --out DIR") from None
    fill = None if args.fill == "mean" else GREY
    written: Set[Path] = set()
    failed = 0

    def emit(obj: Dict[str, Any], line: str) -> None:
        sys.stdout.write((json.dumps(obj) if args.json else line) + "\n")
        sys.stdout.flush()

    for path, kind in inputs(args.images):
        image, why = load_image(path, kind, cfg.source.max_pixels)
        if image is None:
            emit({"image": path, "error": why}, f"{path}: error: {why}")
            failed += 1
            continue
        faces = detector.detect(image)
        if not faces:
            emit({"image": path, "faces": 0}, f"{path}: no face")
            continue
        for k, face in enumerate(faces):
            png = out_dir / f"{Path(path).stem}_face{k}.png"
            if png in written or (png.exists() and not args.force):
                why = ("an earlier input of this run wrote it" if png in written
                       else "exists; pass --force to overwrite")
                emit({"image": path, "face": k, "error": f"{png}: {why}"}, f"{path}: face {k}: error: {png} {why}")
                failed += 1
                continue
            ex = explain_face(classifier, detector.keypoint_names, image, face, path, k, args.patch, args.stride, fill)
            ok = cv2.imwrite(str(png), render(ex))
            written.add(png)
            obj = report(ex, str(png) if ok else None)
            if not ok:
                obj["error"] = f"{png}: cannot write"
                failed += 1
            emit(obj, text_line(obj) + ("" if ok else f"  error: cannot write {png}"))
    return EXIT_SOME_FAILED if failed else EXIT_OK


__all__ = ["OcclusionMaps", "add_arguments", "border_width", "crop_keypoints", "explain_face",
           "nose_mouth_box", "occlusion_map", "patch_starts", "region_masks", "render", "run", "shares"]
