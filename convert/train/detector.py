"""Fine-tune BlazeFace to find masked and unmasked faces, in the annotators' box convention.

Starts from a Keras rebuild of an original MediaPipe model -- full or short range, at its own input
size or another one (``--variant``, ``--input WxH``: e.g. the short-range graph at 192x144 fills a
4:3 camera frame with no letterbox padding at ~1.4 ms) -- trains all weights on
``scenes-ilc2021`` train views (:mod:`convert.data.detector`), keeps a held-out slice of train to
choose the score threshold, scores the original and the fine-tuned model, float and int8, on ``val``
with the one scorer (:mod:`convert.evaluate.detector`), and with ``--export`` writes the int8 model as
``models/<stem>.{tflite,json}`` (``--stem``, default ``face_detector_door``; config.yaml's
``detector.model`` decides which one runs), its parity report and ``models/figures/<stem>_pr.png``.

Keypoint targets always come from the original full-range model (``--baseline`` sidecar,
``--original-tflite``) at its own 192x192 input, whatever the trained model's variant and size.

Loss: sigmoid cross-entropy on positives and hard-mined negatives (3 per positive, per image),
smooth-L1 on box offsets and on keypoints toward the ORIGINAL model's keypoints, both divided by
the face size (an error of 10 % of the face costs the same for every face size).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from convert.data import detector as dd
from convert.ports.blazeface_keras import ANCHORS, FACE_DIR, MODEL_FILES, mediapipe_dir
from convert.data.classifier import DEFAULT_FACE_DETECTOR, FaceFinder, read_scene_faces
from convert.data.masks import load_mask_templates
from convert.export.face_detector import sidecar_template
from convert.export.representative import source_sha256
from convert.errors import float_in, input_size_type, open_fraction
from convert.tf import tensorflow, tf_threads
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT

BUILD_DIR = REPO_ROOT / "build" / "detector"
KERAS_DIR = REPO_ROOT / "build" / "keras"
ORIGINAL_TFLITE = mediapipe_dir() / FACE_DIR / MODEL_FILES["full"]  # fetched by ensure_mediapipe()
STEM = "face_detector_door"
# faces/ folders blended into training views, with the face label each stands for
COMPOSITE_FOLDERS: Dict[str, str] = {"web/mask": "mask", "vggface2-synthetic/mask": "mask",
                                     "web/no_mask": "no_mask", "vggface2/no_mask": "no_mask"}
BOX_GAIN = 10.0  # offsets / face size * 10: SSD's "variance 0.1", errors of ~1 for a sloppy box


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; stored with the trained model."""

    steps: int = 0  # 0: as many as fit in ``minutes`` (measured after a few steps)
    minutes: float = 35.0
    batch: int = 16
    lr: float = 2e-4
    warmup_steps: int = 100
    final_lr_fraction: float = 0.05
    neg_ratio: float = 3.0
    min_negatives: int = 16
    box_weight: float = 1.0
    keypoint_weight: float = 0.5
    iou_weight: float = 0.0  # GIoU loss on positive anchors' boxes (0: smooth-L1 only)
    iou_score: bool = False  # positives' score target = their box's IoU with the face (IoU-aware score)
    seed: int = 0
    log_every: int = 25
    checkpoint_minutes: float = 5.0


def loss_terms(tf: Any, reg: Any, logits: Any, targets: Any, cfg: TrainConfig,
               scale: Optional[Sequence[float]] = None) -> Tuple[Any, Any, Any]:
    """(classification, box, keypoint) losses of a batch, each normalized by the positive count.

    ``reg`` (B, N, 16) raw regressors, ``logits`` (B, N, 1), ``targets`` (B, N, TARGET_DIM).
    With ``cfg.iou_score`` (``scale``: the decoding's box scale) a positive anchor's score target
    is the IoU of its own box with the face instead of 1, so a loosely drawn box scores lower than
    a tight one: the score ranks what the scorer (IoU >= 0.5) counts, not just "a face is here".
    """
    cls = targets[..., dd.T_CLS]
    pos = tf.cast(cls > 0.5, tf.float32)
    neg = tf.abs(cls) < 0.5
    z = logits[..., 0]
    label = pos
    if cfg.iou_score:
        if scale is None:
            raise ValueError("iou_score needs the decoding's box scale")
        label = pos * tf.stop_gradient(box_iou(tf, reg, targets, scale)[0])
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=z)
    n_pos = tf.reduce_sum(pos, axis=1)  # (B,)
    # hard negatives: the k highest-loss negatives of each image, k = ratio * positives
    k = tf.cast(tf.maximum(cfg.neg_ratio * n_pos, float(cfg.min_negatives)), tf.int32)
    k = tf.minimum(k, tf.shape(z)[1])
    neg_ce = tf.where(neg, tf.stop_gradient(ce), -1.0)
    # rank of each anchor by loss (exactly k per image even when losses tie)
    rank = tf.argsort(tf.argsort(neg_ce, axis=1, direction="DESCENDING", stable=True), axis=1, stable=True)
    hard = tf.cast(neg & (rank < k[:, None]), tf.float32)
    denom = tf.maximum(tf.reduce_sum(n_pos), 1.0)
    cls_loss = tf.reduce_sum(ce * (pos + hard)) / denom

    size = targets[..., dd.T_SIZE][..., None]
    err = (reg - targets[..., : dd.REG_DIM]) / size * BOX_GAIN
    a = tf.abs(err)
    sl1 = tf.where(a < 1.0, 0.5 * a * a, a - 0.5)
    box_loss = tf.reduce_sum(tf.reduce_sum(sl1[..., :4], axis=-1) * pos) / denom
    kp_w = pos * targets[..., dd.T_KPW]
    kp_loss = tf.reduce_sum(tf.reduce_mean(sl1[..., 4:], axis=-1) * 4.0 * kp_w) / tf.maximum(tf.reduce_sum(kp_w), 1.0)
    return cls_loss, box_loss, kp_loss


