"""Issue #3: where the short-range int8 BlazeFace loses IoU >= 0.9 parity with its float model, and
how much keeping parts of the body in float would win back. Not a test: it prints figures.

Part 0 asks how strict the IoU >= 0.9 match is before any int8 arithmetic: the FLOAT model is
run on the val split as is and on the same inputs changed by less than one grey level -- rounded
the way the int8 input rounds them ((p - 127.5) / 127.5 falls between two int8 steps, so every
pixel moves by half a grey level), or with uniform noise of +-0.5 and +-1 grey levels -- and
its own detections are matched across the two runs.

Part 1 takes the shipped `models/face_detector_short.tflite` (int8 body, float heads, head
correction) and decodes the val split three ways against the ORIGINAL float Keras model:
int8 boxes with int8 scores (what the agent gets), int8 boxes with the float model's scores, and
float boxes with int8 scores. Weighted NMS averages every anchor scoring >= 0.5 that overlaps a
detection, so a score that crosses 0.5 moves a box as much as a regressor error does; the split
says which of the two costs more.

Part 2 converts the same model with TensorFlow's QuantizationDebugger, prints the layers with the
largest quantization error (RMSE / scale), and converts it again with growing tails of the body
left in float (`denylisted_nodes`; the debugger's models keep a float input and int8 heads, so
their "all int8" row is the plain conversion, below the shipped corrected model): if even a body
that is float from stride 4 on does not keep 99 %, per-tensor int8 cannot.

Needs the `convert` extra, the Keras rebuild (`maskwatch-convert blazeface`) and ../shared/datasets.
~7 min on 2 CPU threads.

    TF_ENABLE_ONEDNN_OPTS=0 python bench/int8_parity_sources.py
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def float_raw(model: Any, x: np.ndarray, dec: Dict[str, Any]) -> Any:
    """The float Keras model's raw (regressors, scores) for one input."""
    from convert.export.parity import keras_outputs, detector_outputs

    return detector_outputs(dec, {tuple(o.shape): o for o in keras_outputs(model, x)})


def kept_split(float_outs: Sequence[Any], flat: bytes, val_x: Sequence[np.ndarray], dec: Dict[str, Any]) -> Dict[str, List[int]]:
    """(float detections, kept at IoU >= 0.9) for int8 outputs, and for each int8 output swapped for
    the float one; ``float_outs`` are the float model's raw outputs for ``val_x`` (:func:`float_raw`)."""
    from agent.pipeline.detectors import blazeface
    from agent.pipeline.boxes import greedy_match, iou_matrix
    from convert.export.parity import detect_raw, detector_outputs
    from convert.litert import TfliteRunner

    run = TfliteRunner(flat)
    anchors = blazeface.generate_anchors(dec["anchors"])
    res = {"int8 boxes, int8 scores": [0, 0], "int8 boxes, float scores": [0, 0], "float boxes, int8 scores": [0, 0]}
    for x, (rb_f, rs_f) in zip(val_x, float_outs):
        rb_q, rs_q = detector_outputs(dec, run(x))
        bf, _, _ = detect_raw(rb_f, rs_f, anchors, dec, 0.5)
        for key, (rb, rs) in zip(res, ((rb_q, rs_q), (rb_q, rs_f), (rb_f, rs_q))):
            bq, _, _ = detect_raw(rb, rs, anchors, dec, 0.5)
            res[key][0] += len(bf)
            res[key][1] += len(greedy_match(iou_matrix(bf, bq), 0.9))
    return res


