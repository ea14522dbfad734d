"""``maskwatch-convert train-yunet``: fine-tune YuNet for masked faces and the annotators' boxes.

Why: untouched, YuNet (WIDER FACE) scores masked faces lower and draws boxes its own way (46 of its
65 val misses are faces matched at IoU 0.3-0.5). The recipe keeps what WIDER taught it:

* **teacher**: the untouched model runs on the same augmented view; every cell that is not a
  labelled face is trained toward the teacher's own (cls, obj) -- background stays background,
  unannotated real faces stay faces -- and positives' keypoints toward the teacher's (the scenes
  have no keypoint annotations).
* **positives** are chosen by the teacher's boxes: cells centred in a labelled face whose teacher
  box overlaps it (IoU >= ``pos_iou``, and the ``top_k`` best down to ``loose_iou``: the faces the
  teacher boxes the other way). Their (cls, obj) go to 1 and their box to the annotated one.
* faces too small or mostly outside the view are ignore regions (no score loss near them).
* low learning rate (Adam 1e-4, warm-up, cosine), scenes-ilc2021 train minus a held-out tenth
  (where the score threshold is chosen), views of 10-200 px faces and whole letterboxed frames,
  flips and photometric jitter from :mod:`convert.data.detector` (the BlazeFace recipe's own).

Then ``maskwatch-convert yunet --keras OUT --min-score T`` quantizes, scores on val and writes the
model pair. Progress is printed every ``--log-every`` steps; CPU only.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.boxes import greedy_match, iou_matrix
from agent.pipeline.detectors.yunet import decode_boxes, grid
from convert.data import detector as dd
from convert.data.masks import load_mask_templates
from convert.errors import ConvertError, float_in, input_size_type, int_at_least, open_fraction, run_command
from convert.tf import tensorflow, tf_threads
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT



@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch: int = 16
    lr: float = 1e-4
    warmup_steps: int = 100
    final_lr_fraction: float = 0.05
    seed: int = 0
    pos_iou: float = 0.5  # teacher box IoU that makes a cell inside a face positive
    loose_iou: float = 0.25  # the top_k best cells down to this IoU are positive too
    top_k: int = 3
    max_pos: int = 12  # per face, the best by IoU
    box_weight: float = 2.0
    box_loss: str = "smooth_l1"  # on the (dx, dy, log w, log h) codes, or "giou" on the decoded boxes
    kps_weight: float = 0.1


def label_keypoints(scenes: Sequence[dd.Scene], images: Sequence[np.ndarray], onnx: Path, max_side: int = 640,
                    min_iou: float = 0.3, log: Callable[[str], None] = print) -> Dict[str, int]:
    """Give each annotated face the untouched model's five keypoints (``cv2.FaceDetectorYN`` on the
    ONNX file, in place on ``scenes``), where one of its faces overlaps the box at ``min_iou``.

    The scenes carry no keypoints, and synthetic masks are placed from them; the annotators' boxes
    are narrower than YuNet's, hence the loose pairing. Images are shrunk to ``max_side`` first.
    """
    from convert.ports import yunet_keras as yk  # noqa: PLC0415

    found = 0
    detector = yk.opencv_detector(onnx, max_side, max_side, score=0.3)  # the ONNX read once, sized per image
    for scene, rgb in zip(scenes, images):
        f = min(1.0, max_side / max(rgb.shape[:2]))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if f < 1.0:
            bgr = cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        rows = yk.opencv_faces(detector, bgr) / f
        kps = np.full((len(scene.boxes), 5, 2), np.nan, np.float32)
        ok = np.zeros(len(scene.boxes), bool)
        if len(rows) and len(scene.boxes):
            boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)
            for i, j in greedy_match(iou_matrix(scene.boxes, boxes), min_iou):
                kps[i], ok[i] = rows[j, 4:14].reshape(5, 2), True
        scene.keypoints, scene.keypoints_ok = kps, ok
        found += int(ok.sum())
    faces = sum(len(s.boxes) for s in scenes)
    log(f"  keypoints from the untouched model for {found} of {faces} train faces")
    return {"faces": faces, "with_keypoints": found}


def encode_boxes(boxes: np.ndarray, cells: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Inverse of the agent's :func:`decode_boxes` for (N, 4) boxes at their cells."""
    s = steps[:, None]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3)
    return np.concatenate([centre / s - cells, np.log(size / s)], axis=1)


