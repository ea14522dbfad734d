"""Evaluate the int8 mask classifier on the ``val`` crops with LiteRT, draw figures, update the card.

    maskwatch-convert evaluate-classifier [--model models/mask_classifier.tflite] [--keras build/classifier/mask_classifier.keras]

Measures per-class precision and recall with Wilson 95 % intervals, the confusion matrix, masked
faces called ``no_mask``, faces dropped as ``not_face``, calibration (reliability diagram, ECE),
int8/float top-1 agreement, file size, and latency per crop with one thread. Writes
``models/figures/classifier_{confusion,reliability}.png`` and the "Mask classifier" section of
``models/MODEL_CARD.md`` (between ``<!-- classifier:start -->`` and ``<!-- classifier:end -->``;
the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.tools.scoring import wilson
from agent.model import ModelError, cv2_table, pixel_table, read_sidecar
from agent.pipeline.classify import pick_label, softmax
from convert.data import classifier as cd
from convert.evaluate.card import update_card
from convert.litert import TfliteRunner, median_invoke_ms
from convert.tf import tensorflow
from convert.paths import REPO_ROOT

START, END = "<!-- classifier:start -->", "<!-- classifier:end -->"
FACE_LABELS = cd.LABELS[:3]


class Int8Classifier:
    """The .tflite classifier through convert's one LiteRT runner (:class:`convert.litert.TfliteRunner`),
    fed uint8 crops through the agent's pixel table or normalized float crops; logits dequantized."""

    def __init__(self, tflite_bytes: bytes, threads: int = 1) -> None:
        self.runner = TfliteRunner(tflite_bytes, threads)
        if len(self.runner.outs) != 1:
            raise ModelError(f"a classifier has one output (logits); this model has {len(self.runner.outs)}")

    def pixel_lut(self, normalization: Mapping[str, Sequence[float]]) -> np.ndarray:
        """(256, 3) table pixel -> input tensor value for a sidecar's ``input.normalization``:
        the agent's own table (:func:`agent.model.pixel_table`), so evaluation feeds the model what
        the agent feeds it."""
        scale, zp = self.runner.inp["quantization"]
        return pixel_table(normalization, self.runner.inp["dtype"], (float(scale), int(zp)))

    def logits_uint8(self, x_uint8: np.ndarray, normalization: Mapping[str, Sequence[float]]) -> np.ndarray:
        """Logits for uint8 RGB crops (N, H, W, 3), turned into tensors as the agent's classifier does
        (``cv2.LUT`` through :func:`agent.model.cv2_table` of ``pixel_lut``)."""
        n, h, w, c = x_uint8.shape
        if n == 0:  # cv2.LUT of an empty image is None
            return np.zeros((0, int(np.prod(self.runner.outs[0]["shape"][1:]))), np.float32)
        table = cv2_table(self.pixel_lut(normalization))
        return self._run(cv2.LUT(np.ascontiguousarray(x_uint8).reshape(n * h, w, c), table).reshape(n, h, w, c))

    def _run(self, tensors: np.ndarray) -> np.ndarray:
        """Dequantized logits of input tensors already in the model's dtype, one invoke per crop."""
        return np.concatenate([self.runner.invoke(tensors[k : k + 1])[0] for k in range(len(tensors))])

    def logits(self, x_norm: np.ndarray) -> np.ndarray:
        """Logits for normalized float crops (N, H, W, 3), one invoke per crop."""
        return self._run(self.runner.quantize_input(x_norm))

    def latency_ms(self, x_norm: np.ndarray, runs: int = 300) -> float:
        """Median milliseconds of set_tensor + invoke for one real crop (the agent sets a new crop
        before each invoke)."""
        return median_invoke_ms(self.runner.it, self.runner.quantize_input(x_norm[:1]), runs, set_each_run=True)


def reliability(prob: np.ndarray, y: np.ndarray, bins: int = 10) -> Dict[str, object]:
    """Confidence vs accuracy per bin of top-1 probability, and the expected calibration error."""
    conf, pred = prob.max(axis=1), prob.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c = float((pred[m] == y[m]).mean()), float(conf[m].mean())
            ece += m.mean() * abs(acc - c)
            rows.append({"lo": float(lo), "hi": float(hi), "n": int(m.sum()), "accuracy": acc, "confidence": c})
    return {"bins": rows, "ece": float(ece)}