def kept_under_input_change(model: Any, float_outs: Sequence[Any], val_x: Sequence[np.ndarray],
                             dec: Dict[str, Any], change: Any) -> List[int]:
    """(float detections, kept at IoU >= 0.9) when the float model's input is ``change(x)``;
    ``float_outs`` are its raw outputs for ``val_x`` unchanged (:func:`float_raw`)."""
    from agent.pipeline.detectors import blazeface
    from agent.pipeline.boxes import greedy_match, iou_matrix
    from convert.export.parity import detect_raw

    anchors = blazeface.generate_anchors(dec["anchors"])
    n = kept = 0
    for x, (rb_f, rs_f) in zip(val_x, float_outs):
        bf = detect_raw(rb_f, rs_f, anchors, dec, 0.5)[0]
        bc = detect_raw(*float_raw(model, change(x).astype(np.float32), dec), anchors, dec, 0.5)[0]
        n += len(bf)
        kept += len(greedy_match(iou_matrix(bf, bc), 0.9))
    return [n, kept]


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)  # no options: --help only
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    from convert.ports.blazeface_keras import load_keras
    from convert.export.face_detector import calibration_inputs, read_split, scene_inputs
    from convert.export.parity import detector_parity

    side = json.loads((REPO / "models" / "face_detector_short.json").read_text())
    dec = side["decoding"]
    model = load_keras(sorted((REPO / "build" / "keras").glob("*short*.keras"))[0])
    scenes = REPO.parent / "shared" / "datasets" / "scenes-ilc2021"
    train, val = read_split(scenes, "train"), read_split(scenes, "val")
    val_x = [np.asarray(x, np.float32).reshape(1, 128, 128, 3) for x in scene_inputs(val, 128)]

    float_outs = [float_raw(model, x, dec) for x in val_x]  # shared by Parts 0 and 1

    q = side["input"]["quantization"]
    rng = np.random.default_rng(0)
    changes = {
        "int8 input rounding": lambda x: (np.clip(np.round(x / q["scale"]) + q["zero_point"], -128, 127)
                                          - q["zero_point"]) * q["scale"],
        "uniform noise +-0.5 grey": lambda x: x + rng.uniform(-0.5, 0.5, x.shape) / 127.5,
        "uniform noise +-1 grey": lambda x: x + rng.uniform(-1.0, 1.0, x.shape) / 127.5,
    }
    print("Part 0: the FLOAT model against itself, input changed by under a grey level, score >= 0.5")
    for key, change in changes.items():
        n, kept = kept_under_input_change(model, float_outs, val_x, dec, change)
        print(f"  {key:<26} kept at IoU >= 0.9: {kept}/{n} = {kept / n:.1%}", flush=True)

    print("Part 1: the shipped int8 model vs the original float model, val split, score >= 0.5")
    for key, (n, kept) in kept_split(float_outs, (REPO / "models" / "face_detector_short.tflite").read_bytes(), val_x, dec).items():
        print(f"  {key:<26} kept at IoU >= 0.9: {kept}/{n} = {kept / n:.1%}")

    xs = calibration_inputs(model, train, 128).xs  # the conversion's own calibration pick

    def debugger(deny: Sequence[str]) -> Any:
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([b] for b in xs)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(deny))
        return tf.lite.experimental.QuantizationDebugger(
            converter=c, debug_dataset=lambda: ([b] for b in xs[:20]), debug_options=opts)

    d = debugger([])
    d.run()
    buf = io.StringIO()
    d.layer_statistics_dump(buf)
    buf.seek(0)
    rows = [r for r in csv.DictReader(buf)]
    for r in rows:
        scale = float(r["scale"])
        r["err"] = float(r["mean_squared_error"]) ** 0.5 / scale if scale else 0.0
    names = [r["tensor_name"] for r in rows]
    print("\nPart 2: layers with the largest int8 error (RMSE in units of the output's quantization step)")
    for r in sorted(rows, key=lambda r: -r["err"])[:6]:
        print(f"  {r['err']:6.2f}  {r['op_name']:<18} {r['tensor_name'].split(';')[0][:70]}")

    def tail_from(pattern: str) -> List[str]:
        i = next(k for k, t in enumerate(names) if re.search(pattern, t))
        return names[i:]

    last_blocks = [t for t in names if re.search(r"(activation|conv2d|depthwise_conv2d)_(11|16)_1/|depthwise_conv2d_(10|15)_1/", t)]
    variants = {
        "all int8 (plain)": [],
        "last block of each branch float": last_blocks,
        "float from block 9 (stride 8)": tail_from(r"depthwise_conv2d_8_1/"),
        "float from block 6 (stride 8)": tail_from(r"depthwise_conv2d_5_1/"),
        "float from block 3 (stride 4)": tail_from(r"depthwise_conv2d_2_1/"),
    }
    print("\nvariant                          float tensors  kept@0.9  kept@0.5  raw box err px  by height at the input      KB   invoke ms")
    for label, deny in variants.items():
        flat = bytes(debugger(deny).get_nondebug_quantized_model())
        r = detector_parity(model, flat, val_x, dec)
        print(f"{label:<34}{len(deny):>12}{r['kept_fraction']:>10.1%}{r['kept_fraction_iou50']:>10.1%}"
              f"{r['raw_box_abs_err_mean_px']:>16.2f}  {json.dumps(r['kept_by_height_px'])}  {len(flat) // 1024:>4}  {r['latency_ms']['threads_1']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