def assign(teacher_boxes: np.ndarray, cells: np.ndarray, steps: np.ndarray, gt: np.ndarray, ignore: np.ndarray,
           cfg: TrainConfig) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive cells of one view and the face each learns, and the cells with no score loss.

    Returns (positive cell indices, their face indices, ignore mask over cells).
    """
    n = len(cells)
    skip = np.zeros(n, bool)
    if len(gt) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), skip
    centres = (cells + 0.5) * steps[:, None]
    inside = ((centres[:, None, 0] >= gt[None, :, 0]) & (centres[:, None, 0] <= gt[None, :, 2])
              & (centres[:, None, 1] >= gt[None, :, 1]) & (centres[:, None, 1] <= gt[None, :, 3]))  # (N, G)
    cand = np.flatnonzero(inside.any(axis=1))
    best_iou = np.zeros(n)
    best_gt = np.full(n, -1)
    if cand.size:
        iou = iou_matrix(teacher_boxes[cand], gt) * inside[cand]
        for j in range(len(gt)):
            col = iou[:, j]
            if ignore[j]:
                skip[cand[col >= cfg.loose_iou]] = True
                continue
            order = np.argsort(-col)[: cfg.max_pos]
            chosen = [i for r, i in enumerate(order) if col[i] >= cfg.pos_iou or (r < cfg.top_k and col[i] >= cfg.loose_iou)]
            for i in chosen:
                c = cand[i]
                if col[i] > best_iou[c]:
                    best_iou[c], best_gt[c] = col[i], j
    pos = np.flatnonzero(best_gt >= 0)
    skip[pos] = False
    return pos, best_gt[pos], skip


def giou(tf: Any, pred: Any, target: Any, cells: Any, steps: Any) -> Any:
    """Generalized IoU of predicted and target box codes (B, N, 4) at their cells, decoded to pixels
    like :func:`decode_boxes`: what the IoU >= 0.5 criterion of the evaluation scores."""

    def corners(code: Any) -> Any:
        centre = (cells + code[..., :2]) * steps
        half = tf.exp(tf.minimum(code[..., 2:], 10.0)) * steps / 2
        return centre - half, centre + half

    (p1, p2), (t1, t2) = corners(pred), corners(target)
    area = lambda a, b: tf.reduce_prod(tf.maximum(b - a, 0.0), axis=-1)  # noqa: E731
    inter = area(tf.maximum(p1, t1), tf.minimum(p2, t2))
    union = area(p1, p2) + area(t1, t2) - inter
    hull = area(tf.minimum(p1, t1), tf.maximum(p2, t2))
    iou = inter / tf.maximum(union, 1e-6)
    return iou - (hull - union) / tf.maximum(hull, 1e-6)


def missed_faces(model: Any, scenes: Sequence[dd.Scene], images: Sequence[np.ndarray], min_score: float = 0.5,
                 min_height: float = 20.0) -> np.ndarray:
    """Per scene, how many labelled faces >= ``min_height`` px tall ``model`` (Keras YuNet) does not
    find at IoU >= 0.5 and ``min_score``: the evaluation's own detector and matching rule."""
    from convert.evaluate import detector as de  # noqa: PLC0415
    from convert.ports import yunet_keras as yk  # noqa: PLC0415

    h, w = (int(d) for d in model.inputs[0].shape[1:3])
    side = yk.sidecar_template((w, h), "teacher", "", min_score)
    bgr = {id(s): img[..., ::-1] for s, img in zip(scenes, images)}  # images are RGB here
    results = de.run_detector(de.make_detector(de.KerasModel(model, side), min_score), scenes, lambda s: bgr[id(s)])
    out = np.zeros(len(scenes), np.int64)
    for i, r in enumerate(results):
        found = set(r.matched[r.matched >= 0].tolist())  # the detector kept only scores >= min_score
        out[i] = sum(1 for j, hgt in enumerate(r.heights) if hgt >= min_height and j not in found)
    return out


