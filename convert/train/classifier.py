"""Train the mask classifier from scratch (Keras 3), fit its temperature, export it as int8 TFLite.

One command reproduces a model with a fixed seed::

    python -m convert.train.classifier                       # crops -> train -> int8 -> models/
    maskwatch-convert train-classifier --epochs 14 ...        # the same, through the convert CLI

Steps: crops are cut (or read from the cache ``build/classifier/crops.npz``) by
``convert.data.classifier``; a small depthwise-separable CNN is trained on ``train`` crops with
augmentation (flips, colour, down-scaling to 10-64 px and back, blur, noise; box jitter and
+-10 degree roll are baked into the crops); the model outputs logits and a temperature is fitted
on the ``val`` crops' logits; the float model is saved to ``build/classifier/mask_classifier.keras``;
``--export`` quantizes it to int8 with ``convert.export.quantize`` and writes ``models/mask_classifier.*``,
its parity report, and (through ``convert.evaluate.classifier``) figures and the model card section.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from convert.data import classifier as cd
from convert.errors import float_in
from convert.tf import tensorflow, tf_threads
from convert.paths import REPO_ROOT

BUILD_DIR = REPO_ROOT / "build" / "classifier"
MODEL_STEM = "mask_classifier"
# model_float_input = (pixel_0_255 - MEAN) / STD: written to the sidecar, applied by the agent
NORM_MEAN, NORM_STD = 127.5, 127.5


def normalization() -> Dict[str, List[float]]:
    """The sidecar's ``input.normalization`` for models this trainer makes (what evaluation reads back)."""
    return {"mean": [NORM_MEAN] * 3, "std": [NORM_STD] * 3}


def build_model(size: int, width: float = 1.0, num_classes: int = 4, seed: int = 0):
    """Depthwise-separable CNN: stem conv, 9 separable blocks, global pooling, logits.

    BatchNorm momentum 0.9: with the default 0.99 a short from-scratch run kept stale moving
    statistics and predicted one class in inference mode.
    """
    tf = tensorflow()
    keras = tf.keras
    layers = keras.layers
    init = keras.initializers.HeNormal(seed=seed)

    def c(n: int) -> int:
        return max(8, int(round(n * width / 8)) * 8)

    def bn_relu(x):
        return layers.ReLU(6.0)(layers.BatchNormalization(momentum=0.9)(x))

    def sep(x, out: int, stride: int):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, depthwise_initializer=init)(x)
        x = bn_relu(x)
        x = layers.Conv2D(out, 1, use_bias=False, kernel_initializer=init)(x)
        return bn_relu(x)

    inp = keras.Input((size, size, 3), name="image")
    x = bn_relu(layers.Conv2D(c(24), 3, strides=2, padding="same", use_bias=False, kernel_initializer=init)(inp))
    for out, stride in ((48, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1), (192, 2), (256, 1), (256, 1)):
        x = sep(x, c(out), stride)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2, seed=seed)(x)
    out = layers.Dense(num_classes, name="logits", kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    return keras.Model(inp, out, name="mask_classifier")


def normalize(x_uint8: np.ndarray) -> np.ndarray:
    """Pixels 0..255 -> the model's float input, as the sidecar's normalization says."""
    return (x_uint8.astype(np.float32) - NORM_MEAN) / NORM_STD


def _augment_fn(size: int, seed: int):
    """Per-image augmentation on uint8 RGB crops; returns normalized float32."""
    tf = tensorflow()

    def aug(img, label, weight):
        x = tf.image.convert_image_dtype(img, tf.float32)
        x = tf.image.random_flip_left_right(x)
        x = tf.image.random_brightness(x, 0.15)
        x = tf.image.random_contrast(x, 0.7, 1.3)
        x = tf.image.random_saturation(x, 0.6, 1.4)
        x = tf.image.random_hue(x, 0.03)
        x = tf.clip_by_value(x, 0.0, 1.0)
        # small faces: shrink to 10..size px and back (camera faces are often under 32 px)
        r = tf.random.uniform([])
        s = tf.random.uniform([], 10, size + 1, dtype=tf.int32)
        x = tf.cond(
            r < 0.5,
            lambda: tf.image.resize(tf.image.resize(x, [s, s], method="area"), [size, size], method="bilinear"),
            lambda: x,
        )
        # defocus blur
        k = tf.constant([[1, 2, 1], [2, 4, 2], [1, 2, 1]], tf.float32) / 16.0
        kern = tf.tile(k[:, :, None, None], [1, 1, 3, 1])
        x = tf.cond(
            tf.random.uniform([]) < 0.15,
            lambda: tf.nn.depthwise_conv2d(x[None], kern, [1, 1, 1, 1], "SAME")[0],
            lambda: x,
        )
        x = tf.cond(tf.random.uniform([]) < 0.05, lambda: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x)), lambda: x)
        x = x + tf.random.normal(tf.shape(x), stddev=tf.random.uniform([], 0.0, 0.03))
        x = tf.clip_by_value(x, 0.0, 1.0) * 255.0
        return (x - NORM_MEAN) / NORM_STD, label, weight

    return aug


