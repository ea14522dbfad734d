"""How far apart two annotators' boxes of the same face are, on scenes-ilc2021's photos stored twice.

Not a test: prints figures. Some photos of the set are the same picture stored twice (a re-encode
or a resize), and each copy was boxed on its own: their faces show how well one human box meets
another, the scale against which a detector's recall at IoU >= 0.5 can be read (the detector
issue asks 95 %). Pairs are found over both splits by the correlation of 24x24 grey thumbnails
(> ``--coarse``), then kept when the second photo, resized onto the first, correlates > ``--fine``
at 128x128 and has the same aspect; the second copy's boxes are scaled onto the first, and each
face of the first copy >= ``--min-height`` px tall is paired with the box it overlaps most
(IoU > 0.1). Label disagreements are listed by image, to be looked at: a pair can also be two
frames of one video, where a mask really was put on. Pairs with one photo in train and one in
val are listed too: the set's split keeps near-duplicates together, but not these, so the val
figures of a model trained on train carry them (``maskwatch evaluate`` can be run without them).

    python bench/annotator_agreement.py [--data-root ../shared/datasets] [--min-height 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.pipeline.boxes import iou_matrix  # noqa: E402
from agent.tools.scoring import wilson  # noqa: E402
from convert.data.detector import Scene, read_scenes  # noqa: E402
from convert.paths import DEFAULT_DATA_ROOT  # noqa: E402

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def thumbnail(path: Path, side: int) -> np.ndarray:
    """Grey ``side`` x ``side`` thumbnail, zero mean and unit norm (a dot product is a correlation)."""
    g = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (side, side), interpolation=cv2.INTER_AREA)
    f = g.astype(np.float64).ravel()
    f -= f.mean()
    return f / (np.linalg.norm(f) + 1e-9)


def same_picture(a: Scene, b: Scene, fine: float) -> bool:
    """``b`` resized onto ``a`` correlates above ``fine`` at 128x128, with the same aspect (2 %)."""
    if abs(a.width / a.height - b.width / b.height) > 0.02 * a.width / a.height:
        return False
    ga = cv2.imread(str(a.path), cv2.IMREAD_GRAYSCALE)
    gb = cv2.resize(cv2.imread(str(b.path), cv2.IMREAD_GRAYSCALE), (ga.shape[1], ga.shape[0]), interpolation=cv2.INTER_AREA)
    fa, fb = (cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float64).ravel() for g in (ga, gb))
    return float(np.corrcoef(fa, fb)[0, 1]) > fine


def duplicate_pairs(scenes: Sequence[Scene], coarse: float, fine: float) -> List[Tuple[Scene, Scene]]:
    """Pairs (a, b) of ``scenes`` that are the same picture, a before b in the given order."""
    if len(scenes) < 2:
        return []
    t = np.stack([thumbnail(s.path, 24) for s in scenes])
    sim = t @ t.T
    return [(scenes[i], scenes[j]) for i, j in zip(*np.nonzero(np.triu(sim, 1) > coarse))
            if same_picture(scenes[i], scenes[j], fine)]


def face_pairs(a: Scene, b: Scene, min_height: float) -> List[Tuple[float, str, str]]:
    """(IoU, label in a, label in b) for each face of ``a`` >= ``min_height`` px and its best box in ``b``."""
    if not len(a.boxes) or not len(b.boxes):
        return []
    s = np.array([a.width / b.width, a.height / b.height] * 2)
    ious = iou_matrix(a.boxes, b.boxes * s)
    out = []
    for i, box in enumerate(a.boxes):
        j = int(ious[i].argmax())
        if box[3] - box[1] >= min_height and ious[i, j] > 0.1:
            out.append((float(ious[i, j]), a.labels[i], b.labels[j]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--min-height", type=float, default=40.0, help="faces at least this tall (px) in the first copy")
    p.add_argument("--coarse", type=float, default=0.97, help="24x24 thumbnail correlation that makes a candidate pair")
    p.add_argument("--fine", type=float, default=0.95, help="128x128 correlation that confirms it")
    a = p.parse_args(argv)
    try:
        splits = {s: read_scenes(a.data_root, s) for s in ("train", "val")}
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scenes = splits["train"] + splits["val"]
    split_of = {s.image: name for name, group in splits.items() for s in group}
    rows, disagree, counts, crossing = [], [], {}, []
    for x, y in duplicate_pairs(scenes, a.coarse, a.fine):
        kind = "-".join(sorted({split_of[x.image], split_of[y.image]}))
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "train-val":
            crossing.append((x, y))
        for v, la, lb in face_pairs(x, y, a.min_height):
            rows.append(v)
            if la != lb:
                disagree.append(f"{x.image} {la} / {y.image} {lb} (IoU {v:.2f})")
    n = len(rows)
    print(f"scenes-ilc2021 photos stored twice: {counts.get('train', 0)} pairs within train, {counts.get('val', 0)} within val, "
          f"{counts.get('train-val', 0)} across the split; {n} faces >= {a.min_height:g} px boxed in both copies")
    if crossing:
        val_side = sorted({s.image for pair in crossing for s in pair if split_of[s.image] == "val"})
        print(f"val photos also stored in train ({len(val_side)}): {' '.join(val_side)}")
    if not n:
        return 0
    v = np.array(rows)
    print("| second box meets the first at IoU >= | faces | share (95 % interval) |")
    print("|---|---|---|")
    for t in THRESHOLDS:
        k = int((v >= t).sum())
        lo, hi = wilson(k, n)
        print(f"| {t:g} | {k}/{n} | {100 * k / n:.1f} % ({100 * lo:.1f}-{100 * hi:.1f}) |")
    print(f"median IoU {statistics.median(rows):.3f}; labels differ on {len(disagree)} of {n} faces:")
    for line in disagree:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