class Batches:
    """Seeded stream of augmented views (BGR float) with their faces; ``weights`` (one per scene,
    default even) set how often each scene is drawn."""

    def __init__(self, scenes: Sequence[dd.Scene], images: Sequence[np.ndarray], aug: dd.AugmentConfig,
                 batch: int, seed: int, templates: Sequence[Any] = (), weights: Optional[np.ndarray] = None) -> None:
        self.scenes, self.images, self.aug, self.batch = scenes, images, aug, batch
        self.templates = templates  # mask templates for synthetic masks (aug.p_synthetic_mask)
        self.rng = np.random.default_rng(seed)
        self.p = None if weights is None else np.asarray(weights, np.float64) / float(np.sum(weights))

    def __call__(self) -> Tuple[np.ndarray, List[dd.Example]]:
        if self.p is None:  # the shipped recipe's draws, unchanged
            idx = self.rng.integers(len(self.scenes), size=self.batch)
        else:
            idx = self.rng.choice(len(self.scenes), size=self.batch, p=self.p)
        examples = [dd.augment(self.scenes[i], self.images[i], self.rng, self.aug, self.templates) for i in idx]
        # augment works in RGB (its colour jitter's hue); YuNet reads BGR
        x = np.stack([e.image[..., ::-1] for e in examples]).astype(np.float32)
        return x, examples


def targets(teacher_out: Sequence[np.ndarray], examples: Sequence[dd.Example], cells: np.ndarray,
            steps: np.ndarray, cfg: TrainConfig) -> Dict[str, np.ndarray]:
    """Per-cell training targets of a batch from the teacher's outputs (scores, boxes, keypoints)."""
    t_scores, t_boxes, t_kps = (np.asarray(v, np.float32) for v in teacher_out)
    b, n = t_scores.shape[:2]
    score_t = t_scores.copy()
    score_w = np.ones((b, n), np.float32)
    pos = np.zeros((b, n), np.float32)
    box_t = np.zeros((b, n, 4), np.float32)
    decoded = decode_boxes(t_boxes, cells, steps)
    for k, e in enumerate(examples):
        p, face, skip = assign(decoded[k], cells, steps, e.boxes, e.ignore, cfg)
        score_w[k, skip] = 0.0
        score_t[k, p] = 1.0
        pos[k, p] = 1.0
        box_t[k, p] = encode_boxes(e.boxes[face], cells[p], steps[p])
    return {"score_t": score_t, "score_w": score_w, "pos": pos, "box_t": box_t, "kps_t": t_kps}


def train(model: Any, teacher: Any, batches: Batches, cfg: TrainConfig, out: Path,
          log: Callable[[str], None] = print, log_every: int = 50, save_every: int = 0) -> Dict[str, Any]:
    """Fine-tune ``model`` in place against ``teacher``; saves ``out`` at the end, and every
    ``save_every`` steps as ``OUT.stepN.keras`` (to score a run while it goes on)."""
    from convert.train.detector import learning_rate  # noqa: PLC0415 - the same warm-up + cosine

    tf = tensorflow()
    tf.random.set_seed(cfg.seed)
    h, w = (int(d) for d in model.inputs[0].shape[1:3])
    cells, steps = grid(w, h, [8, 16, 32])
    cell_t, step_t = tf.constant(cells, tf.float32), tf.constant(steps[:, None], tf.float32)
    opt = tf.keras.optimizers.Adam(learning_rate=cfg.lr)
    eps = 1e-6

    @tf.function(reduce_retracing=True)
    def step(x, score_t, score_w, pos, box_t, kps_t):
        with tf.GradientTape() as tape:
            scores, boxes, kps = model(x, training=True)
            p = tf.clip_by_value(scores, eps, 1 - eps)
            t = tf.clip_by_value(score_t, eps, 1 - eps)
            # KL divergence of Bernoullis: the cross-entropy less the target's own entropy, so the
            # loss reads 0 where the student agrees with the teacher (same gradient as the BCE)
            bce = t * tf.math.log(t / p) + (1 - t) * tf.math.log((1 - t) / (1 - p))  # (B, N, 2)
            n_pos = tf.maximum(tf.reduce_sum(pos), 1.0)
            l_score = tf.reduce_sum(bce * score_w[..., None]) / n_pos
            if cfg.box_loss == "giou":
                per_cell = 1.0 - giou(tf, boxes, box_t, cell_t, step_t)
            else:
                d = tf.abs(boxes - box_t)
                per_cell = tf.reduce_sum(tf.where(d < 0.1, 0.5 * d * d / 0.1, d - 0.05), axis=-1)
            l_box = cfg.box_weight * tf.reduce_sum(per_cell * pos) / n_pos
            l_kps = cfg.kps_weight * tf.reduce_sum(tf.abs(kps - kps_t) * pos[..., None]) / n_pos
            loss = l_score + l_box + l_kps
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss, l_score, l_box, l_kps, n_pos

    t0 = time.time()
    history: List[Dict[str, float]] = []
    acc = np.zeros(5)
    for i in range(cfg.steps):
        opt.learning_rate.assign(learning_rate(i, cfg.steps, cfg))
        x, examples = batches()
        t = targets(teacher(x, training=False), examples, cells, steps, cfg)
        vals = step(tf.constant(x), *(tf.constant(t[k]) for k in ("score_t", "score_w", "pos", "box_t", "kps_t")))
        acc += np.array([float(v) for v in vals])
        if (i + 1) % log_every == 0 or i + 1 == cfg.steps:
            m = acc / ((i % log_every) + 1)
            rec = {"step": i + 1, "loss": m[0], "score": m[1], "box": m[2], "kps": m[3], "positives": m[4],
                   "seconds": time.time() - t0}
            history.append(rec)
            eta = (time.time() - t0) / (i + 1) * (cfg.steps - i - 1)
            log(f"  step {i + 1}/{cfg.steps}: loss {m[0]:.3f} (score {m[1]:.3f}, box {m[2]:.3f}, keypoints"
                f" {m[3]:.3f}), {m[4]:.0f} positives/batch, lr {learning_rate(i, cfg.steps, cfg):.1e}, {eta / 60:.0f} min left")
            acc[:] = 0
        if save_every and (i + 1) % save_every == 0 and i + 1 < cfg.steps:
            out.parent.mkdir(parents=True, exist_ok=True)
            model.save(out.with_name(f"{out.stem}.step{i + 1}.keras"))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return {"steps": cfg.steps, "seconds": round(time.time() - t0), "history": history}