def box_iou(tf: Any, reg: Any, targets: Any, scale: Sequence[float]) -> Tuple[Any, Any]:
    """(IoU, GIoU) per anchor (B, N) between the predicted and the target box.

    BlazeFace decodes ``x = raw / x_scale * anchor_w + anchor_x`` and ``w = raw / w_scale *
    anchor_w`` with one anchor size per anchor, so both boxes can be compared in ``raw / scale``
    units: the anchor's offset and size cancel out of an IoU.
    """
    sx, sy, sw, sh = (float(v) for v in scale)

    def corners(r: Any) -> Tuple[Any, Any, Any, Any]:
        cx, cy = r[..., 0] / sx, r[..., 1] / sy
        w, h = tf.maximum(r[..., 2] / sw, 1e-6), tf.maximum(r[..., 3] / sh, 1e-6)
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    px1, py1, px2, py2 = corners(reg)
    tx1, ty1, tx2, ty2 = corners(targets)
    inter = tf.maximum(tf.minimum(px2, tx2) - tf.maximum(px1, tx1), 0.0) * tf.maximum(tf.minimum(py2, ty2) - tf.maximum(py1, ty1), 0.0)
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
    hull = (tf.maximum(px2, tx2) - tf.minimum(px1, tx1)) * (tf.maximum(py2, ty2) - tf.minimum(py1, ty1))
    iou = inter / union
    return iou, iou - (hull - union) / hull


def giou_loss(tf: Any, reg: Any, targets: Any, scale: Sequence[float]) -> Any:
    """Mean (1 - GIoU) between predicted and target boxes of the positive anchors.

    Smooth-L1 weighs each box coordinate alone; the scorer (and the annotators' convention) asks
    for overlap, which couples width and height.
    """
    pos = tf.cast(targets[..., dd.T_CLS] > 0.5, tf.float32)
    giou = box_iou(tf, reg, targets, scale)[1]
    return tf.reduce_sum((1.0 - giou) * pos) / tf.maximum(tf.reduce_sum(pos), 1.0)


def learning_rate(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1))
    f = cfg.final_lr_fraction
    return cfg.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t)))


def output_order(model: Any, decoding: dd.Decoding) -> Tuple[int, int]:
    """Indices of (regressors, scores) among the Keras model's outputs, found by shape."""
    shapes = [tuple(int(d) for d in t.shape[1:]) for t in model.outputs]
    n = len(decoding.anchors)
    try:
        return shapes.index((n, dd.REG_DIM)), shapes.index((n, 1))
    except ValueError:
        raise ValueError(f"the Keras model's outputs {shapes} are not ({n}, {dd.REG_DIM}) and ({n}, 1)") from None


class Batches:
    """Endless seeded stream of augmented training batches."""

    def __init__(self, scenes: Sequence[dd.Scene], images: Sequence[np.ndarray], dec: dd.Decoding,
                 aug: dd.AugmentConfig, batch: int, seed: int, templates: Sequence[Any] = (),
                 patches: Sequence[dd.FacePatch] = ()) -> None:
        self.scenes, self.images, self.dec, self.aug, self.batch = scenes, images, dec, aug, batch
        self.templates = templates  # mask templates for synthetic masks (aug.p_synthetic_mask)
        self.patches = patches  # faces/ photos to composite (aug.p_composite)
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> Tuple[np.ndarray, np.ndarray]:
        idx = self.rng.integers(len(self.scenes), size=self.batch)
        examples = [dd.augment(self.scenes[i], self.images[i], self.rng, self.aug, self.templates, self.patches) for i in idx]
        return dd.batch(examples, self.dec)