def _mixup_fn(num_classes: int, alpha: float, seed: int):
    """Batch map: one-hot labels, each crop mixed with another of the batch (weight lam ~ Beta(alpha,
    alpha), kept >= 0.5 so the crop's own label leads); sample weights mix the same way."""
    tf = tensorflow()

    def mix(x, label, weight):
        y = tf.one_hot(label, num_classes)
        if alpha <= 0:
            return x, y, weight
        n = tf.shape(x)[0]
        g1 = tf.random.gamma([n], alpha, seed=seed)
        g2 = tf.random.gamma([n], alpha, seed=seed + 1)
        lam = g1 / (g1 + g2)
        lam = tf.maximum(lam, 1.0 - lam)
        j = tf.random.shuffle(tf.range(n), seed=seed)
        lx = lam[:, None, None, None]
        ly = lam[:, None]
        return (lx * x + (1 - lx) * tf.gather(x, j), ly * y + (1 - ly) * tf.gather(y, j),
                lam * weight + (1 - lam) * tf.gather(weight, j))

    return mix


def class_weights(y: np.ndarray, num_classes: int = 4, cap: float = 3.0) -> np.ndarray:
    """Balanced class weights n / (k * count_c), capped, so rare incorrect_mask is not ignored."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = len(y) / (num_classes * np.maximum(counts, 1))
    return np.minimum(w, cap).astype(np.float32)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimizing the negative log-likelihood of softmax(logits / T) (grid + refine)."""

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    best = min(grid, key=nll)
    fine = np.linspace(best * 0.95, best * 1.05, 41)
    return float(min(fine, key=nll))