def label_metrics(prob: np.ndarray, y: np.ndarray) -> Dict[str, object]:
    """The label figures of the card from class probabilities (N, labels) and true labels (N,):
    confusion, recall and precision per class, face accuracy, masked faces called ``no_mask`` and
    faces dropped as ``not_face``, with 95 % Wilson intervals."""
    pred = prob.argmax(axis=1)
    n_cls = len(cd.LABELS)
    cm = np.zeros((n_cls, n_cls), np.int64)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    per_class = {}
    for i, lab in enumerate(cd.LABELS):
        n, tp, npred = int(cm[i].sum()), int(cm[i, i]), int(cm[:, i].sum())
        per_class[lab] = {
            "n": n,
            "recall": tp / n if n else float("nan"), "recall_ci95": wilson(tp, n),
            "precision": tp / npred if npred else float("nan"), "precision_ci95": wilson(tp, npred),
        }
    faces = y < 3
    masked = y == 0
    m2n = int(((pred == 2) & masked).sum())
    dropped = int(((pred == 3) & faces).sum())
    return {
        "face_accuracy": float((pred[faces] == y[faces]).mean()),
        "face_accuracy_ci95": wilson(int((pred[faces] == y[faces]).sum()), int(faces.sum())),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "mask_called_no_mask": m2n / max(1, int(masked.sum())),
        "mask_called_no_mask_ci95": wilson(m2n, int(masked.sum())),
        "faces_called_not_face": dropped / max(1, int(faces.sum())),
    }


# the labels config.yaml's alert.labels raises an alert for
ALERT_LABELS: Tuple[str, ...] = ("incorrect_mask", "no_mask")
# the operating points the card's curve steps through (config classifier.thresholds): arg-max; a
# `mask` threshold (doubtful masks alert: more alerts); a threshold on both alert labels (doubtful
# alerts fall back to mask: fewer alerts)
OPERATING_POINTS: Tuple[Dict[str, float], ...] = (
    ({},) + tuple({"mask": t} for t in (0.5, 0.6, 0.7, 0.8, 0.9))
    + tuple({"incorrect_mask": t, "no_mask": t} for t in (0.5, 0.6, 0.7))
)
# faces this tall and taller count for the threshold choice, as for the whole-pipeline alert figures
TUNE_MIN_FACE_PX = 40.0


def thresholds_words(t: Mapping[str, float]) -> str:
    """An operating point as config.yaml would spell it: ``{}``, ``{mask: 0.7}``..."""
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in t.items()) + "}"


def alert_curve(prob: np.ndarray, y: np.ndarray,
                points: Sequence[Mapping[str, float]] = OPERATING_POINTS) -> List[Dict[str, object]]:
    """What ``classifier.thresholds`` does to the alert decision, per operating point: the share of
    ``incorrect_mask`` faces alerted (decided ``incorrect_mask`` or ``no_mask``, the alert labels),
    of ``no_mask`` faces alerted and of ``mask`` faces falsely alerted, with counts and 95 % Wilson
    intervals. Labels are picked by the agent's own rule (:func:`agent.pipeline.classify.pick_label`);
    ``not_face`` crops are left out, faces decided ``not_face`` count as not alerted."""
    labels = list(cd.LABELS)
    alert = [labels.index(lab) for lab in ALERT_LABELS]
    rows = []
    for t in points:
        pred = np.array([pick_label(p, labels, dict(t)) for p in prob], np.int64)
        row: Dict[str, object] = {"thresholds": dict(t)}
        for key, lab in (("incorrect_alerted", "incorrect_mask"), ("no_mask_alerted", "no_mask"), ("mask_alerted", "mask")):
            m = y == labels.index(lab)
            k, n = int(np.isin(pred[m], alert).sum()), int(m.sum())
            row[key] = {"k": k, "n": n, "rate": k / n if n else float("nan"), "ci95": wilson(k, n)}
        rows.append(row)
    return rows


def choose_thresholds(curve: Sequence[Dict[str, object]]) -> Dict[str, float]:
    """The operating point of ``curve`` (from the tuning fold, never val) that alerts on the most
    ``incorrect_mask`` faces without alerting on more masked faces than the arg-max does (its first
    row); ties go to fewer masked alerts, then more ``no_mask`` alerted, then the earlier point."""
    base = curve[0]["mask_alerted"]["k"]  # type: ignore[index]
    ok = [(i, r) for i, r in enumerate(curve) if r["mask_alerted"]["k"] <= base]  # type: ignore[index]
    _, best = max(ok, key=lambda ir: (ir[1]["incorrect_alerted"]["k"], -ir[1]["mask_alerted"]["k"],  # type: ignore[index]
                                      ir[1]["no_mask_alerted"]["k"], -ir[0]))  # type: ignore[index]
    return dict(best["thresholds"])  # type: ignore[arg-type]


