"""Float (Keras) vs int8 (TFLite) parity: what quantization cost, measured on real validation data.

Reports are plain dicts, saved beside the model as ``NAME.parity.json`` and ``NAME.parity.md``.
Latency is measured with LiteRT (the runtime the agent uses): median of many invokes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.pipeline.boxes import greedy_match, iou_matrix
from agent.pipeline.classify import softmax
from agent.pipeline.detectors import blazeface, nms
from convert.errors import ConvertError
from convert.export.sidecar import write_files_atomically
from convert.litert import TfliteRunner, latency_ms


def keras_outputs(keras_model: Any, x: np.ndarray) -> List[np.ndarray]:
    out = keras_model(x, training=False)
    if not isinstance(out, (list, tuple)):
        out = [out]
    if isinstance(out, dict):  # pragma: no cover - functional models return lists
        out = list(out.values())
    return [np.asarray(o, np.float32) for o in out]


def classifier_parity(
    keras_model: Any,
    tflite_bytes: bytes,
    x_float: np.ndarray,
    labels: Sequence[str],
    *,
    activation: str = "softmax",
    temperature: float = 1.0,
    y_true: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Top-1 agreement and probability differences of float vs int8 on ``x_float`` (N, H, W, C).

    ``activation`` says how outputs become probabilities ("softmax" of logits / temperature, or
    "none"); with ``y_true`` (label indices) both models' accuracies are reported too.
    """
    if len(x_float) == 0:
        raise ConvertError("classifier parity needs at least one validation image")
    run = TfliteRunner(tflite_bytes)
    n_cls = len(labels)
    pf, pq = [], []
    for i in range(0, len(x_float), 64):
        outs = keras_outputs(keras_model, x_float[i : i + 64])
        pf.append(next(o for o in outs if o.shape[-1] == n_cls))
    for x in x_float:
        res = run(x[None])
        pq.append(next(v for s, v in res.items() if s[-1] == n_cls))
    zf, zq = np.concatenate(pf), np.concatenate(pq)
    if activation == "softmax":
        zf, zq = softmax(zf, temperature), softmax(zq, temperature)
    diff = np.abs(zf - zq)
    top_f, top_q = zf.argmax(1), zq.argmax(1)
    report: Dict[str, Any] = {
        "kind": "classifier",
        "n_images": int(len(x_float)),
        "top1_agreement": round(float(np.mean(top_f == top_q)), 5),
        "prob_diff_mean": round(float(diff.mean()), 5),
        "prob_diff_max": round(float(diff.max()), 5),
        "size_bytes": len(tflite_bytes),
        "latency_ms": latency_ms(tflite_bytes),
    }
    if y_true is not None:
        y = np.asarray(y_true)
        report["accuracy_float"] = round(float(np.mean(top_f == y)), 5)
        report["accuracy_int8"] = round(float(np.mean(top_q == y)), 5)
    return report