def train(
    train_set: cd.CropSet,
    val_set: cd.CropSet,
    epochs: int,
    batch: int,
    lr: float,
    width: float,
    seed: int,
    log=print,
    init_model=None,
    sample_weight: Optional[np.ndarray] = None,
    checkpoint: Optional[Path] = BUILD_DIR / "last_epoch.keras",
    mixup: float = 0.0,
    label_smoothing: float = 0.0,
):
    """Train from scratch (or go on from ``init_model``); returns the Keras model (final epoch) and history.

    ``sample_weight`` (one per train crop) multiplies the class weights, e.g. to weight site crops
    above base crops when fine-tuning; ``checkpoint`` is where each epoch's model is saved (None: nowhere).
    ``mixup`` (Beta alpha, 0: off) and ``label_smoothing`` regularize the few hundred real faces a
    rare class has, which the trunk otherwise memorizes (train accuracy 98 % against 92 % on val).
    """
    tf = tensorflow()
    keras = tf.keras
    keras.utils.set_random_seed(seed)
    size = int(train_set.x.shape[1])
    model = build_model(size, width=width, seed=seed) if init_model is None else init_model
    cw = class_weights(train_set.y)
    log(f"model: {model.count_params()} parameters, input {size}px; class weights {dict(zip(cd.LABELS, cw.round(2).tolist()))}")
    sw = cw[train_set.y]
    if sample_weight is not None:
        sw = sw * np.asarray(sample_weight, np.float32)
    steps = max(1, len(train_set) // batch)
    total = steps * epochs
    warm = min(steps, total // 10)
    sched = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total - warm), alpha=0.02, warmup_target=lr, warmup_steps=warm
    )
    soft = mixup > 0 or label_smoothing > 0
    model.compile(
        optimizer=keras.optimizers.AdamW(sched, weight_decay=5e-4),
        loss=(keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing) if soft
              else keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        weighted_metrics=[],
        metrics=["categorical_accuracy" if soft else "accuracy"],
    )
    ds = (
        tf.data.Dataset.from_tensor_slices((train_set.x, train_set.y.astype(np.int32), sw))
        .shuffle(len(train_set), seed=seed, reshuffle_each_iteration=True)
        .map(_augment_fn(size, seed), num_parallel_calls=2, deterministic=True)
        .batch(batch, drop_remainder=True)
    )
    if soft:
        ds = ds.map(_mixup_fn(int(model.output_shape[-1]), mixup, seed))
    ds = ds.prefetch(2)
    xv = normalize(val_set.x)

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            pred = np.argmax(self.model.predict(xv, batch_size=256, verbose=0), axis=1)
            rec = {lab: float((pred[val_set.y == i] == i).mean()) if (val_set.y == i).any() else float("nan") for i, lab in enumerate(cd.LABELS)}
            faces = val_set.y < 3
            log(
                f"epoch {epoch + 1}/{epochs} {time.time() - self.t0:.0f}s loss {logs['loss']:.4f} acc {logs.get('accuracy', logs.get('categorical_accuracy', 0.0)):.3f} | "
                f"val faces acc {float((pred[faces] == val_set.y[faces]).mean()):.3f} recall "
                + " ".join(f"{k} {v:.3f}" for k, v in rec.items()),
            )
            if checkpoint is not None:
                self.model.save(checkpoint)

    if checkpoint is not None:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    hist = model.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[Progress()])
    return model, hist.history


def merge_synthetic(train_set: cd.CropSet, syn: cd.CropSet) -> Tuple[cd.CropSet, cd.CropSet]:
    """Train set plus nine tenths of the synthetic crops (split by source image), and the held-out tenth."""
    import zlib

    held = np.array([zlib.crc32(str(n).encode()) % 10 == 0 for n in syn.image], bool)

    def pick(c: cd.CropSet, m: np.ndarray) -> cd.CropSet:
        return cd.CropSet(c.x[m], c.y[m], c.source[m], c.image[m], None if c.box_h is None else c.box_h[m])

    keep = pick(syn, ~held)
    bh = None if train_set.box_h is None or keep.box_h is None else np.concatenate([train_set.box_h, keep.box_h])
    merged = cd.CropSet(
        np.concatenate([train_set.x, keep.x]), np.concatenate([train_set.y, keep.y]),
        np.concatenate([train_set.source, keep.source]), np.concatenate([train_set.image, keep.image]), bh,
    )
    return merged, pick(syn, held)


def licence_line(pretrained: bool, source_model: str = "", synthetic: bool = False, crop_detector: bool = False) -> str:
    """The sidecar's ``provenance.licence``: a pretrained trunk keeps its own terms (torchvision's
    BSD-3-Clause weights, MediaPipe's Apache-2.0 model), which models/NOTICE spells out; so do the
    crop detector (YuNet, Apache-2.0) and the synthetic masks' templates (MaskTheFace, MIT)."""
    trunk = ""
    if pretrained:
        terms = "BSD-3-Clause" if "BSD-3-Clause" in source_model else "Apache-2.0" if "Apache-2.0" in source_model else "its own terms"
        trunk = f"; pretrained trunk under {terms}, see models/NOTICE"
    extra = ("; crops framed by the shipped detector (see provenance.crop_detector)" if crop_detector else "") + (
        "; synthetic masks from MaskTheFace templates (MIT)" if synthetic else "")
    return f"Apache-2.0 (what maskwatch trained){trunk}{extra}; training data: see MODEL_CARD.md"