def evaluate_bytes(tflite_bytes: bytes, val_set: cd.CropSet, temperature: float,
                   normalization: Mapping[str, Sequence[float]], model=None,
                   tune_set: Optional[cd.CropSet] = None) -> Dict[str, object]:
    """Every figure of the card for one int8 model on the val crops (float model optional, for
    agreement); pixels become tensors through ``normalization``, the sidecar's ``input.normalization``.

    ``tune_set``: held-out train crops (the trainer's ``--tune-fold``); the alert threshold is chosen
    on its detector-framed faces (:func:`choose_thresholds`, faces >= ``TUNE_MIN_FACE_PX``) and the alert curve shown for both."""
    mean = np.asarray(normalization["mean"], np.float32)
    std = np.asarray(normalization["std"], np.float32)
    xv = (val_set.x.astype(np.float32) - mean) / std
    clf = Int8Classifier(tflite_bytes, threads=1)
    logits = clf.logits_uint8(val_set.x, normalization)
    prob = softmax(logits, temperature)
    pred = prob.argmax(axis=1)
    y = val_set.y
    faces = y < 3
    out: Dict[str, object] = {"val_crops": int(len(y)), **label_metrics(prob, y)}
    big = val_set.box_h >= TUNE_MIN_FACE_PX if val_set.box_h is not None else np.ones(len(y), bool)
    out["alert_curve_val"] = alert_curve(prob[big], y[big])
    if tune_set is not None and len(tune_set):
        # The faces as the agent's detector frames them when the cache holds them (classifier-data
        # --agent-detector), else the annotators' boxes: a cache cut without a detector has only those.
        big_tune = tune_set.box_h >= TUNE_MIN_FACE_PX
        framed = (tune_set.source == "detector") & big_tune
        if not framed.any():
            framed = (tune_set.y < 3) & big_tune
            out["tune_framing"] = "annotator boxes"
        tp = softmax(clf.logits_uint8(tune_set.x[framed], normalization), temperature)
        out["alert_curve_tune"] = alert_curve(tp, tune_set.y[framed])
        out["thresholds"] = choose_thresholds(out["alert_curve_tune"])
        out["tune_crops"] = int(framed.sum())
    out.update({
        "temperature": float(temperature),
        "reliability": reliability(prob, y),
        "ece_uncalibrated": reliability(softmax(logits, 1.0), y)["ece"],
        "size_bytes": len(tflite_bytes),
        "latency_ms_1thread": clf.latency_ms(xv),
        "input_size": int(val_set.x.shape[1]),
    })
    if model is not None:
        fpred = np.argmax(model.predict(xv, batch_size=256, verbose=0), axis=1)
        out["int8_float_agreement"] = float((fpred == pred).mean())
        out["float_face_accuracy"] = float((fpred[faces] == y[faces]).mean())
        out["float_recall"] = {lab: float((fpred[y == i] == i).mean()) for i, lab in enumerate(cd.LABELS) if (y == i).any()}
    if val_set.box_h is not None:
        bands = {}
        for lo, hi in ((0, 32), (32, 64), (64, 10_000)):
            m = faces & (val_set.box_h >= lo) & (val_set.box_h < hi)
            k = int((pred[m] == y[m]).sum())
            bands[f"{lo}-{hi if hi < 10_000 else 'inf'}px"] = {"n": int(m.sum()), "accuracy": k / max(1, int(m.sum())), "ci95": wilson(k, int(m.sum()))}
        out["face_accuracy_by_height"] = bands
    return out


def rounded(v: float, nd: int = 4) -> Optional[float]:
    """Rounded, or None for NaN (JSON has no NaN)."""
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


