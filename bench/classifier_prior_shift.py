"""Would shifting the classifier's class priors reach #5's recall targets? Adds an offset to the
`mask` and `incorrect_mask` log-probabilities (a prior shift: what a per-class threshold does),
chooses the offsets on one half of the val crops by the targets (the smallest margin of
mask >= 97 %, incorrect_mask >= 85 %, no_mask >= 97 % recall), and scores them on the other half;
repeated over random stratified halves. Prints the mean recall per class with and without the
shift, and the offsets fitted on all of val (optimistic: chosen and scored on the same faces).

    python bench/classifier_prior_shift.py models/mask_classifier.tflite --crops build/classifier_48/crops.npz

Several models: their calibrated probabilities are averaged first (as bench/classifier_ensemble.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from classifier_ensemble import probabilities  # noqa: E402  (a sibling script: with tests/ on sys.path, tests/bench is the package "bench")
from convert.data import classifier as cd  # noqa: E402

TARGETS = np.array([0.97, 0.85, 0.97])  # recall of mask, incorrect_mask, no_mask (issue #5)


def recalls(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Recall of the three face classes (NaN where a class is absent)."""
    return np.array([(pred[y == i] == i).mean() if (y == i).any() else np.nan for i in range(3)])


def margin(r: np.ndarray) -> float:
    """Smallest distance above the targets (negative: the worst class's shortfall); absent classes skipped."""
    d = (r - TARGETS)[~np.isnan(r)]
    return float(d.min()) if d.size else 0.0


def shifted_predictions(logp: np.ndarray, grid: Sequence[Tuple[float, float]]) -> List[np.ndarray]:
    """Top-1 after adding each (mask, incorrect_mask) offset of ``grid`` to the log-probabilities."""
    out = []
    for bm, bi in grid:
        off = np.zeros(logp.shape[1])
        off[0], off[1] = bm, bi
        out.append(np.argmax(logp + off, axis=1))
    return out


def cross_fit(preds: Sequence[np.ndarray], y: np.ndarray, reps: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Held-out recalls (one row per half scored) of the offsets chosen on the other half; and of no shift."""
    rng = np.random.default_rng(seed)
    zero = preds[0]
    shifted, plain = [], []
    for _ in range(reps):
        half = np.zeros(len(y), bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            half[idx[: len(idx) // 2]] = True
        for fit, score in ((half, ~half), (~half, half)):
            best = max(range(len(preds)), key=lambda j: margin(recalls(preds[j][fit], y[fit])))
            shifted.append(recalls(preds[best][score], y[score]))
            plain.append(recalls(zero[score], y[score]))
    return np.array(shifted), np.array(plain)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+", help="int8 .tflite classifiers, each with its .json sidecar")
    p.add_argument("--crops", type=Path, default=cd.DEFAULT_CROPS)
    p.add_argument("--reps", type=int, default=200, help="random halvings of val")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    _, va, _ = cd.load_crops(a.crops)
    prob = np.mean([probabilities(m, va.x) for m in a.models], axis=0)
    logp = np.log(np.clip(prob, 1e-12, 1.0))
    # offset (0, 0) first: cross_fit's "no shift" row
    grid = [(0.0, 0.0)] + [(bm, bi) for bm in np.arange(-1.0, 1.51, 0.25) for bi in np.arange(0.0, 3.01, 0.25)
                           if (bm, bi) != (0.0, 0.0)]
    preds = shifted_predictions(logp, grid)
    names = cd.LABELS[:3]
    print(f"val faces: {dict(zip(names, (int(np.sum(va.y == i)) for i in range(3))))}; models: {', '.join(map(str, a.models))}")
    shifted, plain = cross_fit(preds, va.y, a.reps, a.seed)
    fmt = lambda r: " / ".join(f"{v * 100:.1f}" for v in r)  # noqa: E731
    print(f"recall % ({' / '.join(names)}), held-out halves, {a.reps} halvings:")
    print(f"  no shift:            {fmt(plain.mean(0))}")
    print(f"  shift chosen on the other half: {fmt(shifted.mean(0))} (sd {fmt(shifted.std(0))})")
    j = max(range(len(preds)), key=lambda k: margin(recalls(preds[k], va.y)))
    print(f"  fitted on all val (optimistic): offsets mask {grid[j][0]:+.2f}, incorrect_mask {grid[j][1]:+.2f}"
          f" -> {fmt(recalls(preds[j], va.y))}; targets {fmt(TARGETS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