def detector_outputs(decoding: Mapping[str, Any], outs: Mapping[Tuple[int, ...], np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(raw boxes (N, 16), raw score logits (N,)) from outputs keyed by shape."""
    n = int(decoding["num_boxes"])
    boxes = next(v for s, v in outs.items() if s[-2:] != (n, 1) and s[-2] == n)
    scores = next(v for s, v in outs.items() if s[-2:] == (n, 1))
    return boxes.reshape(n, -1), scores.reshape(n)


def detect_raw(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, decoding: Mapping[str, Any], min_score: float
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode + the sidecar's NMS (BlazeFace's: weighted), in model-input normalized coordinates."""
    b, s, k = blazeface.decode(raw_boxes, raw_scores, anchors, decoding)
    opts = decoding.get("nms", {})
    return nms.suppress(nms.method_of(decoding, "weighted"), b, s, k, float(opts.get("iou_threshold", blazeface.DEFAULT_NMS_IOU)), min_score)


# Float detections' box height at the model input, for kept_by_height_px.
HEIGHT_BINS: Tuple[Tuple[str, float, float], ...] = (
    ("<16", 0.0, 16.0), ("16-32", 16.0, 32.0), ("32-64", 32.0, 64.0), (">=64", 64.0, float("inf")))


def height_bin(height_px: float) -> str:
    """Name of the HEIGHT_BINS bin holding a box ``height_px`` tall."""
    for name, lo, hi in HEIGHT_BINS:
        if lo <= height_px < hi:
            return name
    return HEIGHT_BINS[0][0]  # negative heights (degenerate boxes) count as tiny


def detector_parity(
    keras_model: Any,
    tflite_bytes: bytes,
    x_float: Sequence[np.ndarray],
    decoding: Mapping[str, Any],
    *,
    min_score: float = 0.5,
    iou_match: float = 0.9,
) -> Dict[str, Any]:
    """Float vs int8 detections on preprocessed images (each (1, H, W, C) or (H, W, C)).

    Detections (score >= ``min_score``, after weighted NMS) are matched one-to-one at IoU >=
    ``iou_match``; reports matched IoU and score differences, and detections lost/gained by int8.
    """
    if len(x_float) == 0:
        raise ConvertError("detector parity needs at least one validation image")
    run = TfliteRunner(tflite_bytes)
    anchors = blazeface.generate_anchors(decoding["anchors"])
    n_float = n_int8 = 0
    ious: List[float] = []
    sdiff: List[float] = []
    raw_box_err: List[float] = []
    lost = gained = 0
    lost_loose = 0  # float detections with no int8 detection even at IoU >= 0.5
    in_h = float(decoding["anchors"]["input_size_height"])
    by_height = {name: [0, 0] for name, _, _ in HEIGHT_BINS}  # float detections, kept at iou_match
    for x in x_float:
        x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[None]
        outs_f = keras_outputs(keras_model, x)
        rb_f, rs_f = detector_outputs(decoding, {tuple(o.shape): o for o in outs_f})
        rb_q, rs_q = detector_outputs(decoding, run(x))
        bf, sf, _ = detect_raw(rb_f, rs_f, anchors, decoding, min_score)
        bq, sq, _ = detect_raw(rb_q, rs_q, anchors, decoding, min_score)
        # raw regressor error on the anchors that matter (float score >= min_score)
        hot = blazeface.sigmoid_scores(rs_f, decoding) >= min_score
        if hot.any():
            raw_box_err.append(float(np.abs(rb_f[hot, :4] - rb_q[hot, :4]).mean()))
        n_float += len(bf)
        n_int8 += len(bq)
        iou = iou_matrix(bf, bq)
        pairs = greedy_match(iou, iou_match)
        for i, j in pairs:
            ious.append(float(iou[i, j]))
            sdiff.append(float(abs(sf[i] - sq[j])))
        lost += len(bf) - len(pairs)
        gained += len(bq) - len(pairs)
        kept_i = {i for i, _ in pairs}
        for i, b in enumerate(bf):
            name = height_bin((b[3] - b[1]) * in_h)
            by_height[name][0] += 1
            by_height[name][1] += int(i in kept_i)
        lost_loose += len(bf) - len(greedy_match(iou, 0.5))
    kept = (n_float - lost) / n_float if n_float else 1.0
    return {
        "kind": "detector",
        "n_images": len(x_float),
        "min_score": min_score,
        "iou_match": iou_match,
        "detections_float": n_float,
        "detections_int8": n_int8,
        "matched": len(ious),
        "lost": lost,
        "gained": gained,
        "kept_fraction": round(kept, 5),
        "kept_fraction_iou50": round((n_float - lost_loose) / n_float, 5) if n_float else 1.0,
        "matched_iou_mean": round(float(np.mean(ious)), 5) if ious else None,
        "matched_iou_min": round(float(np.min(ious)), 5) if ious else None,
        "score_diff_mean": round(float(np.mean(sdiff)), 5) if sdiff else None,
        "score_diff_max": round(float(np.max(sdiff)), 5) if sdiff else None,
        "raw_box_abs_err_mean_px": round(float(np.mean(raw_box_err)), 4) if raw_box_err else None,
        # where parity is lost: a 1 px box error costs a 10 px face its IoU >= 0.9, a 60 px one not
        "kept_by_height_px": {name: f"{k}/{n}" for name, (n, k) in by_height.items() if n},
        "size_bytes": len(tflite_bytes),
        "latency_ms": latency_ms(tflite_bytes),
    }


def _markdown(stem: str, report: Mapping[str, Any]) -> str:
    lines = [f"# Parity report: {stem} (float Keras vs int8 TFLite)", "", "| metric | value |", "|---|---|"]

    def walk(prefix: str, d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):
                walk(key + ".", v)
            else:
                lines.append(f"| {key} | {json.dumps(v) if not isinstance(v, str) else v} |")

    walk("", {k: v for k, v in report.items() if k != "notes"})
    notes = report.get("notes")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in (notes if isinstance(notes, list) else [notes])]
    return "\n".join(lines) + "\n"


def write_parity_report(models_dir: Path | str, stem: str, report: dict) -> Tuple[Path, Path]:
    """Save ``stem.parity.json`` and ``stem.parity.md`` beside the model and print the markdown."""
    models_dir = Path(models_dir)
    jp, mp = models_dir / f"{stem}.parity.json", models_dir / f"{stem}.parity.md"
    md = _markdown(stem, report)
    write_files_atomically({jp: (json.dumps(report, indent=2) + "\n").encode(), mp: md.encode()})
    print(md)
    return jp, mp


__all__ = (
    "classifier_parity",
    "detector_parity",
    "write_parity_report",
    "keras_outputs",
)