def crop_detector_line(data_info: Dict[str, object]) -> Optional[str]:
    """Which detector framed the crops (``classifier-data --agent-detector``), with its own provenance
    and licence from its sidecar in models/; None when the crops were cut from annotator boxes only."""
    d = data_info.get("agent_detector")
    if not d:
        return None
    name = str(d["model"])  # type: ignore[index]
    side = REPO_ROOT / "models" / name
    prov = json.loads(side.read_text()).get("provenance", {}) if side.is_file() else {}
    return (f"models/{name}: {prov.get('source_model', 'the shipped face detector')}; {prov.get('licence', 'licence: see its sidecar')}"
            "; its boxes and keypoints frame and level the train and val faces as at run time")


def make_sidecar(
    tflite_bytes: bytes,
    spec_cfg: cd.DataConfig,
    temperature: float,
    data_info: Dict[str, object],
    metrics: Dict[str, object],
    source_model: Optional[str] = None,
    n_representative: int = 300,
) -> Dict[str, object]:
    """The classifier sidecar (docs/model-contract.md); tensor details are read from the model itself.

    ``source_model``: the provenance line for a model not trained from scratch (a pretrained backbone);
    ``n_representative``: how many train crops calibrated the int8 ranges.
    """
    from convert.export.sidecar import quant_dict  # noqa: PLC0415
    from convert.litert import tflite_io  # noqa: PLC0415

    tf = tensorflow()
    i, outs = tflite_io(tflite_bytes)
    o = outs[0]

    return {
        "schema": "maskwatch-model/1",
        "kind": "classifier",
        "name": "maskwatch-mask-classifier",
        "version": _dt.date.today().strftime("%Y.%m.%d"),
        "input": {
            "height": int(i["shape"][1]), "width": int(i["shape"][2]), "channels": int(i["shape"][3]),
            "color": "RGB", "dtype": np.dtype(i["dtype"]).name, "quantization": quant_dict(i),
            "normalization": normalization(),
            "resize": "stretch",
        },
        "outputs": {"logits": {"shape": [int(v) for v in o["shape"]], "dtype": np.dtype(o["dtype"]).name, "quantization": quant_dict(o)}},
        "labels": list(cd.LABELS),
        "non_face_labels": ["not_face"],
        "output": {"name": "logits", "activation": "softmax", "temperature": round(float(temperature), 4)},
        "crop": spec_cfg.crop_spec().sidecar(),
        "provenance": {
            "source_model": source_model or "trained from scratch by convert/train/classifier.py (no pretrained weights)",
            "converter": f"tensorflow {tf.__version__}",
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "licence": licence_line(pretrained=source_model is not None, source_model=source_model or "",
                                    synthetic="synthetic" in data_info, crop_detector=bool(data_info.get("agent_detector"))),
            **({"crop_detector": crop_detector_line(data_info)} if data_info.get("agent_detector") else {}),
            "datasets": [
                ("scenes-ilc2021 (ILC 2021 face-mask dataset, train split less a tuning fold for temperature and thresholds; "
                 "val split for metrics)" if "tune_fold" in data_info else
                 "scenes-ilc2021 (ILC 2021 face-mask dataset, train split; val split for temperature and metrics)"),
                "faces/web (chandrikadeb7/Face-Mask-Detection, MIT)",
                "faces/vggface2, faces/vggface2-synthetic (datarootsio/tutorial-face-mask-detection, MIT; VGGFace2 faces)",
            ] + (["mask-templates (aqeelanwar/MaskTheFace, MIT): synthetic mask / incorrect_mask on unmasked train faces"] if "synthetic" in data_info else []),
            "crops": {k: v for k, v in data_info.items()
                      if k in ("train_counts", "val_counts", "face_detector", "faces_skipped", "synthetic", "agent_detector", "tune_fold")},
            "representative_data": f"{n_representative} train crops (all classes), normalized as input.normalization",
            # the trainer's own command lines, so convert.evaluate.classifier can rewrite the card's Rebuild later
            **({"recipe": list(data_info["recipe"])} if data_info.get("recipe") else {}),
        },
        "metrics": metrics,
    }


