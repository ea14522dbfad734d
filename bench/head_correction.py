"""Experiment for issue #3: a per-channel linear correction of the int8 detector's box regressors,
folded into its float heads, against the plain conversion. Not a test, not wired into convert/:
it prints figures.

`maskwatch-convert face-detector` converts the original short-range BlazeFace with a float32
regressor head on an int8 body. The body's quantization bends the head's inputs so that the int8
model's raw box outputs drift from the float model's, for large faces by several pixels (boxes
3-10 % too large), which costs the IoU >= 0.9 parity. Here, on the calibration images (train
split, the same seeded 300 as the conversion, 1 in 4 kept for int8 ranges as the conversion's
``trim_quantile`` 0.25 keeps), each regressor channel of each head gets ``float ~= a * int8 + b``
fitted by least squares on the anchors the float model scores >= 0.3; ``a`` and ``b`` are folded
into that head convolution's kernel and bias (the body, and so its calibration, is unchanged);
the model is converted again and both int8 models are compared with the ORIGINAL float model on
the val split (convert.parity.detector_parity). Needs the `convert` extra, the Keras rebuild
(`maskwatch-convert blazeface`) and ../shared/datasets. ~1.5 min.

    TF_ENABLE_ONEDNN_OPTS=0 python bench/head_correction.py [--min-score 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# Short range: its two regressor heads in anchor order (first anchor, end, anchors per cell).
HEADS: Tuple[Tuple[str, int, int, int], ...] = (("regressor_8", 0, 512, 2), ("regressor_16", 512, 896, 6))


def fit_linear(f: np.ndarray, q: np.ndarray) -> Tuple[float, float]:
    """(a, b) minimizing |f - (a q + b)|^2."""
    (a, b), *_ = np.linalg.lstsq(np.c_[q, np.ones_like(q)], f, rcond=None)
    return float(a), float(b)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-score", type=float, default=0.3, help="anchors the float model scores at least this fit the correction")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from agent import blazeface
    from convert.blazeface_keras import load_keras
    from convert.face_detector import read_split, scene_inputs
    from convert.parity import TfliteRunner, _keras_outputs, detector_outputs, detector_parity
    from convert.quantize import quantize_int8

    dec = json.loads((REPO / "models" / "face_detector_short.json").read_text())["decoding"]
    keras_path = sorted((REPO / "build" / "keras").glob("*short*.keras"))[0]
    model, original = load_keras(keras_path), load_keras(keras_path)
    scenes = REPO.parent / "shared" / "datasets" / "scenes-ilc2021"
    train, val = read_split(scenes, "train"), read_split(scenes, "val")
    rng = np.random.default_rng(0)  # the conversion's own pick
    calib = [train[i] for i in sorted(rng.choice(len(train), 300, replace=False))]
    all_xs = list(scene_inputs(calib, 128))
    peaks = np.array([[float(np.abs(np.asarray(o)).max()) for o in model(x, training=False)] for x in all_xs])
    xs = [x for x, k in zip(all_xs, np.all(peaks <= np.quantile(peaks, 0.25, axis=0), axis=1)) if k]
    heads = ["regressors", "scores"]
    plain = quantize_int8(model, xs, float_outputs=heads)
    run = TfliteRunner(plain)
    idx: List[np.ndarray] = []
    f_raw: List[np.ndarray] = []
    q_raw: List[np.ndarray] = []
    for x in all_xs:
        rb_f, rs_f = detector_outputs(dec, {tuple(o.shape): o for o in _keras_outputs(model, x)})
        rb_q, _ = detector_outputs(dec, run(x))
        hot = np.flatnonzero(blazeface.sigmoid_scores(rs_f, dec) >= a.min_score)
        idx.append(hot)
        f_raw.append(rb_f[hot])
        q_raw.append(rb_q[hot])
    anchor, fr, qr = np.concatenate(idx), np.concatenate(f_raw), np.concatenate(q_raw)
    print(f"{len(anchor)} anchors scored >= {a.min_score} on {len(all_xs)} calibration images ({len(xs)} set the int8 ranges)")
    print("head           ch  anchors      a       b   |f-q| before  after")
    for name, lo, hi, per_cell in HEADS:
        sel = (anchor >= lo) & (anchor < hi)
        conv = model.get_layer(name)
        w, b = conv.get_weights()
        for c in range(fr.shape[1]):
            ca, cb = fit_linear(fr[sel, c], qr[sel, c])
            if c < 4:
                before = np.abs(fr[sel, c] - qr[sel, c]).mean()
                after = np.abs(fr[sel, c] - (ca * qr[sel, c] + cb)).mean()
                print(f"{name:<14}{'xywh'[c]:>3}{int(sel.sum()):>9}{ca:>8.3f}{cb:>8.2f}{before:>14.2f}{after:>7.2f}")
            for s in range(per_cell):  # the same channel of every anchor of a cell
                w[..., s * 16 + c] *= ca
                b[s * 16 + c] = ca * b[s * 16 + c] + cb
        conv.set_weights([w, b])
    corrected = quantize_int8(model, xs, float_outputs=heads)
    val_x = list(scene_inputs(val, 128))
    print("\nint8 vs the original float model, val split, score >= 0.5")
    print("model       kept@0.9  kept@0.5  raw box err px  kept@0.9 by height at the input")
    for label, flat in (("plain", plain), ("corrected", corrected)):
        r = detector_parity(original, flat, val_x, dec)
        print(f"{label:<12}{r['kept_fraction']:>8.1%}{r['kept_fraction_iou50']:>10.1%}{r['raw_box_abs_err_mean_px']:>16.2f}  {r['kept_by_height_px']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
