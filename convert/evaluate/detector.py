"""The one scorer for face detectors: every figure in the detector's reports comes from here.

A detector is always run through the agent's own :class:`agent.pipeline.detect.FaceDetector` (letterbox,
decoding, weighted NMS, ``box_adjust``), whether it is a shipped ``.tflite`` or a Keras model in
training (wrapped by :class:`KerasModel`), so training, conversion and run time score the same way.

Matching: per image, detections in descending score are matched greedily to the unmatched
annotated face with the highest IoU >= 0.5; unmatched detections are false detections (a detection
of a small annotated face is a hit, not a false detection). Recall is reported per label for faces
>= ``min_height`` px tall (the target) and for all faces. Greedy matching in score order does not
depend on the threshold, so one run at a low score gives the whole recall / false-detection curve;
the figures at an operating point are recomputed with the detector's own ``min_score`` set to it
(weighted NMS averages only boxes above the threshold). Thresholds are chosen on held-out data,
never on the split that is reported.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from agent.pipeline.detect import DetectorConfig, FaceDetector
from agent.tools.scoring import MATCH_IOU, match_greedy, wilson
from convert.data.detector import FACE_LABELS, Scene
from agent.pipeline.boxes import greedy_match, iou_matrix

MIN_HEIGHT = 40.0
LOW_SCORE = 0.02  # curve runs keep detections down to this score


class KerasModel:
    """A Keras detector dressed as :class:`agent.model.Model`, so :class:`FaceDetector` can run it.

    ``meta`` is a detector sidecar (its decoding and normalization); the input is float.
    """

    def __init__(self, model: Any, meta: Mapping[str, Any], name: str = "keras") -> None:
        self.keras = model
        self.meta = copy.deepcopy(dict(meta))
        self.meta["input"]["dtype"] = "float32"
        self.meta["input"]["quantization"] = None
        self.meta["name"] = name
        self.sidecar_path = Path(f"<{name}>")
        sig = tuple(model.inputs[0].shape)
        self.open_dims = tuple(i for i, d in enumerate(sig) if d is None)
        if not {1, 2} <= set(self.open_dims):
            # A Keras model of a fixed size (as trained) runs at the sidecar's size only.
            self.meta["input"].pop("adaptive_multiple", None)
        shapes = [tuple(t.shape[1:]) for t in model.outputs]

        def fits(shape: Tuple[Any, ...], want: Sequence[int]) -> bool:  # None: a dimension left open
            return len(shape) == len(want) and all(d is None or int(d) == int(w) for d, w in zip(shape, want))

        self._order = {name: next(i for i, shp in enumerate(shapes) if fits(shp, spec["shape"][1:]))
                       for name, spec in self.meta["outputs"].items()}

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def version(self) -> str:
        return "float"

    @property
    def input_size(self) -> Tuple[int, int]:
        return int(self.meta["input"]["width"]), int(self.meta["input"]["height"])

    def pixel_lut(self) -> np.ndarray:
        norm = self.meta["input"]["normalization"]
        x = (np.arange(256, dtype=np.float64)[:, None] - np.asarray(norm["mean"])) / np.asarray(norm["std"])
        return x.astype(np.float32)

    def run_raw(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        """Outputs by logical name; float, so :meth:`dequantize` is the identity."""
        outs = self.keras(tensor.astype(np.float32), training=False)
        outs = list(outs.values()) if isinstance(outs, dict) else list(outs)
        return {name: np.asarray(outs[i], np.float32) for name, i in self._order.items()}

    def dequantize(self, name: str, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, np.float32)

    def run(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        return self.run_raw(tensor)


def make_detector(model: Any, min_score: float) -> FaceDetector:
    """A FaceDetector (no size filter) around a loaded agent Model or a :class:`KerasModel`."""
    return FaceDetector(DetectorConfig(model="", min_score=min_score, min_face_px=0.0), model=model)


@dataclass
class ImageResult:
    """Detections of one image matched to its annotated faces."""

    scores: np.ndarray  # (D,) descending
    matched: np.ndarray  # (D,) index of the annotated face, -1 = false detection
    keypoints: np.ndarray  # (D, K, 2) image pixels
    boxes: np.ndarray  # (D, 4)
    labels: Tuple[str, ...]  # annotated faces
    heights: np.ndarray  # (M,) annotated face heights
    widths: np.ndarray  # (M,)


def match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray,
          iou_threshold: float = MATCH_IOU) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy score-ordered matching; returns (order of detections, matched face per detection).

    The rule is the agent's (:func:`agent.tools.scoring.match_greedy`, what ``maskwatch evaluate``
    scores with), so the detector's reports and the whole-pipeline figures cannot drift apart;
    this only reshapes its answer into arrays in score order (-1: a false detection).
    """
    scores = np.asarray(det_scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    matched = np.full(len(order), -1, np.int64)
    boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    per_face = match_greedy([(tuple(boxes[i]), float(scores[i])) for i in range(len(scores))],
                            [tuple(g) for g in np.asarray(gt_boxes, np.float64).reshape(-1, 4)], iou_threshold)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    for face, det in enumerate(per_face):
        if det is not None:
            matched[rank[det]] = face
    return order, matched


def run_detector(detector: FaceDetector, scenes: Sequence[Scene], load: Callable[[Scene], np.ndarray],
                 iou_threshold: float = MATCH_IOU) -> List[ImageResult]:
    """Detect on every scene (``load`` gives its BGR pixels) and match to the annotations."""
    results = []
    for s in scenes:
        faces = detector.detect(load(s))
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        scores = np.array([f.face_score for f in faces], np.float64)
        k = len(detector.keypoint_names) or 6
        kps = np.array([f.keypoints for f in faces], np.float32).reshape(len(faces), k, 2)
        order, matched = match(boxes, scores, s.boxes, iou_threshold)
        results.append(ImageResult(scores[order], matched, kps[order], boxes[order], tuple(s.labels),
                                   s.boxes[:, 3] - s.boxes[:, 1], s.boxes[:, 2] - s.boxes[:, 0]))
    return results


def metrics_at(results: Sequence[ImageResult], threshold: float, min_height: float = MIN_HEIGHT) -> Dict[str, Any]:
    """Recall per label (faces >= min_height tall, and all faces) and false detections per image."""
    hits: Dict[str, List[int]] = {k: [0, 0] for k in FACE_LABELS}
    hits_all: Dict[str, List[int]] = {k: [0, 0] for k in FACE_LABELS}
    false = 0
    for r in results:
        keep = r.scores >= threshold
        found = set(int(j) for j in r.matched[keep] if j >= 0)
        false += int(np.sum(r.matched[keep] < 0))
        for j, (label, h) in enumerate(zip(r.labels, r.heights)):
            for table, counted in ((hits_all, True), (hits, h >= min_height)):
                if counted:
                    table[label][1] += 1
                    table[label][0] += int(j in found)
    n_img = max(len(results), 1)

    def rec(table: Dict[str, List[int]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for k, (hit, n) in table.items():
            out[k] = {"recall": hit / n if n else float("nan"), "found": hit, "faces": n,
                      "interval95": list(wilson(hit, n))}
        tot_hit = sum(v[0] for v in table.values())
        tot = sum(v[1] for v in table.values())
        out["all"] = {"recall": tot_hit / tot if tot else float("nan"), "found": tot_hit, "faces": tot,
                      "interval95": list(wilson(tot_hit, tot))}
        return out

    return {
        "threshold": float(threshold),
        "images": len(results),
        "false_per_image": false / n_img,
        "false": false,
        f"recall_ge{int(min_height)}px": rec(hits),
        "recall_all_sizes": rec(hits_all),
    }


def curve(results: Sequence[ImageResult], min_height: float = MIN_HEIGHT) -> Dict[str, np.ndarray]:
    """Recall (faces >= min_height, per label and all) and false detections/image at every score."""
    thresholds = np.unique(np.concatenate([r.scores for r in results] + [np.array([1.0])]))[::-1]
    if len(thresholds) > 400:  # plenty for a figure; keeps the sweep fast
        thresholds = thresholds[np.linspace(0, len(thresholds) - 1, 400).astype(int)]
    out: Dict[str, List[float]] = {"threshold": [], "false_per_image": []}
    for k in FACE_LABELS + ("all",):
        out[k] = []
    for t in thresholds:
        m = metrics_at(results, float(t), min_height)
        out["threshold"].append(float(t))
        out["false_per_image"].append(m["false_per_image"])
        for k in FACE_LABELS + ("all",):
            out[k].append(m[f"recall_ge{int(min_height)}px"][k]["recall"])
    return {k: np.asarray(v) for k, v in out.items()}


def choose_threshold(results: Sequence[ImageResult], max_false_per_image: float = 0.05,
                     floor: float = LOW_SCORE) -> float:
    """Lowest score threshold whose false detections per image stay <= the budget.

    Lowest = the most recall the budget allows. ``results`` must be held-out data, not the split
    that is reported.
    """
    scores = np.unique(np.concatenate([r.scores for r in results] + [np.array([1.0])]))
    n_img = max(len(results), 1)
    false_scores = np.sort(np.concatenate([r.scores[r.matched < 0] for r in results] + [np.zeros(0)]))[::-1]
    allowed = int(math.floor(max_false_per_image * n_img))  # this many false detections may pass
    # threshold just above the (allowed+1)-th highest false-detection score
    if len(false_scores) <= allowed:
        return float(max(floor, scores.min()))
    limit = false_scores[allowed]
    above = scores[scores > limit]
    # midway to the next score up: the same decisions on held-out data, no bias toward either side
    return float(max(floor, (limit + above.min()) / 2 if len(above) else 1.0))


def keypoint_shift(a: Sequence[ImageResult], ta: float, b: Sequence[ImageResult], tb: float) -> Dict[str, float]:
    """How far detector b's keypoints lie from detector a's on the faces both find, in face widths.

    Returns the median and 90th percentile of the mean per-face distance, and per keypoint medians
    of the two eyes (what the crop alignment uses).
    """
    per_face, eyes = [], []
    for ra, rb in zip(a, b):
        for j, w in enumerate(ra.widths):
            ia = np.flatnonzero((ra.matched == j) & (ra.scores >= ta))
            ib = np.flatnonzero((rb.matched == j) & (rb.scores >= tb))
            if len(ia) and len(ib):
                d = np.linalg.norm(ra.keypoints[ia[0]] - rb.keypoints[ib[0]], axis=1) / max(float(w), 1.0)
                per_face.append(float(d.mean()))
                eyes.append(float(d[:2].mean()))
    if not per_face:
        return {"faces": 0}
    return {"faces": len(per_face), "median": float(np.median(per_face)),
            "p90": float(np.percentile(per_face, 90)), "eyes_median": float(np.median(eyes))}


SIZE_BINS: Tuple[float, ...] = (0.0, 12.0, 16.0, 20.0, 28.0, 40.0)  # face height at the model input, px


def false_detection_kinds(results: Sequence[ImageResult], scenes: Sequence[Scene], threshold: float) -> Dict[str, int]:
    """Why the detections at ``threshold`` are false, by their best IoU with any annotated face.

    ``duplicate`` (>= 0.5: the face was already taken by a better-scored detection), ``loose_box``
    (0.3-0.5: a face the detector boxed much tighter or looser than the annotators drew it -- a
    miss *and* a false detection), ``near_face`` (0.1-0.3), ``background`` (< 0.1).
    """
    kinds = {"duplicate": 0, "loose_box": 0, "near_face": 0, "background": 0}
    for r, s in zip(results, scenes):
        for k in np.flatnonzero((r.scores >= threshold) & (r.matched < 0)):
            best = float(iou_matrix(r.boxes[k:k + 1], s.boxes).max()) if len(s.boxes) else 0.0
            kind = ("duplicate" if best >= MATCH_IOU else "loose_box" if best >= 0.3
                    else "near_face" if best >= 0.1 else "background")
            kinds[kind] += 1
    return kinds


def recall_by_input_size(results: Sequence[ImageResult], scenes: Sequence[Scene], threshold: float,
                         input_wh: Tuple[int, int], min_height: float = MIN_HEIGHT) -> List[Dict[str, Any]]:
    """Recall of faces >= ``min_height`` px by their height at the model input (letterbox scale).

    One row per bin of :data:`SIZE_BINS` (from its lower edge to the next): what a detector misses
    because the face is small at its input, rather than masked or badly boxed.
    """
    found = np.zeros(len(SIZE_BINS))
    total = np.zeros(len(SIZE_BINS))
    for r, s in zip(results, scenes):
        scale = min(input_wh[0] / s.width, input_wh[1] / s.height)
        hit = set(int(j) for j in r.matched[r.scores >= threshold] if j >= 0)
        for j, h in enumerate(r.heights):
            if h >= min_height:
                b = int(np.searchsorted(SIZE_BINS, h * scale, side="right")) - 1
                total[b] += 1
                found[b] += j in hit
    edges = list(SIZE_BINS[1:]) + [math.inf]
    return [{"input_px": [lo, hi], "faces": int(n), "found": int(k), "recall": k / n if n else float("nan")}
            for lo, hi, n, k in zip(SIZE_BINS, edges, total, found)]


def plot_curves(curves: Mapping[str, Tuple[Dict[str, np.ndarray], float]], path: Path,
                title: str = "", max_fp: float = 0.5) -> None:
    """PNG of recall (faces >= 40 px, all labels and per label) against false detections / image.

    ``curves``: name -> (curve, chosen threshold); each operating point is marked.
    """
    import matplotlib  # noqa: PLC0415 - plotting is only for reports

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharey=True)
    for ax, key in zip(axes, ("all",) + FACE_LABELS):
        for name, (c, thr) in curves.items():
            line, = ax.plot(c["false_per_image"], c[key], label=name, drawstyle="steps-post")
            i = int(np.argmin(np.abs(c["threshold"] - thr)))
            ax.plot(c["false_per_image"][i], c[key][i], "o", color=line.get_color())
        ax.set_xlim(0, max_fp)
        ax.set_title(f"{key} (faces >= 40 px)")
        ax.set_xlabel("false detections / image")
        ax.grid(alpha=0.3)
        ax.axhline(0.97, color="k", lw=0.5, ls="--")
        ax.axvline(0.05, color="k", lw=0.5, ls="--")
    axes[0].set_ylabel("recall (IoU >= 0.5)")
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def face_parity(float_model: Any, int8_model: Any, scenes: Sequence[Any], load: Callable[[Any], np.ndarray],
                min_score: float, iou_match: float = 0.9) -> Dict[str, Any]:
    """Float vs int8 faces (frame pixels, the agent's detector on both) matched at IoU >= ``iou_match``."""

    df, dq = make_detector(float_model, min_score), make_detector(int8_model, min_score)
    n_f = n_q = kept = kept50 = 0
    ious, sdiff = [], []
    for s in scenes:
        img = load(s)
        ff, fq = df.detect(img), dq.detect(img)
        bf = np.array([f.box for f in ff]).reshape(-1, 4)
        bq = np.array([f.box for f in fq]).reshape(-1, 4)
        iou = iou_matrix(bf, bq)
        pairs = greedy_match(iou, iou_match)
        n_f, n_q, kept, kept50 = n_f + len(ff), n_q + len(fq), kept + len(pairs), kept50 + len(greedy_match(iou, 0.5))
        ious += [float(iou[i, j]) for i, j in pairs]
        sdiff += [abs(ff[i].face_score - fq[j].face_score) for i, j in pairs]
    return {
        "n_images": len(scenes), "min_score": min_score, "iou_match": iou_match,
        "faces_float": n_f, "faces_int8": n_q, "kept_fraction": round(kept / n_f, 5) if n_f else 1.0,
        "kept_fraction_iou50": round(kept50 / n_f, 5) if n_f else 1.0,
        "matched_iou_mean": round(float(np.mean(ious)), 5) if ious else None,
        "score_diff_mean": round(float(np.mean(sdiff)), 5) if sdiff else None,
        "score_diff_max": round(float(np.max(sdiff)), 5) if sdiff else None,
    }


__all__ = ["KerasModel", "ImageResult", "face_parity", "make_detector", "match", "run_detector", "metrics_at", "curve",
           "choose_threshold", "keypoint_shift", "plot_curves", "wilson", "false_detection_kinds",
           "recall_by_input_size", "SIZE_BINS"]