def choose_threshold(model: Any, holdout: Sequence[dd.Scene], max_false_per_image: float,
                     log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The score threshold within the false-detection budget on held-out train scenes (float model)."""
    from convert.evaluate import detector as de  # noqa: PLC0415
    from convert.ports import yunet_keras as yk  # noqa: PLC0415

    h, w = (int(d) for d in model.inputs[0].shape[1:3])
    side = yk.sidecar_template((w, h), "candidate", "", 0.5)
    results = de.run_detector(de.make_detector(de.KerasModel(model, side), de.LOW_SCORE), holdout, dd.bgr_loader())
    thr = de.choose_threshold(results, max_false_per_image)
    m = de.metrics_at(results, thr)
    r = m["recall_ge40px"]["all"]
    log(f"  held-out threshold {thr:.3f}: recall {r['recall'] * 100:.1f} % of {r['faces']} faces >= 40 px,"
        f" {m['false_per_image']:.2f} false detections / image")
    return {"threshold": round(thr, 4), "holdout": m}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", type=input_size_type(32, "320x256"), default=(320, 256), metavar="WxH",
                   help="input WIDTHxHEIGHT, multiples of 32")
    p.add_argument("--steps", type=int_at_least(1), default=TrainConfig.steps)
    p.add_argument("--batch", type=int_at_least(1), default=TrainConfig.batch)
    p.add_argument("--lr", type=float_in(0, low_open=True), default=TrainConfig.lr)
    p.add_argument("--box-loss", choices=["smooth_l1", "giou"], default=TrainConfig.box_loss)
    p.add_argument("--box-weight", type=float_in(0), default=TrainConfig.box_weight)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--holdout", type=open_fraction, default=0.1, help="fraction of train scenes held out to choose the threshold")
    p.add_argument("--max-false", type=float_in(0), default=0.4, help="false detections / image allowed at the chosen threshold")
    p.add_argument("--synthetic-masks", type=float_in(0, 1), default=0.0, metavar="P",
                   help="chance that an unmasked frontal train face gets a pasted mask template, placed from the"
                        " untouched model's keypoints (mask-templates/ under --data-root; 0: none)")
    p.add_argument("--hard-examples", type=float_in(0), default=0.0, metavar="B",
                   help="draw a train scene (1 + B x the faces the untouched model misses there) times as often; 0: evenly")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--onnx", type=Path, default=None, help="YuNet ONNX (default ../shared/models/yunet/yunet_n_dynamic.onnx)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "yunet" / "yunet_ft.keras")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=0, help="also save OUT.stepN.keras every N steps")


# The options that change the trained weights (not where files go, threads or logging).
REBUILD_OPTIONS = ("input", "steps", "batch", "lr", "box_loss", "box_weight", "seed", "holdout", "max_false",
                   "synthetic_masks", "hard_examples")


def _flag_value(value: object) -> str:
    """A parsed option as it is typed: ``--input``'s (width, height) as WxH."""
    return "x".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def rebuild_command(a: argparse.Namespace) -> str:
    """The ``maskwatch-convert train-yunet`` line that trains these weights again: the options of
    :data:`REBUILD_OPTIONS` that differ from their defaults. The run's .train.json records it, so the
    export's model card names the training as it ran (this module knows its own defaults)."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    defaults = p.parse_args([])
    flags = [f"--{k.replace('_', '-')} {_flag_value(getattr(a, k))}"
             for k in REBUILD_OPTIONS if getattr(a, k) != getattr(defaults, k)]
    return " ".join(["maskwatch-convert train-yunet", *flags])


def run(a: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    from convert.ports import yunet_keras as yk  # noqa: PLC0415
    from convert.train.detector import split_holdout  # noqa: PLC0415

    w, h = a.input
    tf_threads(a.threads)
    cv2.setNumThreads(1)
    onnx = a.onnx or yk.DEFAULT_ONNX
    cfg = TrainConfig(steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, box_loss=a.box_loss, box_weight=a.box_weight)
    if a.synthetic_masks and not (a.data_root / "mask-templates" / "masks.cfg").is_file():
        raise ConvertError(f"{a.data_root / 'mask-templates' / 'masks.cfg'}: mask templates not found; fix: pass"
                           " --data-root DIR holding mask-templates/, or --synthetic-masks 0")
    scenes = dd.read_scenes(a.data_root, "train")
    train_scenes, holdout = split_holdout(scenes, a.holdout, a.seed)
    images = [dd.load_rgb(s.path) for s in train_scenes]
    templates: List[Any] = []
    keypoint_info: Dict[str, int] = {}
    if a.synthetic_masks:
        templates = dd.shrink_templates(load_mask_templates(a.data_root))
        keypoint_info = label_keypoints(train_scenes, images, onnx, log=log)
    student, sha = yk.build_keras(onnx, (h, w))
    teacher, _ = yk.build_keras(onnx, (h, w), name="yunet_teacher")
    teacher.trainable = False
    aug = dd.AugmentConfig(width=w, height=h, min_face=10.0, max_face=200.0, p_synthetic_mask=a.synthetic_masks)
    log(f"fine-tuning YuNet {w}x{h} ({student.count_params()} parameters) on {len(train_scenes)} train scenes"
        f" ({len(holdout)} held out), {cfg.steps} steps of {cfg.batch}")
    weights: Optional[np.ndarray] = None
    sampling: Dict[str, Any] = {}
    if a.hard_examples:
        missed = missed_faces(teacher, train_scenes, images)
        weights = 1.0 + a.hard_examples * missed
        sampling = {"hard_examples": a.hard_examples, "faces_missed": int(missed.sum()),
                    "scenes": int((missed > 0).sum())}
        log(f"  hard examples: the untouched model misses {missed.sum()} train faces >= 20 px in {(missed > 0).sum()}"
            f" scenes; those are drawn up to {weights.max():.0f}x as often ({weights[missed > 0].sum() / weights.sum() * 100:.0f} %"
            " of draws)")
    batches = Batches(train_scenes, images, aug, cfg.batch, cfg.seed, templates, weights)
    result = train(student, teacher, batches, cfg, a.out, log, a.log_every, a.save_every)
    log(f"saved {a.out} ({result['seconds']} s)")
    thr = choose_threshold(student, holdout, a.max_false, log)
    info = {"command": rebuild_command(a), "config": asdict(cfg), "augment": asdict(aug), "source": onnx.name, "source_sha256": sha,
            "input": f"{w}x{h}", "train_images": len(train_scenes), "held_out_images": len(holdout),
            "mask_templates": [t.name for t in templates], "keypoints": keypoint_info,
            "sampling": sampling, **result, **thr}
    a.out.with_suffix(".train.json").write_text(json.dumps(info, indent=1, default=float) + "\n")
    log(f"next: maskwatch-convert yunet --keras {a.out} --min-score {thr['threshold']}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("maskwatch-convert train-yunet", __doc__.splitlines()[0], add_arguments, run, argv)


__all__ = ("TrainConfig", "assign", "missed_faces", "encode_boxes", "main", "run", "targets", "train")