def train(model: Any, batches: Batches, dec: dd.Decoding, cfg: TrainConfig, out: Path,
          log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Fine-tune ``model`` in place; saves ``out`` every few minutes and at the end."""
    tf = tensorflow()
    tf.random.set_seed(cfg.seed)
    i_reg, i_score = output_order(model, dec)
    opt = tf.keras.optimizers.Adam(learning_rate=cfg.lr)
    lr_var = opt.learning_rate

    @tf.function(reduce_retracing=True)
    def step(x: Any, t: Any) -> Any:
        x = (tf.cast(x, tf.float32) - 127.5) / 127.5
        with tf.GradientTape() as tape:
            outs = model(x, training=True)
            c, b, k = loss_terms(tf, outs[i_reg], outs[i_score], t, cfg, dec.scale)
            loss = c + cfg.box_weight * b + cfg.keypoint_weight * k
            if cfg.iou_weight:
                loss += cfg.iou_weight * giou_loss(tf, outs[i_reg], t, dec.scale)
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 10.0)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return tf.stack([loss, c, b, k])

    total = cfg.steps or 10**9
    t0 = time.time()
    last_ckpt = t0
    hist: List[List[float]] = []
    run = np.zeros(4)
    data_s = 0.0
    s = 0
    t_probe = t0  # reset at step 10, once tracing is over
    while s < total:
        td = time.time()
        x, t = batches()
        data_s += time.time() - td
        lr_var.assign(learning_rate(s, total if cfg.steps else max(total, 1), cfg))
        vals = step(tf.constant(x), tf.constant(t)).numpy()
        run += vals
        s += 1
        if not cfg.steps and s == 20:
            # measured speed (tracing excluded) decides the schedule's length
            per = (time.time() - t_probe) / 10 if s > 10 else 1.0
            total = max(int(cfg.minutes * 60 / per), cfg.warmup_steps + 10)
            log(f"{per:.2f} s/step -> {total} steps in {cfg.minutes:.0f} min")
        if s == 10:
            t_probe = time.time()
        if s % cfg.log_every == 0:
            m = run / cfg.log_every
            hist.append([s, *m.tolist()])
            log(f"step {s}/{total if total < 10**9 else '?'} loss {m[0]:.3f} (cls {m[1]:.3f} box {m[2]:.3f}"
                f" kp {m[3]:.3f}) lr {float(lr_var.numpy()):.2e} {time.time() - t0:.0f} s (data {data_s:.0f} s)")
            run[:] = 0
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            model.save(out)
            last_ckpt = time.time()
        if not cfg.steps and time.time() - t0 > cfg.minutes * 60 * 1.1:
            log(f"time budget reached at step {s}")
            break
    model.save(out)
    return {"steps": s, "seconds": round(time.time() - t0, 1), "history": hist}


# ----------------------------------------------------------------------------- data and models

def split_holdout(scenes: Sequence[dd.Scene], fraction: float, seed: int) -> Tuple[List[dd.Scene], List[dd.Scene]]:
    """(train, held-out) scenes: a seeded fraction of train images kept out to choose thresholds."""
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(scenes))
    n_hold = int(round(len(scenes) * fraction))
    hold = set(order[:n_hold].tolist())
    return ([s for i, s in enumerate(scenes) if i not in hold], [s for i, s in enumerate(scenes) if i in hold])


def find_keras_source() -> Path:
    """The Keras rebuild of the original full-range model (``build/keras/*full_range*.keras``), the
    float baseline the reports score."""
    hits = sorted(KERAS_DIR.glob("*full_range*.keras"))
    if not hits:
        raise FileNotFoundError(f"no {KERAS_DIR}/*full_range*.keras; fix: build the Keras rebuild of BlazeFace"
                                " full range first (maskwatch-convert blazeface)")
    return hits[0]


def read_json(path: Path) -> Dict[str, Any]:
    """A JSON file, or FileNotFoundError naming it and the fix."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: detector sidecar not found; fix: build the baseline detector"
                                " (models/face_detector.json) first, or pass --baseline")
    return json.loads(path.read_text())


def representative(scenes: Sequence[dd.Scene], dec: dd.Decoding, n: int, seed: int) -> List[np.ndarray]:
    """Calibration inputs: letterboxed train scenes, normalized like the model input."""
    rng = np.random.default_rng(seed + 2)
    pick = rng.choice(len(scenes), size=min(n, len(scenes)), replace=False)
    out = []
    for i in pick:
        s = scenes[int(i)]
        view = dd.letterbox_example(s, dd.load_rgb(s.path), dec.size).image
        out.append(((view.astype(np.float32) - 127.5) / 127.5)[None])
    return out


# Output ranges kept when the outputs are int8 (a baseline sidecar with int8 outputs).
# Calibration min/max otherwise follow the garbage that background anchors regress (a regressor
# step of ~2 px, a score step of ~2.3 logits); clipped, a step is ~1.25 px and ~0.13 logits.
# With float outputs (float heads, see convert.export.quantize) the model is converted as it is.
REG_CLIP = (-128.0, 192.0)
SCORE_CLIP = (-16.0, 16.0)


def export_model(model: Any, dec: dd.Decoding) -> Any:
    """The trained model with its outputs clipped to REG_CLIP / SCORE_CLIP, for int8 conversion."""
    tf = tensorflow()
    keras = tf.keras
    i_reg, i_score = output_order(model, dec)
    inp = keras.Input(shape=tuple(model.inputs[0].shape[1:]), batch_size=1, name="input")
    outs = model(inp)
    reg = keras.layers.Activation(lambda x: keras.ops.clip(x, *REG_CLIP), name="regressors")(outs[i_reg])
    score = keras.layers.Activation(lambda x: keras.ops.clip(x, *SCORE_CLIP), name="scores")(outs[i_score])
    return keras.Model(inp, [reg, score], name="blazeface_ft_export")


# ----------------------------------------------------------------------------- scoring

def score_model(name: str, model: Any, holdout: Sequence[dd.Scene], val: Sequence[dd.Scene],
                load: Callable[[dd.Scene], np.ndarray], max_fp: float, log: Callable[[str], None] = print
                ) -> Dict[str, Any]:
    """Threshold chosen on ``holdout``; val metrics there and at 0.5; the val curve and results."""
    from convert.evaluate import detector as de  # noqa: PLC0415

    t0 = time.time()
    low = de.make_detector(model, de.LOW_SCORE)
    thr = de.choose_threshold(de.run_detector(low, holdout, load), max_fp)
    val_low = de.run_detector(low, val, load)
    at_thr = de.run_detector(de.make_detector(model, thr), val, load)
    at_half = de.run_detector(de.make_detector(model, 0.5), val, load)
    m, m_half = de.metrics_at(at_thr, thr), de.metrics_at(at_half, 0.5)
    for metrics, results, t in ((m, at_thr, thr), (m_half, at_half, 0.5)):
        metrics["false_kinds"] = de.false_detection_kinds(results, val, t)
        metrics["recall_by_input_px"] = de.recall_by_input_size(results, val, t, (low.width, low.height))
    r = m["recall_ge40px"]
    log(f"{name}: threshold {thr:.3f} (held-out) -> val recall mask {r['mask']['recall']:.3f} no_mask"
        f" {r['no_mask']['recall']:.3f} incorrect {r['incorrect_mask']['recall']:.3f}, false/img"
        f" {m['false_per_image']:.3f} ({time.time() - t0:.0f} s)")
    for tag, mm in (("held-out threshold", m), ("0.5", m_half)):
        sizes = ", ".join(f"{int(b['input_px'][0])}+ px {b['found']}/{b['faces']}" for b in mm["recall_by_input_px"])
        log(f"  {name} at {tag}: false detections by kind {mm['false_kinds']}; faces >= 40 px found by"
            f" height at the input: {sizes}")
    return {"threshold": thr, "val": m, "val_at_0.5": m_half,
            "curve": de.curve(val_low), "results": at_thr}


# What decides a score besides the model and the images: the scorer's and the agent detector's code.
SCORER_SOURCES = ("convert/evaluate/detector.py", "convert/data/detector.py", "convert/ports/blazeface_keras.py",
                  "agent/pipeline/detect.py", "agent/pipeline/detectors/blazeface.py", "agent/model.py", "agent/tools/evaluate.py")


def score_key(model_files: Sequence[Path], holdout: Sequence[dd.Scene], val: Sequence[dd.Scene], max_fp: float) -> str:
    """Content hash naming one scoring: model bytes, scorer code, the images and their annotations,
    and the false-detection budget."""
    h = hashlib.sha256()
    for path in [*model_files, *(REPO_ROOT / f for f in SCORER_SOURCES)]:
        h.update(Path(path).read_bytes())
    scenes = [[[s.image, np.asarray(s.boxes).tolist(), list(s.labels)] for s in part] for part in (holdout, val)]
    h.update(json.dumps([scenes, max_fp]).encode())
    return h.hexdigest()[:32]


def cached_score(key: str, compute: Callable[[], Dict[str, Any]], cache_dir: Path,
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """``compute()``, or its result from an earlier run with the same ``key`` (the original models are
    rescored identically by every training run: minutes each on the 2-core CPU)."""
    path = cache_dir / f"{key}.pkl"
    if path.is_file():
        try:
            out = pickle.loads(path.read_bytes())
            log(f"  (score read from {path})")
            return out
        except Exception as exc:  # noqa: BLE001 - a stale or torn cache file is recomputed
            log(f"  (ignoring unreadable score cache {path}: {exc})")
    from convert.export.sidecar import write_files_atomically  # noqa: PLC0415

    out = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_files_atomically({path: pickle.dumps(out)})  # per-process temp name: parallel runs share the cache
    return out


def summary_table(scores: Dict[str, Dict[str, Any]]) -> str:
    """Markdown table: recall per label (faces >= 40 px) and false detections / image on val."""
    lines = ["| model | threshold | mask | no_mask | incorrect_mask | all >= 40 px | all sizes | false / image |",
             "|---|---|---|---|---|---|---|---|"]
    for name, sc in scores.items():
        for tag, m in (("held-out thr", sc["val"]), ("0.5", sc["val_at_0.5"])):
            r, ra = m["recall_ge40px"], m["recall_all_sizes"]
            cell = lambda d: f"{100 * d['recall']:.1f} % ({d['found']}/{d['faces']})"  # noqa: E731
            lines.append(f"| {name} | {m['threshold']:.3f} ({tag}) | {cell(r['mask'])} | {cell(r['no_mask'])} |"
                         f" {cell(r['incorrect_mask'])} | {cell(r['all'])} | {cell(ra['all'])} |"
                         f" {m['false_per_image']:.3f} |")
    return "\n".join(lines)


def target_sidecar(base: Dict[str, Any], variant: str, input_wh: Tuple[int, int]) -> Dict[str, Any]:
    """The trained model's decoding contract: the variant's MediaPipe anchors and scale at
    ``input_wh``, the baseline's normalization, NMS and provenance (licence, source hashes)."""
    original = mediapipe_dir() / FACE_DIR / MODEL_FILES[variant]
    sha = source_sha256(original) if original.is_file() else "unknown"
    side = sidecar_template(variant, MODEL_FILES[variant], sha, input_wh)
    side["input"]["normalization"] = json.loads(json.dumps(base["input"]["normalization"]))
    side["decoding"]["nms"] = json.loads(json.dumps(base["decoding"].get("nms", side["decoding"]["nms"])))
    return side


def ft_sidecar(template: Dict[str, Any], threshold: float, train_info: Dict[str, Any], metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The fine-tuned model's sidecar: ``template``'s decoding (:func:`target_sidecar`), identity
    box_adjust, the threshold chosen on held-out data."""
    side = json.loads(json.dumps(template))
    for k in ("model_file", "model_sha256", "version"):
        side.pop(k, None)
    side["name"] = f"{template['name']}-ft"
    dec = side["decoding"]
    dec["box_adjust"] = {"dx": 0.0, "dy": 0.0, "sw": 1.0, "sh": 1.0}  # trained on the annotators' boxes
    dec["default_min_score"] = round(float(threshold), 4)
    prov = side.setdefault("provenance", {})
    src = prov.get("source_model", "face_detection_full_range_sparse.tflite")
    prov["source_model"] = f"{src}, fine-tuned on scenes-ilc2021 train (all weights)"
    prov["training"] = train_info
    prov["representative_data"] = "200 letterboxed scenes-ilc2021 train images"
    prov["licence"] = "Apache-2.0 (original weights, mediapipe 0.10.21); fine-tuned here"
    side["metrics"] = metrics
    return side


# ----------------------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``train-detector`` (shared with the convert CLI)."""
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help=f"folder holding {dd.SCENES}/ (default ../shared/datasets)")
    p.add_argument("--keras", type=Path, default=None, help="Keras model to start from (default: the"
                   " original --variant rebuilt from the mediapipe wheel at --input)")
    p.add_argument("--skip-blocks", type=lambda t: [n for n in t.split(",") if n], default=[], metavar="ADD,...",
                   help="residual blocks to leave out of the starting model, by the names of their Add layers"
                        " (a cheaper body; the model card names the set measured)")
    p.add_argument("--variant", choices=("full", "short"), default="full",
                   help="MediaPipe BlazeFace graph to start from (full: 192x192 stride 4; short: 128x128 strides 8/16)")
    p.add_argument("--input", type=_wh, default=None, metavar="WxH",
                   help="model input width x height (default: the variant's own; multiples of 16)")
    p.add_argument("--stem", default=STEM, help=f"file stem of the exported model (default {STEM})")
    p.add_argument("--baseline", type=Path, default=REPO_ROOT / "models" / "face_detector.json",
                   help="sidecar of the original int8 detector: decoding contract and baseline scores")
    p.add_argument("--original-tflite", type=Path, default=ORIGINAL_TFLITE,
                   help="original float MediaPipe model: keypoint targets and unlabelled faces")
    p.add_argument("--labels", type=Path, default=BUILD_DIR / "labels.npz", help="keypoint label cache")
    p.add_argument("--score-cache", type=Path, default=BUILD_DIR / "scores",
                   help="the original models' val scores, kept by content hash (delete to rescore)")
    p.add_argument("--out", type=Path, default=BUILD_DIR / f"{STEM}.keras")
    p.add_argument("--steps", type=int, default=0, help="training steps (0: as many as fit in --minutes)")
    p.add_argument("--minutes", type=float_in(0, low_open=True), default=35.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float_in(0, low_open=True), default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iou-weight", type=float_in(0), default=0.0,
                   help="weight of a GIoU box loss on the positive anchors, beside smooth-L1 (default 0: none)")
    p.add_argument("--iou-score", action="store_true",
                   help="IoU-aware score: a positive anchor's score target is its box's IoU with the face, not 1")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads")
    p.add_argument("--holdout", type=open_fraction, default=0.1, help="fraction of train kept out to choose thresholds")
    p.add_argument("--max-false", type=float_in(0), default=0.05, help="false detections / image allowed at the threshold")
    p.add_argument("--default-min-score", type=open_fraction, default=None,
                   help="detector threshold written to the sidecar (default: the held-out --max-false threshold)")
    p.add_argument("--synthetic-masks", type=float_in(0, 1), default=0.4, metavar="P",
                   help="chance that an unmasked frontal face of a training view gets a mask template pasted on"
                        " (mask-templates/ under --data-root; 0: none)")
    p.add_argument("--composite", type=float_in(0, 1), default=0.0, metavar="P",
                   help="chance that a training view gets 1-3 faces from faces/ (masked and unmasked) blended in"
                        " (default 0: measured at 0.3, it found as many faces but raised background false"
                        " detections by half; see the model card)")
    p.add_argument("--composite-per-folder", type=int, default=500, metavar="N",
                   help="face photos taken from each faces/ folder for --composite")
    p.add_argument("--limit", type=int, default=0, help="use only this many train and val images (smoke runs)")
    p.add_argument("--load", action="store_true", help="skip training: load --out")
    p.add_argument("--export", action="store_true", help="write the int8 model, sidecar, parity report and figure")
    p.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    p.add_argument("--report", type=Path, default=BUILD_DIR / "report.json")


_wh = input_size_type(16, "192x144")


def default_input(variant: str) -> Tuple[int, int]:
    """The variant's own input (width, height)."""
    return int(ANCHORS[variant]["input_size_width"]), int(ANCHORS[variant]["input_size_height"])


def source_model(a: argparse.Namespace, input_wh: Tuple[int, int]) -> Tuple[Any, str]:
    """(Keras model to fine-tune, where it came from): --keras, else the original --variant graph
    rebuilt from the mediapipe wheel at ``input_wh``."""
    from convert.ports.blazeface_keras import ensure_mediapipe, load_blazeface, load_keras  # noqa: PLC0415

    if a.keras is not None:
        return load_keras(a.keras), str(a.keras)
    model, _, sha = load_blazeface(ensure_mediapipe(), a.variant, (input_wh[1], input_wh[0]))
    return model, f"{MODEL_FILES[a.variant]} (sha256 {sha[:12]}) rebuilt at {input_wh[0]}x{input_wh[1]}"


def _check_inputs(a: argparse.Namespace) -> Optional[str]:
    """The first missing input, as a one-line error with its fix, or None."""
    if not (a.data_root / dd.SCENES / "boxes.csv").is_file():
        return f"{a.data_root / dd.SCENES}: dataset not found; fix: pass --data-root DIR holding {dd.SCENES}/"
    if not a.baseline.is_file():
        return f"{a.baseline}: baseline detector sidecar not found; fix: build models/face_detector first or pass --baseline"
    if not a.labels.is_file() and not a.original_tflite.is_file():
        return (f"{a.original_tflite}: original model not found (needed once for keypoint targets); fix: pass"
                " --original-tflite PATH (face_detection_full_range_sparse.tflite of the mediapipe 0.10.21 wheel)")
    if a.synthetic_masks and not a.load and not (a.data_root / "mask-templates" / "masks.cfg").is_file():
        return (f"{a.data_root / 'mask-templates' / 'masks.cfg'}: mask templates not found; fix: pass --data-root"
                " DIR holding mask-templates/, or --synthetic-masks 0")
    if a.composite and not a.load:
        for folder in COMPOSITE_FOLDERS:
            if not (a.data_root / "faces" / folder).is_dir():
                return f"{a.data_root / 'faces' / folder}: not found; fix: pass --data-root DIR holding faces/, or --composite 0"
        if not DEFAULT_FACE_DETECTOR.is_file():
            return (f"{DEFAULT_FACE_DETECTOR}: short-range BlazeFace not found (frames the faces/ photos);"
                    " fix: run maskwatch-convert blazeface (fetches the mediapipe wheel's models), or --composite 0")
    if a.load and not a.out.is_file():
        return f"{a.out}: no trained model to --load; fix: train first (drop --load)"
    if a.keras is not None and not a.load and not a.keras.is_file():
        return f"{a.keras}: Keras model not found; fix: pass an existing .keras file or leave --keras out"
    return None


def run(a: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """Execute ``train-detector`` with parsed options."""
    problem = _check_inputs(a)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from convert.ports.blazeface_keras import load_keras  # noqa: PLC0415 - registers its custom layers

    tf_threads(a.threads)
    cv2.setNumThreads(1)
    np.random.seed(a.seed)
    base = read_json(a.baseline)
    label_dec = dd.Decoding.from_sidecar(base)  # the original full-range model labels keypoints
    input_wh = a.input or default_input(a.variant)
    target = target_sidecar(base, a.variant, input_wh)
    dec = dd.Decoding.from_sidecar(target)
    # Keypoint labelling picks the original model's anchor by IoU with the raw model box: the
    # keypoints themselves do not depend on box_adjust, and IoU >= 0.5 tolerates the shape offset.
    adjust = None

    scenes = dd.read_scenes(a.data_root, "train")
    val = dd.read_scenes(a.data_root, "val")
    if a.limit:
        scenes, val = scenes[: a.limit], val[: a.limit]
    labels_path = a.labels if not a.limit else a.labels.with_name(f"labels_limit{a.limit}.npz")
    images = [dd.load_rgb(s.path) for s in scenes]
    if not dd.load_labels(labels_path, scenes):
        log(f"labelling keypoints and unlabelled faces with {a.original_tflite} ...")
        info = dd.label_scenes(scenes, images, dd.tflite_raw_detector(a.original_tflite), label_dec, adjust, log=log)
        dd.save_labels(labels_path, scenes)
        log(f"labels: {info} -> {labels_path}")
    n_faces = sum(len(s.boxes) for s in scenes)
    n_kp = sum(int(s.keypoints_ok.sum()) for s in scenes)
    n_extra = sum(len(s.unlabelled) for s in scenes)
    train_scenes, holdout = split_holdout(scenes, a.holdout, a.seed)
    keep = {id(s) for s in train_scenes}
    train_images = [img for s, img in zip(scenes, images) if id(s) in keep]
    log(f"train {len(train_scenes)} images, held-out {len(holdout)}, val {len(val)}; keypoint targets for"
        f" {n_kp}/{n_faces} faces; {n_extra} unlabelled faces ignored")

    cfg = TrainConfig(steps=a.steps, minutes=a.minutes, batch=a.batch, lr=a.lr, seed=a.seed, iou_weight=a.iou_weight,
                      iou_score=a.iou_score)
    aug = dd.AugmentConfig(width=dec.width, height=dec.height, p_synthetic_mask=a.synthetic_masks,
                           p_composite=a.composite)
    templates = dd.shrink_templates(load_mask_templates(a.data_root)) if a.synthetic_masks and not a.load else []
    patches: List[dd.FacePatch] = []
    patch_info: Dict[str, Any] = {}
    if a.composite and not a.load:
        finder = FaceFinder(DEFAULT_FACE_DETECTOR)
        # the faces/ photos' boxes in the annotators' convention, fitted on train faces only
        patch_info["box_convention"] = finder.fit_adjust(a.data_root, [f for f in read_scene_faces(a.data_root)
                                                                       if f.split == "train"], n=600, seed=a.seed)
        patches = dd.face_patches(a.data_root, finder, COMPOSITE_FOLDERS, a.composite_per_folder, a.seed, log)
        patch_info["faces"] = {lbl: sum(p.label == lbl for p in patches) for lbl in ("mask", "no_mask")}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.load:
        model = load_keras(a.out)
        info_path = a.out.with_suffix(".train.json")
        train_info: Dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
        train_info.pop("history", None)
        log(f"loaded {a.out}")
    else:
        model, src = source_model(a, input_wh)
        if a.skip_blocks:
            from convert.ports.blazeface_keras import skip_blocks  # noqa: PLC0415
            model = skip_blocks(model, a.skip_blocks)
            src += f", without the residual blocks ending in {', '.join(a.skip_blocks)}"
        log(f"fine-tuning {src} ({model.count_params()} parameters, {len(dec.anchors)} anchors)")
        result = train(model, Batches(train_scenes, train_images, dec, aug, cfg.batch, cfg.seed, templates, patches), dec, cfg, a.out, log)
        train_info = {"config": asdict(cfg), "augment": asdict(aug), "source": src, "variant": a.variant,
                      "input": f"{dec.width}x{dec.height}", "steps": result["steps"],
                      "seconds": result["seconds"], "train_images": len(train_scenes),
                      "held_out_images": len(holdout), "keypoint_targets": f"{n_kp}/{n_faces}",
                      "unlabelled_faces_ignored": n_extra,
                      "mask_templates": [t.name for t in templates], "composited_faces": patch_info}
        a.out.with_suffix(".train.json").write_text(json.dumps({**train_info, "history": result["history"]}, indent=1))
        log(f"saved {a.out}")
    del images, train_images
    return evaluate_and_export(a, model, base, target, dec, train_info, train_scenes, holdout, val, log)


def evaluate_and_export(a: argparse.Namespace, model: Any, base: Dict[str, Any], target: Dict[str, Any], dec: dd.Decoding,
                        train_info: Dict[str, Any], train_scenes: Sequence[dd.Scene], holdout: Sequence[dd.Scene],
                        val: Sequence[dd.Scene], log: Callable[[str], None] = print) -> int:
    """Score original and fine-tuned (float, and int8 with --export) on val; write the outputs."""
    from agent.model import load_model  # noqa: PLC0415
    from convert.evaluate import detector as de  # noqa: PLC0415
    from convert.ports.blazeface_keras import load_keras  # noqa: PLC0415
    from convert.errors import ConvertError  # noqa: PLC0415

    load = dd.bgr_loader()
    scores: Dict[str, Dict[str, Any]] = {}
    draft = ft_sidecar(target, 0.5, train_info, {})
    try:
        src = find_keras_source()
        scores["original float"] = cached_score(
            score_key([src, a.baseline], holdout, val, a.max_false),
            lambda: score_model("original float", de.KerasModel(load_keras(src), base, "original"),
                                holdout, val, load, a.max_false, log), a.score_cache, log)
    except FileNotFoundError as exc:
        log(f"original float not scored: {exc}")
    baseline_tflite = a.baseline.parent / base["model_file"]
    scores["original int8"] = cached_score(
        score_key([baseline_tflite, a.baseline], holdout, val, a.max_false),
        lambda: score_model("original int8", load_model(a.baseline, kind="detector"), holdout, val, load, a.max_false, log),
        a.score_cache, log)
    scores["fine-tuned float"] = score_model("fine-tuned float", de.KerasModel(model, draft, "fine-tuned"),
                                             holdout, val, load, a.max_false, log)
    report: Dict[str, Any] = {"train": {k: v for k, v in train_info.items() if k != "history"}}
    if a.export:
        try:
            from convert.export import parity, quantize, sidecar  # noqa: PLC0415

            names = quantize.keras_output_names(model)
            float_outs = [n for n, spec in base["outputs"].items() if spec.get("dtype") == "float32" and n in names]
            rep = representative(train_scenes, dec, 200, a.seed)
            # float heads (the baseline's choice) need the convolution last; int8 outputs need the clip
            qmodel = model if float_outs else export_model(model, dec)
            flat = quantize.quantize_int8(qmodel, rep, float_outputs=float_outs)
            tmp_dir = a.out.parent / "int8"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            sidecar.write_model_pair(tmp_dir, a.stem, flat, draft)
            scores["fine-tuned int8"] = score_model("fine-tuned int8", load_model(tmp_dir / f"{a.stem}.json", kind="detector"),
                                                    holdout, val, load, a.max_false, log)
        except ConvertError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    shift = {}
    if "original float" in scores:
        o, f = scores["original float"], scores["fine-tuned float"]
        shift = de.keypoint_shift(o["results"], o["threshold"], f["results"], f["threshold"])
        log(f"keypoints, fine-tuned vs original float on val faces both find (face widths): {shift}")
    table = summary_table(scores)
    log(table)
    report["val"] = {k: {"threshold": v["threshold"], "at_threshold": v["val"], "at_0.5": v["val_at_0.5"]}
                     for k, v in scores.items()}
    report["keypoint_shift_vs_original"] = shift
    report["table"] = table
    a.report.parent.mkdir(parents=True, exist_ok=True)
    a.report.write_text(json.dumps(report, indent=1))
    log(f"wrote {a.report}")
    fig = a.models_dir / "figures" / f"{a.stem}_pr.png" if a.export else a.report.with_name(f"{a.stem}_pr.png")
    de.plot_curves({k: (v["curve"], v["threshold"]) for k, v in scores.items()}, fig,
                   f"BlazeFace on scenes-ilc2021 val ({len(val)} images), thresholds chosen on held-out train")
    log(f"wrote {fig}")
    if a.export:
        q = scores["fine-tuned int8"]
        metrics = {"scorer": "convert/evaluate/detector.py (IoU >= 0.5, greedy by score)",
                   "held_out_threshold": q["threshold"],
                   "threshold_chosen_on": f"{len(holdout)} held-out scenes-ilc2021 train images,"
                                          f" <= {a.max_false} false detections / image",
                   "val": {k: v["val"] for k, v in scores.items() if k in ("fine-tuned int8", "original int8")},
                   "val_at_0.5": {k: v["val_at_0.5"] for k, v in scores.items() if k in ("fine-tuned int8", "original int8")},
                   "keypoint_shift_vs_original": shift}
        run_score = q["threshold"] if a.default_min_score is None else a.default_min_score
        side = ft_sidecar(target, run_score, train_info, metrics)
        paths = sidecar.write_model_pair(a.models_dir, a.stem, flat, side)
        val_x = [((dd.letterbox_example(s, dd.load_rgb(s.path), dec.size).image.astype(np.float32) - 127.5)
                  / 127.5)[None] for s in val[:100]]
        rep_par = parity.detector_parity(qmodel, flat, val_x, side["decoding"], min_score=run_score)
        rep_par["notes"] = [f"fine-tuned detector; val recall and thresholds in {a.stem}.json metrics"]
        parity.write_parity_report(a.models_dir, a.stem, rep_par)
        log(f"wrote {paths[0]} ({len(flat)} bytes), {paths[1]}, parity report, {fig}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="train-detector", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