def sidecar_metrics(m: Dict[str, object], info: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """The compact subset of ``evaluate_bytes`` that goes into the sidecar's ``metrics`` (``info``: the crops' build info)."""
    pc = m["per_class"]
    return {
        "dataset": ("scenes-ilc2021 val split: faces as the shipped detector frames them (IoU >= 0.5 with an annotated face), "
                    "cut with the sidecar crop and its keypoints, plus not_face boxes" if _framed_by_detector(info or {}) else
                    "scenes-ilc2021 val split: annotated face boxes cut with the sidecar crop (no jitter), plus not_face boxes"),
        "val_crops": m["val_crops"],
        "face_accuracy": rounded(m["face_accuracy"]),
        "recall": {k: rounded(v["recall"]) for k, v in pc.items()},
        "precision": {k: rounded(v["precision"]) for k, v in pc.items()},
        "mask_called_no_mask": rounded(m["mask_called_no_mask"]),
        "faces_called_not_face": rounded(m["faces_called_not_face"]),
        "int8_float_agreement": rounded(m.get("int8_float_agreement", float("nan"))),
        "ece": rounded(m["reliability"]["ece"]),
        "latency_ms_1thread": rounded(m["latency_ms_1thread"], 3),
        **({"thresholds": m["thresholds"]} if "thresholds" in m else {}),
    }


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rows[i, j]:.0%}", ha="center", va="center", fontsize=8, color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cd.LABELS)), cd.LABELS, rotation=30, ha="right")
    ax.set_yticks(range(len(cd.LABELS)), cd.LABELS)
    ax.set_xlabel("predicted (int8)")
    ax.set_ylabel("true")
    ax.set_title("Mask classifier, scenes-ilc2021 val crops")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(rel: Dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.4, 4.4))
    b = rel["bins"]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.bar([r["lo"] for r in b], [r["accuracy"] for r in b], width=0.1, align="edge", alpha=0.7, edgecolor="k", label="accuracy")
    ax.plot([r["confidence"] for r in b], [r["accuracy"] for r in b], "o", color="C3", label="mean confidence")
    ax.set_xlabel("top-1 probability (after temperature)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability, ECE {rel['ece']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %" if v is not None and math.isfinite(v) else "-"


def _errors_of(m: Dict[str, object], label: str) -> str:
    """'called X n times, Y m times' for one true class, from the confusion matrix."""
    i = cd.LABELS.index(label)
    row = m["confusion"][i]
    errs = [f"{cd.LABELS[j]} {row[j]}" for j in np.argsort(row)[::-1] if j != i and row[j] > 0]
    return "called " + ", ".join(errs) if errs else "none"


def _height_line(m: Dict[str, object]) -> str:
    bands = m.get("face_accuracy_by_height")
    if not bands:
        return "- Accuracy by face size was not measured (crop cache without box heights)."
    filled = {k: v for k, v in bands.items() if v["n"]}
    worst = min(filled.items(), key=lambda kv: kv[1]["accuracy"])
    best = max(filled.items(), key=lambda kv: kv[1]["accuracy"])
    overlap = worst[1]["ci95"][1] >= best[1]["ci95"][0]
    return (
        f"- Weakest face-size band on val: {worst[0]} ({_pct(worst[1]['accuracy'])}, n={worst[1]['n']}, CI "
        f"{_pct(worst[1]['ci95'][0])}-{_pct(worst[1]['ci95'][1])}); "
        + ("its interval overlaps the best band's, so size is not a measured weakness here." if overlap
           else f"clearly below the best band {best[0]} ({_pct(best[1]['accuracy'])}).")
    )


def _detector_line(info: Dict[str, object]) -> str:
    """The data bullet for faces framed by the agent's own detector (maskwatch-convert classifier-data --agent-detector)."""
    d = info.get("agent_detector")
    if not d:
        return "- No faces framed by the shipped detector: scene faces are cut from jittered annotator boxes."
    sizes = " and ".join(f"{v:g}x" for v in d.get("scales", [1.0, 0.6]))
    line = (f"- **Faces as the agent frames them**: `train` scenes run through `{d['model']}` at {sizes} size; every "
            f"detection overlapping an annotated face (IoU >= 0.4) cut by the agent's own path (its box, levelled by its eye "
            f"keypoints) with that face's label: {d['matched']} crops ({d['loose']} loose boxes and {d['unannotated']} "
            "detections of no annotated face, mostly people the annotators did not box, left out: never used as not_face).")
    v = d.get("val")
    if v:
        line += (f" **`val` faces are cut the same way** (full size, the pipeline's matching rule: IoU >= 0.5 with an annotated "
                 f"face): {v['matched']} faces found and scored; {v['missed']} annotated faces the detector misses (or boxes too "
                 "loosely) are not classifier faces and are left out, as the whole-pipeline figures count them.")
    return line


def _synthetic_line(info: Dict[str, object]) -> str:
    syn = info.get("synthetic")
    if not syn:
        return "- No synthetic faces: every training face is a real photo (or the faces/ sets' own pasted masks)."
    rec = syn.get("held_out_recall", {})
    det = (syn.get("agent_detector") or {}).get("model")
    if det:
        how = (f"pasted from the keypoints of `{det}` (eyes, nose tip, mouth corners), a third each over nose and mouth (`mask`), "
               "just under the nose and on the chin (`incorrect_mask`), each template equally often in all three "
               f"({json.dumps(syn.get('placements') or {})}); the masked image goes through the detector again and is cut "
               "from the box and keypoints it finds there, as the agent would cut it")
    else:
        how = ("pasted from BlazeFace keypoints, half placed correctly (`mask`), half lowered under the nose or onto the chin "
               "(`incorrect_mask`), each template equally often in both")
    return (
        f"- **Synthetic** (mask-templates, aqeelanwar/MaskTheFace, MIT): {syn['train']} crops of unmasked train faces with a frontal template "
        f"{how}. Scored apart on a held-out tenth of their source images "
        f"({syn['held_out']} crops): recall {json.dumps({k: round(v, 3) for k, v in rec.items()})}. The metrics below are real faces only."
    )


def _framed_by_detector(info: Dict[str, object]) -> bool:
    """Whether the val faces were cut as the agent's detector frames them (classifier-data --agent-detector)."""
    return bool((info.get("agent_detector") or {}).get("val"))


def _alert_lines(m: Dict[str, object]) -> List[str]:
    """The card's alert-decision block: the operating point chosen on the tuning fold and the
    trade-off curve there (where it was chosen) and on val (where it is only reported)."""
    curves = [(k, name) for k, name in (("alert_curve_tune", "tuning fold"), ("alert_curve_val", "val")) if m.get(k)]
    if not curves:
        return []
    lines = ["", "### The alert decision (`alert.labels`: incorrect_mask, no_mask; `classifier.thresholds`)"]
    if "thresholds" in m:
        lines.append(
            f"Chosen on the tuning fold ({m.get('tune_crops', 0)} crops of faces >= {TUNE_MIN_FACE_PX:g} px "
            + ("cut from the annotators' boxes" if m.get("tune_framing") == "annotator boxes" else "as the detector frames them")
            + ", from held-out train images never trained on): **`classifier.thresholds: "
            f"{thresholds_words(m['thresholds'])}`**, the point alerting on the most incorrectly worn masks without alerting "
            "on more masked faces than the arg-max.")
    else:
        lines.append("No tuning fold was held out of this model's training, so no threshold is chosen here; the val "
                     "curve is reported, not chosen on.")
    lines[-1] += (" Each cell: incorrectly worn masks alerted (as `incorrect_mask` or `no_mask`) / masked faces falsely "
                  f"alerted / unmasked alerted, of the faces >= {TUNE_MIN_FACE_PX:g} px:")
    lines += ["", "| `classifier.thresholds` | " + " | ".join(name for _, name in curves) + " |",
              "|---" * (1 + len(curves)) + "|"]
    for i, row in enumerate(m[curves[0][0]]):
        cells = []
        for key, _ in curves:
            r = m[key][i]
            cells.append(" / ".join(f"{r[k]['k']}/{r[k]['n']} ({_pct(r[k]['rate'])})"
                                    for k in ("incorrect_alerted", "mask_alerted", "no_mask_alerted")))
        lines.append(f"| `{thresholds_words(row['thresholds'])}` | " + " | ".join(cells) + " |")
    return lines


# sidecar provenance.source_model prefixes of the trainers that start from pretrained trunks
PRETRAINED_SOURCES = ("convert/ports/landmark_keras.py", "convert/ports/mobilenet_keras.py")


def _pretrained(source: str) -> bool:
    """Whether a sidecar's provenance line names one of the pretrained-trunk trainers."""
    return any(source.startswith(p) for p in PRETRAINED_SOURCES)


def _origin(source: str, info: Dict[str, object], size: int) -> Tuple[str, List[str]]:
    """(the card's sentence on where the model comes from, its rebuild command lines): a pretrained
    trunk's own provenance line and trainer options, else the from-scratch CNN's defaults."""
    if _pretrained(source):
        what = (f"Backbone and training: {source}. The float master ships beside it as the sidecar's "
                "`provenance.float_model` (what `maskwatch-convert finetune` starts from).")
        return what, list(info.get("recipe") or [  # the trainer's own command lines; older exports: its defaults
            f"maskwatch-convert classifier-data --size {size} --out build/classifier_{size}/crops.npz",
            f"maskwatch-convert landmark-classifier --crops build/classifier_{size}/crops.npz --stride 16 --prelu dw \\",
            "    --freeze-epochs 1 --epochs 13 --lr 1e-3 --seed 0 --threads 2 --export --models-dir build/cand_models/NAME",
        ])
    return ("A depthwise-separable CNN trained from scratch here (no pretrained weights, no downloads).", [
        "maskwatch-convert classifier-data                # crops -> build/classifier/crops.npz (about 3 min)",
        "maskwatch-convert train-classifier --epochs 16 --export",
    ])


def _crops_path(rebuild: Sequence[str]) -> str:
    """Where the rebuild lines cache the crops: classifier-data's ``--out``, else its default."""
    for line in rebuild:
        words = line.split()
        if "classifier-data" in words and "--out" in words[:-1]:
            return words[words.index("--out") + 1]
    return str(cd.DEFAULT_CROPS.relative_to(REPO_ROOT))


def card_section(m: Dict[str, object], info: Dict[str, object], sidecar: Dict[str, object]) -> str:
    """The "Mask classifier" section of MODEL_CARD.md, markers included."""
    pc = m["per_class"]
    cfg = info.get("config", {})
    size = int(sidecar["input"]["width"])
    source = str(sidecar.get("provenance", {}).get("source_model", ""))
    what, rebuild = _origin(source, info, size)
    pretrained = _pretrained(source)
    lines = [
        START,
        "## Mask classifier (`mask_classifier.tflite`)",
        "",
        f"int8 TFLite, {sidecar['input']['width']}x{sidecar['input']['height']} RGB crop in, 4 logits out "
        f"(`{', '.join(cd.LABELS)}`; `not_face` is dropped by the agent). Probabilities = softmax(logits / {m['temperature']:.3f}). "
        + what,
        "",
        "### Data",
        "- **scenes-ilc2021** (ILC 2021 face-mask dataset, jolignier/face-mask-dataset-ilc-2021; no licence file was published): "
        "`train` split faces cut several times with box jitter (centre +-8 %, size +-10 %, like detector boxes) and a roll of +-10 degrees; "
        + ("`val` split used only for the figures below (faces as the shipped detector frames them)." if _framed_by_detector(info)
           else "`val` split used only for temperature fitting and the figures below."),
        "- **faces/web** (chandrikadeb7/Face-Mask-Detection, MIT) and **faces/vggface2**, **faces/vggface2-synthetic** "
        "(datarootsio/tutorial-face-mask-detection, MIT repository; VGGFace2 faces; the synthetic set has masks pasted on): "
        + (f"each image re-framed by the agent's detector `{info.get('face_detector', {}).get('model')}` (padded by a quarter of its "
           "height, as a letterboxed frame shows a face) and cut from its box, levelled by its eye keypoints, as at run time. "
           if "dx" not in info.get("face_detector", {}) else
           "each image re-framed with MediaPipe BlazeFace short range (Apache-2.0), its box mapped to the annotators' convention "
           f"(fitted on scene faces: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in info.get('face_detector', {}).items()})}), "
           "then cut like a scene face. ")
        + f"Images without a detected face were skipped: {json.dumps(info.get('faces_skipped', {}))}.",
        "- **not_face**: random background boxes of scene images (IoU < 0.1 and < 10 % of any face inside the crop) and partial-face boxes "
        "(a face cut by the crop border or a close-up of one feature, < 35 % of any face inside).",
        f"- Crops: `agent.pipeline.crop.crop_face` with `crop` = {json.dumps(sidecar['crop'])}; annotator boxes with keypoints=None plus the "
        "roll augmentation, detector-framed faces levelled by the detector's eye keypoints as at run time. "
        f"Train crops per class: {json.dumps(info.get('train_counts', {}))}; val: {json.dumps(info.get('val_counts', {}))}.",
        _detector_line(info),
        _synthetic_line(info),
        f"- Training augmentation: horizontal flip, brightness/contrast/saturation/hue, shrink to 10-{size} px and back (p=0.5), blur, grey, noise. "
        "Balanced class weights (capped at 3), AdamW + cosine LR" + ("." if pretrained else ", BatchNorm momentum 0.9."),
        "",
        ("### Metrics (int8, LiteRT, scenes-ilc2021 `val` faces as the shipped detector frames them)" if _framed_by_detector(info)
         else "### Metrics (int8, LiteRT, scenes-ilc2021 `val` crops, annotator boxes)"),
        "Inputs are quantized through the same pixel table as `agent.model` (float64, `np.round`), so these are the agent's numbers.",
        "",
        f"Face accuracy (3 face classes, {sum(pc[k]['n'] for k in FACE_LABELS)} faces): **{_pct(m['face_accuracy'])}** "
        f"(95 % CI {_pct(m['face_accuracy_ci95'][0])}-{_pct(m['face_accuracy_ci95'][1])}).",
        "",
        "| class | n | recall (95 % CI) | precision (95 % CI) | target recall |",
        "|---|---|---|---|---|",
    ]
    target = {"mask": "≥ 97 %", "incorrect_mask": "≥ 85 %", "no_mask": "≥ 97 %", "not_face": "-"}
    for lab in cd.LABELS:
        r = pc[lab]
        lines.append(
            f"| {lab} | {r['n']} | {_pct(r['recall'])} ({_pct(r['recall_ci95'][0])}-{_pct(r['recall_ci95'][1])}) | "
            f"{_pct(r['precision'])} ({_pct(r['precision_ci95'][0])}-{_pct(r['precision_ci95'][1])}) | {target[lab]} |"
        )
    lines += [
        "",
        f"- Masked faces called `no_mask`: **{_pct(m['mask_called_no_mask'])}** (CI {_pct(m['mask_called_no_mask_ci95'][0])}-{_pct(m['mask_called_no_mask_ci95'][1])}; target ≤ 1 %). "
        f"Faces dropped as `not_face`: {_pct(m['faces_called_not_face'])}.",
        f"- int8/float top-1 agreement: **{_pct(m.get('int8_float_agreement', float('nan')))}** (target ≥ 99 %); "
        f"float face accuracy {_pct(m.get('float_face_accuracy', float('nan')))}.",
        f"- Calibration: ECE {m['reliability']['ece']:.3f} after temperature {m['temperature']:.3f} "
        + ("(fitted on the tuning fold of train), " if "thresholds" in m else "(fitted on these same val logits, so optimistic), ")
        + f"{m['ece_uncalibrated']:.3f} before.",
        f"- Size: **{m['size_bytes'] / 1024:.0f} KB** (target ≤ 500 KB). Latency: **{m['latency_ms_1thread']:.3f} ms per crop**, 1 thread, "
        "median of 300 invokes on the build machine's CPU (x86-64, shared; target ≤ 0.3 ms).",
    ]
    if "face_accuracy_by_height" in m:
        lines.append(
            "- Face accuracy by face-box height: "
            + "; ".join(f"{k}: {_pct(v['accuracy'])} (n={v['n']})" for k, v in m["face_accuracy_by_height"].items())
            + "."
        )
    lines += _alert_lines(m)
    lines += [
        "",
        "![confusion](figures/classifier_confusion.png) ![reliability](figures/classifier_reliability.png)",
        "",
        "### Rebuild",
        "```",
        *rebuild,
        "maskwatch-convert evaluate-classifier            # figures + this generated block, from the shipped .tflite",
        "```",
        f"Data root `--data-root` (default `../shared/datasets`); seed {cfg.get('seed', 0)}; crops cached in `{_crops_path(rebuild)}`.",
        "",
        "Review the candidate's card section and parity report, then copy its `mask_classifier.tflite`,",
        "`.json` (with `provenance.float_model` set), `.parity.*` and figures into `models/`, with",
        "`OUT_DIR/mask_classifier.keras` saved weights-only as `models/mask_classifier.keras`",
        "(`convert.train.finetune.keras_bytes`), and update `SHA256SUMS`. Hand-written notes (why a model",
        "ships, what was tried) go after the classifier end marker, which this block never passes.",
        "",
        "### Known failure cases and limits",
        "- `incorrect_mask` is rare (383 real train faces, 78 val faces: its recall is known to about +-9 points); "
        f"its val errors: {_errors_of(m, 'incorrect_mask')}. Masked val faces' errors: {_errors_of(m, 'mask')}; "
        f"unmasked: {_errors_of(m, 'no_mask')}.",
        _height_line(m),
        ("- Validation covers the faces the shipped detector finds (IoU >= 0.5): its misses are the detector's, counted by the whole-pipeline figures."
         if _framed_by_detector(info) else
         "- Validation uses annotator boxes without eye alignment; detector boxes and keypoint alignment at run time differ slightly."),
        "- The faces/ sets' tight crops show replicated border pixels more often than scene faces"
        + ("." if "thresholds" in m else "; the temperature and metrics are from the same val split."),
        "- Not tested on infrared/night images, heavy occlusion (hands, scarves) or profile faces beyond ~45 degrees.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_outputs(models_dir: Path, m: Dict[str, object], info: Dict[str, object], sidecar: Dict[str, object]) -> None:
    """Figures under models/figures/ and the card section."""
    fig_dir = models_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    plot_confusion(np.asarray(m["confusion"]), fig_dir / "classifier_confusion.png")
    plot_reliability(m["reliability"], fig_dir / "classifier_reliability.png")
    update_card(models_dir / "MODEL_CARD.md", card_section(m, info, sidecar), START, END)


def float_master(model: Path, sidecar: Dict[str, object]) -> Optional[Path]:
    """The float Keras model the sidecar's ``provenance.float_model`` names beside ``model``, or None."""
    name = (sidecar.get("provenance") or {}).get("float_model")  # type: ignore[union-attr]
    return model.parent / str(name) if name else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="evaluate-classifier", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "mask_classifier.tflite",
                   help="the int8 .tflite, or its sidecar .json (as the agent's config names it)")
    p.add_argument("--crops", type=Path, default=cd.DEFAULT_CROPS)
    p.add_argument("--keras", type=Path, default=None,
                   help="float model for the int8/float agreement (default: the float master the sidecar's"
                        " provenance.float_model names beside the model; skipped when missing)")
    p.add_argument("--no-write", action="store_true", help="print the metrics only")
    a = p.parse_args(argv)
    if a.model.suffix == ".json" and a.model.is_file():  # a sidecar: the model file it names, beside it
        try:
            a.model = a.model.with_name(str(read_sidecar(a.model, "classifier")["model_file"]))
        except ModelError as exc:
            print(f"error: {a.model}: not a classifier sidecar\n  {exc}", file=sys.stderr)
            return 2
    sidecar_path = a.model.with_suffix(".json")
    train = "train one with maskwatch-convert landmark-classifier --export (the model card's Rebuild lines)"
    for f, fix in ((a.model, train), (sidecar_path, train),
                   (a.crops, f"make it with maskwatch-convert classifier-data --size SIZE --out {a.crops}")):
        if not f.is_file():
            print(f"error: {f} not found; {fix}", file=sys.stderr)
            return 2
    sidecar = json.loads(sidecar_path.read_text())
    tr, va, info = cd.load_crops(a.crops)
    prov = sidecar.get("provenance", {})
    if prov.get("recipe"):
        info["recipe"] = prov["recipe"]
    # what the trainer added to the crops' info (synthetic crops, the tuning fold) lives in the sidecar
    info.update({k: v for k, v in (prov.get("crops") or {}).items() if k in ("synthetic", "tune_fold")})
    fold = (info.get("tune_fold") or {}).get("fraction")
    tune = cd.tune_set(tr, float(fold)) if fold else None
    if va.x.shape[1] != sidecar["input"]["height"]:
        print(f"error: {a.crops} holds {va.x.shape[1]} px crops but {sidecar_path} input.height is {sidecar['input']['height']}; rebuild the crops with --size", file=sys.stderr)
        return 2
    model = None
    keras_path = a.keras or float_master(a.model, sidecar)
    if keras_path is not None and keras_path.is_file():

        model = tensorflow().keras.models.load_model(keras_path)
    else:
        print(f"note: no float model ({keras_path or 'the sidecar names none'}): int8/float agreement not measured",
              file=sys.stderr)
    m = evaluate_bytes(a.model.read_bytes(), va, float(sidecar["output"]["temperature"]),
                       sidecar["input"]["normalization"], model=model, tune_set=tune)
    print(json.dumps(sidecar_metrics(m, info), indent=1))
    if not a.no_write:
        write_outputs(a.model.parent, m, info, sidecar)
        print(f"wrote {a.model.parent / 'figures'} and {a.model.parent / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
