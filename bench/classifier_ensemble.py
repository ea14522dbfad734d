"""How far do classifiers trained alike (e.g. the same recipe with other seeds) differ, and what
would averaging them give? Prints, on the val crops of a crop cache, each int8 model's recall per
class and masked faces called no_mask, their spread, and the same for the mean of their
calibrated probabilities (an ensemble: an upper bound for what distilling them into one model
could reach; it is not a shippable model, it costs one invoke per member).

    python bench/classifier_ensemble.py models/mask_classifier.tflite build/cand_models/s1/mask_classifier.tflite \
        --crops build/classifier_48/crops.npz

Models of different input sizes (e.g. the 48 px shipped model and an older 96 px one) each need
crops cut at their size: give ``--crops`` once per model, in the models' order; the caches must
hold the same val faces in the same order (``maskwatch-convert classifier-data`` with the same data and seed), which
is checked.

Inputs go through the agent's own pixel table (convert.evaluate.classifier.Int8Classifier), with
each model's normalization and temperature read from its sidecar.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from convert.data import classifier as cd  # noqa: E402
from agent.pipeline.classify import softmax  # noqa: E402
from convert.evaluate.classifier import Int8Classifier, label_metrics  # noqa: E402


def row(m: Dict[str, object]) -> Dict[str, float]:
    """Recall per class, face accuracy and masked faces called no_mask out of the card's own
    figures (:func:`convert.evaluate.classifier.label_metrics`), for one table row."""
    out = {lab: float(c["recall"]) for lab, c in m["per_class"].items() if c["n"]}
    out["face_accuracy"] = float(m["face_accuracy"])
    out["mask_called_no_mask"] = float(m["mask_called_no_mask"])
    return out


def same_faces(a: "cd.CropSet", b: "cd.CropSet") -> bool:
    """Whether two crop caches' val splits list the same faces in the same order: labels, images
    and (where both caches have them) face-box heights, so two same-label faces of one image
    listed the other way round are told apart."""
    if not (np.array_equal(a.y, b.y) and np.array_equal(a.image, b.image)):
        return False
    return a.box_h is None or b.box_h is None or np.array_equal(a.box_h, b.box_h)


def probabilities(model: Path, x: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of one int8 model (its sidecar's temperature) for uint8 crops."""
    side = json.loads(model.with_suffix(".json").read_text())
    logits = Int8Classifier(model.read_bytes()).logits_uint8(x, side["input"]["normalization"])
    return softmax(logits, float(side["output"]["temperature"]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+", help="int8 .tflite classifiers, each with its .json sidecar")
    p.add_argument("--crops", type=Path, action="append",
                   help=f"crop cache (default {cd.DEFAULT_CROPS}); once for all models or once per model, in order")
    a = p.parse_args(argv)
    paths = a.crops or [cd.DEFAULT_CROPS]
    if len(paths) not in (1, len(a.models)):
        p.error(f"--crops given {len(paths)} times for {len(a.models)} models: give it once, or once per model")
    by_path = {c: cd.load_crops(c)[1] for c in dict.fromkeys(paths)}  # each cache read once
    va = by_path[paths[0]]
    for c, v in by_path.items():
        if not same_faces(v, va):
            p.error(f"{c}: its val crops are not the same faces as {paths[0]}'s (rebuild both with the same data and seed)")
    rows: List[Dict[str, float]] = []
    probs = []
    for i, m in enumerate(a.models):
        probs.append(probabilities(m, by_path[paths[min(i, len(paths) - 1)]].x))
        rows.append(row(label_metrics(probs[-1], va.y)))
    n = {lab: int(np.sum(va.y == i)) for i, lab in enumerate(cd.LABELS)}
    keys = [*(lab for lab in cd.LABELS if n[lab]), "face_accuracy", "mask_called_no_mask"]  # classes present
    print(f"val crops: {n}")
    print(f"{'model':<48}" + "".join(f"{k[:14]:>15}" for k in keys))
    for m, r in zip(a.models, rows):
        print(f"{str(m)[-48:]:<48}" + "".join(f"{100 * r[k]:>14.1f}%" for k in keys))
    if len(rows) > 1:
        lo = {k: min(r[k] for r in rows) for k in keys}
        hi = {k: max(r[k] for r in rows) for k in keys}
        print(f"{'spread (max - min, points)':<48}" + "".join(f"{100 * (hi[k] - lo[k]):>15.1f}" for k in keys))
        ens_m = label_metrics(np.mean(probs, axis=0), va.y)
        ens = row(ens_m)
        print(f"{f'mean of the {len(rows)} probabilities':<48}" + "".join(f"{100 * ens[k]:>14.1f}%" for k in keys))
        inc = ens_m["per_class"]["incorrect_mask"]
        if not inc["n"]:
            return 0
        found = ens_m["confusion"][cd.LABELS.index("incorrect_mask")][cd.LABELS.index("incorrect_mask")]
        print(f"ensemble incorrect_mask {found}/{inc['n']} (95 % CI {100 * inc['recall_ci95'][0]:.1f}-"
              f"{100 * inc['recall_ci95'][1]:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
