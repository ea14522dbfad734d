"""The face-detector recipe: BlazeFace (Keras) -> int8 TFLite + sidecar + parity report.

Calibration uses letterboxed ``train`` scenes of scenes-ilc2021, parity the ``val`` scenes; the
``box_adjust`` (model box -> human annotators' box) is fitted on ``train`` with the int8 model,
which is what ships. Preprocessing matches :meth:`agent.pipeline.detect.FaceDetector.prepare` (centred
letterbox, black padding, INTER_AREA when shrinking, RGB, ``(pixel - mean) / std``).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.boxes import greedy_match, iou_matrix
from agent.pipeline.detect import letterbox as agent_letterbox
from agent.pipeline.detectors import blazeface
from convert.errors import ConvertError
from convert.ports.blazeface_keras import MIN_SCORE, decoding_fields

MEAN, STD = 127.5, 127.5  # MediaPipe feeds BlazeFace pixels scaled to [-1, 1]


def sidecar_template(variant: str, source_name: str, source_sha256: str,
                     input_wh: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """Detector sidecar for a BlazeFace variant, before conversion fills files and quantization
    (``input_wh``: see :func:`decoding_fields`)."""
    decoding = decoding_fields(variant, input_wh)
    a, n = decoding["anchors"], decoding["num_boxes"]
    width, height = int(a["input_size_width"]), int(a["input_size_height"])
    return {
        "schema": "maskwatch-model/1",
        "kind": "detector",
        "name": f"blazeface-{variant}-range" + ("" if input_wh is None else f"-{width}x{height}"),
        "input": {
            "height": height, "width": width, "channels": 3, "color": "RGB",
            "normalization": {"mean": [MEAN] * 3, "std": [STD] * 3},
            "resize": "letterbox",
        },
        "outputs": {"regressors": {"shape": [1, n, 16]}, "scores": {"shape": [1, n, 1]}},
        "decoding": decoding,
        "provenance": {
            "source_model": f"{source_name} (mediapipe 0.10.21 wheel)",
            "source_model_sha256": source_sha256,
            "licence": "Apache-2.0",
            "mediapipe_min_score_thresh": MIN_SCORE[variant],
        },
    }


# ---------------------------------------------------------------------------------------------
# Data


def read_split(root: Path, split: str) -> List[Tuple[Path, np.ndarray]]:
    """(image path, annotated boxes (M, 4) x1y1x2y2 px) of a scenes-ilc2021 split, sorted."""
    base = Path(root)
    for name in ("images.csv", "boxes.csv"):
        if not (base / name).is_file():
            raise ConvertError(f"{base / name}: not found; fix: pass --scenes DIR (a scenes-ilc2021 folder)")
    with open(base / "images.csv", newline="") as f:
        names = sorted(r["image"] for r in csv.DictReader(f) if r["split"] == split)
    boxes: Dict[str, List[List[float]]] = {n: [] for n in names}
    with open(base / "boxes.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["image"] in boxes:
                boxes[r["image"]].append([float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
    if not names:
        raise ConvertError(f"{base / 'images.csv'}: no images in split {split!r}")
    return [(base / "images" / n, np.asarray(boxes[n], np.float32).reshape(-1, 4)) for n in names]


def letterbox(image_bgr: np.ndarray, size: int) -> Tuple[np.ndarray, float, float, float]:
    """BGR frame -> (RGB uint8 size x size canvas, scale, pad_x, pad_y): the agent's own letterbox
    (:func:`agent.pipeline.detect.letterbox`), so calibration sees what the agent feeds."""
    canvas, lb = agent_letterbox(image_bgr, size, size)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), lb.scale_x, lb.pad_x, lb.pad_y


def preprocess(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (1, H, W, 3) model input."""
    x = (rgb.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x[None]


def read_bgr(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ConvertError(f"{path}: cannot read image")
    return img


def scene_inputs(items: Sequence[Tuple[Path, np.ndarray]], size: int, label: str = "") -> Iterator[np.ndarray]:
    """Preprocessed letterboxed inputs of scene images, printing progress."""
    t0 = time.time()
    for k, (path, _) in enumerate(items):
        rgb, *_ = letterbox(read_bgr(path), size)
        if label and (k + 1) % 50 == 0:
            print(f"  {label}: {k + 1}/{len(items)} images ({time.time() - t0:.0f} s)", flush=True)
        yield preprocess(rgb, [MEAN] * 3, [STD] * 3)


class Calibration(NamedTuple):
    """The conversion's calibration images: all of them (``all_xs``, with the Keras model's outputs
    ``float_outs``) and the ones whose outputs set the int8 ranges (``xs``)."""

    all_xs: List[np.ndarray]
    float_outs: List[List[np.ndarray]]
    xs: List[np.ndarray]


def calibration_inputs(keras_model: Any, train: Sequence[Tuple[Path, np.ndarray]], size: int, n: int = 300,
                       trim_quantile: float = 0.25, label: str = "") -> Calibration:
    """A seeded ``n`` of the ``train`` scenes, letterboxed; those whose output peaks all stay at or
    below the ``trim_quantile`` quantile set the int8 ranges (outliers would stretch the steps)."""
    from convert.export.parity import keras_outputs  # noqa: PLC0415

    rng = np.random.default_rng(0)
    calib = [train[i] for i in sorted(rng.choice(len(train), min(n, len(train)), replace=False))]
    all_xs = list(scene_inputs(calib, size, label))
    float_outs = [keras_outputs(keras_model, x) for x in all_xs]
    peaks = np.array([[float(np.abs(o).max()) for o in outs] for outs in float_outs])
    keep = np.all(peaks <= np.quantile(peaks, trim_quantile, axis=0), axis=1) if trim_quantile < 1 else np.ones(len(all_xs), bool)
    return Calibration(all_xs, float_outs, [x for x, k in zip(all_xs, keep) if k])


# ---------------------------------------------------------------------------------------------
# box_adjust


def fit_box_adjust(
    tflite_bytes: bytes,
    sidecar: Mapping[str, Any],
    items: Sequence[Tuple[Path, np.ndarray]],
    min_score: float = 0.5,
    iou_threshold: float = 0.5,
    min_height: float = 20.0,
) -> Dict[str, Any]:
    """Median (dx, dy, sw, sh) mapping detector boxes to annotated boxes on matched pairs.

    Pairs: detections (score >= ``min_score``, after weighted NMS) matched one-to-one to
    annotated faces >= ``min_height`` px tall at IoU >= ``iou_threshold``. The medians are robust to
    the few wrong matches; the IoU before/after on the same pairs is reported.
    """
    from convert.export.parity import detector_outputs, detect_raw  # noqa: PLC0415
    from convert.litert import TfliteRunner  # noqa: PLC0415

    dec = sidecar["decoding"]
    size = int(sidecar["input"]["height"])
    anchors = blazeface.generate_anchors(dec["anchors"])
    run = TfliteRunner(tflite_bytes)
    dets, gts = [], []
    for k, (path, gt) in enumerate(items):
        rgb, s, px, py = letterbox(read_bgr(path), size)
        rb, rs = detector_outputs(dec, run(preprocess(rgb, [MEAN] * 3, [STD] * 3)))
        b, _, _ = detect_raw(rb, rs, anchors, dec, min_score)
        b = (b * size - [px, py, px, py]) / s  # normalized input -> image pixels
        g = gt[(gt[:, 3] - gt[:, 1]) >= min_height]
        for i, j in greedy_match(iou_matrix(b, g), iou_threshold):
            dets.append(b[i])
            gts.append(g[j])
        if (k + 1) % 200 == 0:
            print(f"  box_adjust: {k + 1}/{len(items)} images, {len(dets)} pairs", flush=True)
    return box_adjust_from_pairs(np.asarray(dets, np.float64), np.asarray(gts, np.float64))


def box_adjust_from_pairs(d: np.ndarray, g: np.ndarray) -> Dict[str, Any]:
    """Median (dx, dy, sw, sh) mapping detected boxes ``d`` (N, 4) to their annotated boxes ``g``;
    medians are robust to the few wrong matches. Reports the IoU before/after on the same pairs."""

    if len(d) < 20:
        raise ConvertError(f"box_adjust: only {len(d)} matched faces; need a larger training split")
    d, g = np.asarray(d, np.float64).reshape(-1, 4), np.asarray(g, np.float64).reshape(-1, 4)
    dw, dh = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    dx = float(np.median(((g[:, 0] + g[:, 2]) - (d[:, 0] + d[:, 2])) / 2 / dw))
    dy = float(np.median(((g[:, 1] + g[:, 3]) - (d[:, 1] + d[:, 3])) / 2 / dh))
    sw, sh = float(np.median(gw / dw)), float(np.median(gh / dh))
    cx, cy = (d[:, 0] + d[:, 2]) / 2 + dx * dw, (d[:, 1] + d[:, 3]) / 2 + dy * dh
    adj = np.stack([cx - dw * sw / 2, cy - dh * sh / 2, cx + dw * sw / 2, cy + dh * sh / 2], 1)
    before = np.diag(iou_matrix(d, g))
    after = np.diag(iou_matrix(adj, g))
    return {
        "box_adjust": {"dx": round(dx, 4), "dy": round(dy, 4), "sw": round(sw, 4), "sh": round(sh, 4)},
        "pairs": len(d),
        "median_iou_before": round(float(np.median(before)), 4),
        "median_iou_after": round(float(np.median(after)), 4),
    }


# ---------------------------------------------------------------------------------------------
# Head correction: the int8 body bends the float regressor head's inputs; undo the bias it leaves


def regressor_heads(keras_model: Any, num_boxes: int) -> List[Tuple[Any, int, int, int]]:
    """The Conv2D layers computing the ``regressors`` output, in anchor order, each with (first
    anchor, end, anchors per cell, its layer), when every one maps channels straight to anchors
    (16 per anchor, reshaped and concatenated); [] otherwise (e.g. full range's DEPTH_TO_SPACE)."""
    if "regressors" not in keras_model.output_names:
        return []
    found: List[Any] = []

    def walk(t: Any) -> None:
        op, node, _ = t._keras_history
        if type(op).__name__ == "Conv2D":
            found.append(op)
            return
        for x in op._inbound_nodes[node].input_tensors:
            walk(x)

    walk(keras_model.outputs[keras_model.output_names.index("regressors")])
    heads, start = [], 0
    for conv in found:
        _, h, w, ch = (int(d) for d in conv.output.shape)
        if ch % 16:
            return []
        heads.append((start, start + h * w * (ch // 16), ch // 16, conv))
        start += h * w * (ch // 16)
    return heads if start == num_boxes else []


def fit_head_correction(raw_f: np.ndarray, raw_q: np.ndarray, anchor: np.ndarray,
                        heads: Sequence[Tuple[int, int, int, Any]], min_samples: int = 20) -> Dict[str, Dict[str, List[float]]]:
    """Per head and regressor channel, (a, b) with ``float ~= a * int8 + b`` by least squares over the
    rows of ``raw_f``/``raw_q`` (N, 16) whose anchor index (N,) falls in the head; heads with fewer
    than ``min_samples`` rows keep (1, 0)."""
    out: Dict[str, Dict[str, List[float]]] = {}
    for lo, hi, _, conv in heads:
        sel = (anchor >= lo) & (anchor < hi)
        a, b = np.ones(raw_f.shape[1]), np.zeros(raw_f.shape[1])
        if sel.sum() >= min_samples:
            for c in range(raw_f.shape[1]):
                (a[c], b[c]), *_ = np.linalg.lstsq(np.c_[raw_q[sel, c], np.ones(int(sel.sum()))], raw_f[sel, c], rcond=None)
        out[conv.name] = {"a": [round(float(v), 6) for v in a], "b": [round(float(v), 6) for v in b], "anchors": int(sel.sum())}
    return out


def fold_head_correction(heads: Sequence[Tuple[int, int, int, Any]], corr: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
    """Scale and shift each head convolution's output channels by its (a, b) (every anchor of a cell alike)."""
    for _, _, per_cell, conv in heads:
        a, b = np.asarray(corr[conv.name]["a"]), np.asarray(corr[conv.name]["b"])
        w, bias = conv.get_weights()
        ch = np.arange(w.shape[-1]) % 16
        conv.set_weights([w * a[ch], bias * a[ch] + b[ch]])


def corrected_int8(keras_model: Any, xs: Sequence[np.ndarray], fit_xs: Sequence[np.ndarray], flat: bytes,
                   decoding: Mapping[str, Any], float_outputs: Sequence[str], min_score: float = 0.3,
                   fit_float: Optional[Sequence[Sequence[np.ndarray]]] = None) -> Tuple[bytes, Dict[str, Any]]:
    """``flat`` converted again with the regressor heads corrected toward the float model (fitted on
    ``fit_xs``, anchors the float model scores >= ``min_score``; ``fit_float``: the Keras model's
    outputs on them when the caller has them already); the Keras model is left as it was.
    Returns (flat, what was fitted) or (the given flat, reason) when the graph has no such heads."""
    from convert.export.parity import keras_outputs, detector_outputs  # noqa: PLC0415
    from convert.litert import TfliteRunner  # noqa: PLC0415
    from convert.export.quantize import quantize_int8  # noqa: PLC0415

    if "regressors" not in float_outputs:
        return flat, {"applied": False, "why": "the regressor head runs in int8 (--float-outputs)"}
    heads = regressor_heads(keras_model, int(decoding["num_boxes"]))
    if not heads:
        return flat, {"applied": False, "why": "no float regressor head mapping channels straight to anchors"}
    run = TfliteRunner(flat)
    rows_f, rows_q, idx = [], [], []
    for k, x in enumerate(fit_xs):
        outs = fit_float[k] if fit_float is not None else keras_outputs(keras_model, x)
        rb_f, rs_f = detector_outputs(decoding, {tuple(o.shape): o for o in outs})
        rb_q, _ = detector_outputs(decoding, run(x))
        hot = np.flatnonzero(blazeface.sigmoid_scores(rs_f, decoding) >= min_score)
        rows_f.append(rb_f[hot])
        rows_q.append(rb_q[hot])
        idx.append(hot)
    corr = fit_head_correction(np.concatenate(rows_f), np.concatenate(rows_q), np.concatenate(idx), heads)
    saved = [conv.get_weights() for *_, conv in heads]
    try:
        fold_head_correction(heads, corr)
        fixed = quantize_int8(keras_model, xs, float_outputs=float_outputs)
    finally:
        for (*_, conv), weights in zip(heads, saved):
            conv.set_weights(weights)
    return fixed, {"applied": True, "min_score": min_score, "fit_images": len(fit_xs), "heads": corr}


# ---------------------------------------------------------------------------------------------
# The recipe


def build_face_detector(
    keras_model: Any,
    variant: str,
    source_name: str,
    source_sha256: str,
    scenes: Path,
    models_dir: Path,
    stem: str,
    n_calibration: int = 300,
    n_val: Optional[int] = None,
    float_outputs: Sequence[str] = ("regressors", "scores"),
    trim_quantile: float = 0.25,
    ablation: bool = True,
    head_correction: bool = True,
) -> Dict[str, Any]:
    """Quantize a BlazeFace Keras model, fit box_adjust, write the model pair + parity report.

    Calibration images whose float outputs reach beyond the ``trim_quantile`` of the candidates'
    output peaks are left out: a few images drive BlazeFace's raw outputs to thousands, and min/max
    calibration would spend the int8 range of every layer on them. ``float_outputs`` heads run in
    float (see :func:`convert.export.quantize.float_heads`); with ``ablation`` the all-int8 variant is
    measured too and reported, so the choice is backed by a number.
    """
    from convert.export.parity import detector_parity, write_parity_report  # noqa: PLC0415
    from convert.export.quantize import quantize_int8  # noqa: PLC0415
    from convert.export.sidecar import fill_sidecar, write_model_pair  # noqa: PLC0415

    side = sidecar_template(variant, source_name, source_sha256)
    size = int(side["input"]["height"])
    if tuple(keras_model.inputs[0].shape[1:]) != (size, size, 3):
        raise ConvertError(f"the Keras model input {tuple(keras_model.inputs[0].shape)} is not the {variant}-range {size}x{size}x3")
    train, val = read_split(scenes, "train"), read_split(scenes, "val")
    val = val[:n_val] if n_val else val
    print(f"[1/4] calibrating int8 on {min(n_calibration, len(train))} letterboxed train scenes", flush=True)
    t0 = time.time()
    # the Keras outputs serve the trimming and the head correction
    all_xs, float_outs, xs = calibration_inputs(keras_model, train, size, n_calibration, trim_quantile, "calibration")
    print(f"      {len(xs)} kept after trimming output outliers (quantile {trim_quantile})", flush=True)
    flat = quantize_int8(keras_model, xs, float_outputs=float_outputs)
    correction: Dict[str, Any] = {"applied": False, "why": "--no-head-correction"}
    if head_correction:
        # fitted on every calibration image: the ones with large outputs hold the large faces
        flat, correction = corrected_int8(keras_model, xs, all_xs, flat, side["decoding"], float_outputs,
                                          fit_float=float_outs)
        print(f"      regressor head correction: {'applied' if correction['applied'] else correction['why']}", flush=True)
    print(f"      converted in {time.time() - t0:.0f} s, {len(flat)} bytes", flush=True)
    fill_sidecar(side, flat, f"{stem}.tflite")  # checks outputs/shapes before the slow steps

    print(f"[2/4] fitting box_adjust on {len(train)} train scenes (int8 model)", flush=True)
    fit = fit_box_adjust(flat, side, train)
    side["decoding"]["box_adjust"] = fit["box_adjust"]
    print(f"      {fit}", flush=True)

    print(f"[3/4] parity float vs int8 on {len(val)} val scenes", flush=True)
    dec = side["decoding"]
    val_x = list(scene_inputs(val, size, "parity"))
    report = detector_parity(keras_model, flat, val_x, dec)
    if ablation and float_outputs:
        print("      ablation: the same model with all-int8 heads", flush=True)
        alt = detector_parity(keras_model, quantize_int8(keras_model, xs), val_x, dec)
        report["ablation_all_int8_heads"] = {
            k: alt[k] for k in ("kept_fraction", "kept_fraction_iou50", "lost", "gained", "matched_iou_mean",
                                "score_diff_mean", "raw_box_abs_err_mean_px", "size_bytes", "latency_ms")
        }
    report["model"] = f"{stem}.tflite"
    report["validation"] = f"scenes-ilc2021 val split, {len(val)} letterboxed images"
    report["float_outputs"] = list(float_outputs)
    report["box_adjust_fit"] = fit
    report["head_correction"] = correction
    report["notes"] = [
        "Detections: weighted NMS (iou 0.3) then score >= min_score; float and int8 matched one-to-one at IoU >= iou_match.",
        "raw_box_abs_err_mean_px: mean |float - int8| of the raw box regressors (input pixels) on anchors the float model scores >= min_score.",
        "Latency: LiteRT Interpreter invoke only, median over 300 invokes after 20 warm-ups, this machine (2 shared cores).",
        f"Float heads {list(float_outputs)}: BlazeFace's raw score logits reach -400..-6000 and its box offsets hundreds of px, "
        "so an int8 output tensor gets a step of 2-80 units; see ablation_all_int8_heads for what all-int8 heads measure.",
        "head_correction: the int8 body biases the float regressor head (large faces' boxes came out 3-10 % too large); "
        "per head and channel float ~= a * int8 + b is fitted on the calibration images and folded into the head's weights.",
    ]
    side["provenance"]["representative_data"] = (
        f"{len(xs)} of {len(all_xs)} letterboxed scenes-ilc2021 train images (seed 0; output outliers above the "
        f"{trim_quantile} quantile left out), normalized (x-127.5)/127.5"
    )
    side["provenance"]["head_correction"] = correction
    side["metrics"] = {
        "parity_val": {k: report[k] for k in ("kept_fraction", "kept_fraction_iou50", "lost", "gained", "matched_iou_mean", "score_diff_mean")},
        "latency_ms": report["latency_ms"],
        "size_bytes": report["size_bytes"],
        "box_adjust_fit": fit,
    }
    print("[4/4] writing", models_dir / f"{stem}.tflite", flush=True)
    write_model_pair(models_dir, stem, flat, side)
    write_parity_report(models_dir, stem, report)
    return report


__all__ = ("sidecar_template", "build_face_detector", "fit_box_adjust", "box_adjust_from_pairs", "letterbox", "preprocess", "read_split")