def export(model, train_set: cd.CropSet, val_set: cd.CropSet, cfg: cd.DataConfig, temperature: float,
           data_info: Dict[str, object], models_dir: Path, seed: int, log=print,
           source_model: Optional[str] = None, n_representative: int = 300,
           tune_set: Optional[cd.CropSet] = None) -> Tuple[Path, Path]:
    """int8 conversion with convert.export.quantize, parity check, sidecar, evaluation and model card.

    ``n_representative`` random train crops calibrate the int8 ranges (more: closer int8/float agreement, slower);
    ``tune_set``: held-out train crops on which the alert threshold is chosen (see convert.evaluate.classifier).
    """
    from convert.export import parity, quantize
    from convert.export.sidecar import write_model_pair

    rng = np.random.default_rng(seed)
    rep_idx = rng.permutation(len(train_set))[:n_representative]

    def representative() -> Iterator[np.ndarray]:
        for k in rep_idx:
            yield normalize(train_set.x[k : k + 1])

    # logits leave the model as float32 (a DEQUANTIZE at the end): full resolution for calibrated probabilities
    tfl = quantize.quantize_int8(model, representative(), float_outputs=("logits",))
    xv = normalize(val_set.x)
    report = parity.classifier_parity(model, tfl, xv, cd.LABELS, temperature=temperature, y_true=val_set.y)
    log(f"parity: {json.dumps(report)[:400]}")
    from convert.evaluate import classifier as ev

    metrics = ev.evaluate_bytes(tfl, val_set, temperature, normalization(), model=model, tune_set=tune_set)
    sidecar = make_sidecar(tfl, cfg, temperature, data_info, ev.sidecar_metrics(metrics, data_info), source_model, n_representative)
    paths = write_model_pair(models_dir, MODEL_STEM, tfl, sidecar)
    parity.write_parity_report(models_dir, MODEL_STEM, report)
    ev.write_outputs(models_dir, metrics, data_info, sidecar)
    log(f"wrote {paths[0]} ({len(tfl)} bytes) and {paths[1]}")
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``train-classifier`` (shared with the convert CLI)."""
    cd.add_arguments(p)
    p.add_argument("--crops", type=Path, default=cd.DEFAULT_CROPS, help="crop cache (made if missing)")
    p.add_argument("--rebuild-crops", action="store_true", help="cut the crops again even if the cache exists")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float_in(0, low_open=True), default=3e-3)
    p.add_argument("--width", type=float_in(0, low_open=True), default=1.0, help="channel multiplier of the CNN")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra/inter-op threads")
    p.add_argument("--out-model", type=Path, default=BUILD_DIR / "mask_classifier.keras")
    p.add_argument("--load", action="store_true", help="skip training: load --out-model (e.g. to --export it again)")
    p.add_argument("--synthetic", action="store_true",
                   help="add the synthetic mask/incorrect_mask crops (CROPS.synthetic.npz, made by classifier-data --synthetic N); "
                        "a tenth of their source images is held out and scored apart")
    p.add_argument("--init-from", type=Path, default=None, help="start from this Keras model instead of random weights (fine-tuning)")
    p.add_argument("--subsample", type=int, default=None, help="train on a random N of the real train crops (short fine-tuning runs)")
    p.add_argument("--export", action="store_true", help="also write the int8 model, sidecar, figures and card to --models-dir")
    p.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")


def run(a: argparse.Namespace, log=print) -> int:
    """Execute ``train-classifier`` with parsed options."""
    tf = tensorflow()
    tf_threads(a.threads)  # kept as it is when TF already started in this process (tests, the convert CLI)
    cfg = cd.config_from_args(a)
    if a.crops.is_file() and not a.rebuild_crops:
        tr, va, info = cd.load_crops(a.crops)
        if info["config"]["size"] != cfg.size or info["config"]["scale"] != cfg.scale or info["config"]["limit"] != cfg.limit:
            print(f"error: {a.crops} was cut with other settings ({info['config']}); pass --rebuild-crops or another --crops path", file=sys.stderr)
            return 2
        log(f"crops from {a.crops}: train {info['train_counts']}, val {info['val_counts']}")
    else:
        det = None if a.no_faces else a.face_detector
        if det is not None and not det.is_file():
            print(f"error: {det}: face detector not found; pass --face-detector PATH or --no-faces", file=sys.stderr)
            return 2
        try:
            tr, va, info = cd.build_crops(a.data_root, cfg, det, log=log)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cd.save_crops(a.crops, tr, va, info)
    if a.subsample is not None and a.subsample < len(tr):
        keep = np.sort(np.random.default_rng(a.seed).permutation(len(tr))[: a.subsample])
        tr = cd.CropSet(tr.x[keep], tr.y[keep], tr.source[keep], tr.image[keep], None if tr.box_h is None else tr.box_h[keep])
        log(f"subsampled the real train crops to {len(tr)}")
    syn_val = None
    if a.synthetic:
        sp = cd.synthetic_path(a.crops)
        if not sp.is_file():
            print(f"error: {sp} not found; run python -m convert.data.classifier --synthetic 3000 --synthetic-only", file=sys.stderr)
            return 2
        syn, _, sinfo = cd.load_crops(sp)
        tr, syn_val = merge_synthetic(tr, syn)
        info["synthetic"] = {"train": int(np.char.startswith(tr.source.astype(str), "synthetic").sum()),
                             "held_out": len(syn_val), "templates": sinfo.get("templates")}
        log(f"synthetic crops: {info['synthetic']['train']} in train, {len(syn_val)} held out")
    init = None
    if a.init_from is not None:
        if not a.init_from.is_file():
            print(f"error: {a.init_from} not found (--init-from)", file=sys.stderr)
            return 2
        init = tf.keras.models.load_model(a.init_from)
        log(f"starting from {a.init_from}")
    if a.load:
        if not a.out_model.is_file():
            print(f"error: {a.out_model} not found; train first (drop --load)", file=sys.stderr)
            return 2
        model, history = tf.keras.models.load_model(a.out_model), {}
        log(f"loaded {a.out_model}")
    else:
        t0 = time.time()
        model, history = train(tr, va, a.epochs, a.batch, a.lr, a.width, a.seed, log=log, init_model=init)
        log(f"trained in {time.time() - t0:.0f} s")
    logits = model.predict(normalize(va.x), batch_size=256, verbose=0)
    temperature = fit_temperature(logits, va.y)
    log(f"temperature (fitted on val logits): {temperature:.3f}")
    if syn_val is not None and len(syn_val):
        sp_pred = np.argmax(model.predict(normalize(syn_val.x), batch_size=256, verbose=0), axis=1)
        info["synthetic"]["held_out_recall"] = {
            lab: float((sp_pred[syn_val.y == i] == i).mean()) for i, lab in enumerate(cd.LABELS) if (syn_val.y == i).any()
        }
        log(f"synthetic held-out recall (not real faces; kept apart from val): {info['synthetic']['held_out_recall']}")
    if not a.load:
        a.out_model.parent.mkdir(parents=True, exist_ok=True)
        model.save(a.out_model)
        (a.out_model.with_suffix(".train.json")).write_text(
            json.dumps({"temperature": temperature, "history": history, "args": {k: str(v) for k, v in vars(a).items()}, "data": info}, indent=1)
        )
        log(f"saved {a.out_model}")
    if a.export:
        from convert.errors import ConvertError

        try:
            export(model, tr, va, cfg, temperature, info, a.models_dir, a.seed, log=log)
        except ConvertError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="train-classifier", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
