"""Issue #3: the int8 short-range detector converted plainly against the same model with its box
regressors corrected per channel in the float heads (convert/export/face_detector.py `corrected_int8`,
what `maskwatch-convert face-detector` now does), side by side. Not a test: it prints figures.

`maskwatch-convert face-detector` converts the original short-range BlazeFace with a float32
regressor head on an int8 body. The body's quantization bends the head's inputs so that the int8
model's raw box outputs drift from the float model's, for large faces by several pixels (boxes
3-10 % too large), which costs the IoU >= 0.9 parity. Here, on the calibration images (train
split, the same seeded 300 as the conversion, 1 in 4 kept for int8 ranges as the conversion's
``trim_quantile`` 0.25 keeps), each regressor channel of each head gets ``float ~= a * int8 + b``
fitted by least squares on the anchors the float model scores >= 0.3; ``a`` and ``b`` are folded
into that head convolution's kernel and bias (the body, and so its calibration, is unchanged);
the model is converted again and both int8 models are compared with the ORIGINAL float model on
the val split (convert.export.parity.detector_parity). Needs the `convert` extra, the Keras rebuild
(`maskwatch-convert blazeface`) and ../shared/datasets. ~1.5 min.

    TF_ENABLE_ONEDNN_OPTS=0 python bench/head_correction.py [--min-score 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-score", type=float, default=0.3, help="anchors the float model scores at least this fit the correction")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from convert.ports.blazeface_keras import load_keras
    from convert.export.face_detector import calibration_inputs, corrected_int8, read_split, scene_inputs
    from convert.export.parity import detector_parity
    from convert.export.quantize import quantize_int8

    dec = json.loads((REPO / "models" / "face_detector_short.json").read_text())["decoding"]
    model = load_keras(sorted((REPO / "build" / "keras").glob("*short*.keras"))[0])
    scenes = REPO.parent / "shared" / "datasets" / "scenes-ilc2021"
    train, val = read_split(scenes, "train"), read_split(scenes, "val")
    all_xs, float_outs, xs = calibration_inputs(model, train, 128)  # the conversion's own pick
    heads = ["regressors", "scores"]
    plain = quantize_int8(model, xs, float_outputs=heads)
    corrected, fit = corrected_int8(model, xs, all_xs, plain, dec, heads, min_score=a.min_score, fit_float=float_outs)
    print(f"fitted on {fit['fit_images']} calibration images ({len(xs)} set the int8 ranges), anchors scored >= {a.min_score}")
    print("head           anchors  a (x y w h)                      b (x y w h)")
    for name, h in fit["heads"].items():
        print(f"{name:<14}{h['anchors']:>8}  {' '.join(f'{v:6.3f}' for v in h['a'][:4])}   {' '.join(f'{v:6.2f}' for v in h['b'][:4])}")
    val_x = list(scene_inputs(val, 128))
    print("\nint8 vs the original float model, val split, score >= 0.5")
    print("model       kept@0.9  kept@0.5  raw box err px  kept@0.9 by height at the input")
    for label, flat in (("plain", plain), ("corrected", corrected)):
        r = detector_parity(model, flat, val_x, dec)
        print(f"{label:<12}{r['kept_fraction']:>8.1%}{r['kept_fraction_iou50']:>10.1%}{r['raw_box_abs_err_mean_px']:>16.2f}  {r['kept_by_height_px']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
