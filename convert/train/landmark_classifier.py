"""``maskwatch-convert landmark-classifier``: the mask classifier on a pretrained trunk.

The trunk is MediaPipe's face-landmark net (:mod:`convert.ports.landmark_keras`) or torchvision's
ImageNet MobileNetV2 (:mod:`convert.ports.mobilenet_keras`, ``--backbone mobilenet_v2 --cut 10``: the
shipped classifier). Head-only epochs on the frozen trunk, then all weights; temperature; int8 export
to a candidate folder (never models/), with the command lines that rebuild it in its sidecar::

    maskwatch-convert classifier-data --size 48 --out build/classifier_48/crops.npz
    maskwatch-convert landmark-classifier --crops build/classifier_48/crops.npz --backbone mobilenet_v2 --cut 10 \\
        --freeze-epochs 1 --epochs 13 --lr 1e-3 --seed 0 --threads 2 --export --models-dir build/cand_models/NAME

The training loop, augmentation, temperature and export are :mod:`convert.train.classifier`'s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.model import sha256_of
from convert.data import classifier as cd
from convert.errors import ConvertError, float_in, int_at_least
from convert.paths import REPO_ROOT
from convert.ports.blazeface_keras import ensure_mediapipe, load_keras, mediapipe_dir
from convert.ports import mobilenet_keras as mk
from convert.ports.landmark_keras import CUTS, PROJECT_RANGE, model_path, trunk
from convert.tf import keras_module, tf_threads
from convert.train import classifier as tc


HEADS = ("gap", "gdc", "two-view")
BACKBONES = ("landmark", "mobilenet_v2")
# "two-view": the nose-mouth window of an eye-levelled crop, as fractions of its side (top, left);
# the window is half the side. At the crop's 1.3x box framing the eyes sit near 0.41 of the side,
# the nose tip near 0.56 and the chin near 0.88, so it spans the eyes' lower lids to the chin.
NOSE_MOUTH_WINDOW = (0.38, 0.25)


def nose_mouth_window(size: int) -> Tuple[int, int]:
    """(top, left) pixel of the two-view head's zoomed window in a ``size`` px crop."""
    return int(round(NOSE_MOUTH_WINDOW[0] * size)), int(round(NOSE_MOUTH_WINDOW[1] * size))


def build_classifier(mediapipe_dir: Path | str, size: int, stride: int = 16, num_classes: int = 4,
                     dropout: float = 0.2, seed: int = 0, prelu: str = "dw", head: str = "gap",
                     expand: int = 0, backbone: str = "landmark", cut: int = 10) -> Tuple[Any, Any]:
    """(classifier, its trunk): trunk -> [1x1 conv to ``expand`` channels + ReLU] -> pool -> dropout
    -> Dense logits, taking ``(pixel - 127.5) / 127.5`` like every project classifier.

    ``head`` "gap" averages the feature map; "gdc" pools it with one learned weight per position
    and channel (a global depthwise convolution, as MobileFaceNet does): the crops are aligned by
    the eyes, so *where* a feature fires (mask fabric over the nose or only over the chin) is
    information that averaging throws away. "two-view" runs the trunk twice at half the crop's side
    with shared weights: on the whole face (2x2 average) and on its nose-mouth window at full
    resolution (:data:`NOSE_MOUTH_WINDOW`), so the edge of a mask under the nose gets twice the
    pixels; the two average-pooled features are concatenated. One input, so the agent's crop and
    the sidecar contract stay as they are.

    ``backbone`` "mobilenet_v2" swaps the landmark trunk for torchvision's ImageNet MobileNetV2 up
    to ``features[cut]`` (:mod:`convert.ports.mobilenet_keras`; ``stride`` and ``prelu`` then do not apply).
    """
    if head not in HEADS:
        raise ValueError(f"head {head!r}: expected one of {HEADS}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone {backbone!r}: expected one of {BACKBONES}")
    if head == "two-view" and (expand or size % 2):
        raise ValueError("head 'two-view' takes an even size and no expand")
    keras = keras_module()
    L = keras.layers
    init = keras.initializers.GlorotUniform(seed=seed)
    body_size = size // 2 if head == "two-view" else size
    if backbone == "mobilenet_v2":
        body = mk.trunk(body_size, cut)
    else:
        body = trunk(mediapipe_dir, body_size, stride, PROJECT_RANGE, prelu)
    if head == "two-view":
        inp = keras.Input((size, size, 3), name="crop")
        top, left = nose_mouth_window(size)
        face = L.AveragePooling2D(2, name="face_view")(inp)
        zoom = L.Cropping2D(((top, size - top - body_size), (left, size - left - body_size)),
                            name="nose_mouth_view")(inp)
        x = L.Concatenate(name="pool")([L.GlobalAveragePooling2D(name="pool_face")(body(face)),
                                        L.GlobalAveragePooling2D(name="pool_nose_mouth")(body(zoom))])
    else:
        inp, x = body.input, _pooled(keras, body.output, head, expand, init)
    x = L.Dropout(dropout, seed=seed, name="dropout")(x)
    out = L.Dense(num_classes, name="logits", kernel_initializer=init)(x)
    return keras.Model(inp, out, name="mask_classifier"), body


def _pooled(keras: Any, x: Any, head: str, expand: int, init: Any) -> Any:
    """The trunk's feature map pooled to one vector by ``head`` ("gap" or "gdc"), after the optional
    1x1 ``expand`` conv."""
    L = keras.layers
    if expand:
        x = L.Conv2D(expand, 1, use_bias=False, kernel_initializer=init, name="expand")(x)
        x = L.BatchNormalization(name="expand_bn")(x)
        x = L.ReLU(name="expand_relu")(x)
    if head == "gdc":
        h, w = int(x.shape[1]), int(x.shape[2])
        x = L.DepthwiseConv2D((h, w), padding="valid", use_bias=False, name="gdc",
                              depthwise_initializer=keras.initializers.Constant(1.0 / (h * w)))(x)
        x = L.BatchNormalization(name="gdc_bn")(x)
        x = L.Flatten(name="pool")(x)
    else:
        x = L.GlobalAveragePooling2D(name="pool")(x)
    return x


def set_trunk_trainable(model: Any, body: Any, trainable: bool) -> None:
    """Freeze or free the pretrained layers (the head stays trainable)."""
    names = {layer.name for layer in body.layers}
    for layer in model.layers:
        if layer is body or layer.name in names:  # the two-view head nests the trunk as one layer
            layer.trainable = trainable


def _resize_crops(s: Any, size: int) -> Any:
    """A CropSet with its crops resized (area) to ``size`` px (trials at a size the cache was not cut at)."""
    if s.x.shape[1] == size:
        return s
    x = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in s.x])
    return cd.CropSet(x, s.y, s.source, s.image, s.box_h)


def _arguments() -> argparse.ArgumentParser:
    """Options of the landmark-trunk classifier trainer."""
    p = argparse.ArgumentParser(prog="landmark-classifier", description=main.__doc__)
    p.add_argument("--mediapipe-dir", type=Path, default=None,
                   help="unpacked mediapipe 0.10.21 wheel (default: $MASKWATCH_MEDIAPIPE_DIR or .cache/, fetched there once by ensure_mediapipe)")
    p.add_argument("--crops", type=Path, required=True, help="crop cache made by maskwatch-convert classifier-data")
    p.add_argument("--size", type=int_at_least(8), default=None, help="input size (default: the crops' size; else the crops are resized)")
    p.add_argument("--stride", type=int, default=16, choices=sorted(CUTS), help="cut the trunk at this stride")
    p.add_argument("--backbone", default="landmark", choices=BACKBONES,
                   help="pretrained trunk: MediaPipe's face landmark net, or torchvision's ImageNet MobileNetV2 (see convert.ports.mobilenet_keras)")
    p.add_argument("--cut", type=int, default=10, choices=range(1, 19), metavar="{1..18}", help="mobilenet_v2: keep features[1..CUT] (10: stride 16, 64 channels)")
    p.add_argument("--prelu", default="dw", choices=("dw", "layer", "relu"), help="PReLU form in the trunk (see _prelu)")
    p.add_argument("--head", default="gap", choices=HEADS,
                   help="pooling of the trunk's features: gap (average), gdc (a learned weight per position) or two-view"
                        " (the trunk on the whole face at half the side and on its nose-mouth window; see build_classifier)")
    p.add_argument("--expand", type=int, default=0, help="1x1 conv to this many channels (+ReLU) before pooling; 0: none")
    p.add_argument("--freeze-epochs", type=int_at_least(0), default=1, help="head-only epochs first")
    p.add_argument("--head-lr", type=float_in(0, low_open=True), default=3e-3)
    p.add_argument("--epochs", type=int_at_least(0), default=13, help="all-weights epochs after the head-only ones")
    p.add_argument("--lr", type=float_in(0, low_open=True), default=1e-3)
    p.add_argument("--batch", type=int_at_least(1), default=64)
    p.add_argument("--mixup", type=float_in(0), default=0.0, help="all-weights epochs: mix each crop with another of the batch, Beta(A, A) (0: off)")
    p.add_argument("--label-smoothing", type=float_in(0, 1, high_open=True), default=0.0, help="all-weights epochs: soft targets (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--subsample", type=int, default=None, help="train on a random N of the train crops (exploration)")
    p.add_argument("--synthetic", action="store_true", help="add CROPS.synthetic.npz (nine tenths; the rest scored apart)")
    p.add_argument("--tune-fold", type=float_in(0, 1, high_open=True), default=0.0,
                   help="hold out this fraction of the train images (every crop of an image together) from training: the"
                        " temperature and the alert thresholds are chosen on it instead of on val (0: temperature on val)")
    p.add_argument("--out-dir", type=Path, default=None, help="Keras model, checkpoint and log (default: next to --crops)")
    p.add_argument("--load", action="store_true", help="skip training: load OUT_DIR/mask_classifier.keras (e.g. to --export again)")
    p.add_argument("--export", action="store_true")
    p.add_argument("--representative", type=int, default=300, help="train crops calibrating the int8 ranges")
    p.add_argument("--models-dir", type=Path, default=Path("build/cand_models"))
    return p


def _data(a: argparse.Namespace) -> Tuple[Any, Any, Any, Dict[str, Any], int]:
    """(train, val, held-out synthetic or None, crop info, input size) as the options ask; with
    ``--tune-fold`` the held-out train crops are in ``info["tune_set"]`` (not trained on)."""

    tr, va, info = cd.load_crops(a.crops)
    size = a.size or int(tr.x.shape[1])
    tr, va = _resize_crops(tr, size), _resize_crops(va, size)
    if a.subsample is not None and a.subsample < len(tr):
        keep = np.sort(np.random.default_rng(a.seed).permutation(len(tr))[: a.subsample])
        tr = cd.CropSet(tr.x[keep], tr.y[keep], tr.source[keep], tr.image[keep], None if tr.box_h is None else tr.box_h[keep])
    syn_val = None
    if a.synthetic:
        syn, _, sinfo = cd.load_crops(cd.synthetic_path(a.crops))
        tr, syn_val = tc.merge_synthetic(tr, _resize_crops(syn, size))
        info["synthetic"] = {"train": int(np.char.startswith(tr.source.astype(str), "synthetic").sum()),
                             "held_out": len(syn_val), "templates": sinfo.get("templates"),
                             "placements": sinfo.get("placements"), "agent_detector": sinfo.get("agent_detector"),
                             "faces": sinfo.get("faces")}
    if a.tune_fold:
        tune = cd.tune_set(tr, a.tune_fold)
        tr = _pick(tr, ~cd.tune_fold_mask(tr.image, a.tune_fold))
        info["tune_fold"] = {"fraction": a.tune_fold, "crops": len(tune),
                             "counts": {lab: int((tune.y == i).sum()) for i, lab in enumerate(cd.LABELS)}}
        info["tune_set"] = tune
    return tr, va, syn_val, info, size


def _pick(s: Any, m: np.ndarray) -> Any:
    """The crops of a CropSet where ``m`` is True."""

    return cd.CropSet(s.x[m], s.y[m], s.source[m], s.image[m], None if s.box_h is None else s.box_h[m])


def fit(a: argparse.Namespace, tr: Any, va: Any, size: int, out_dir: Path, log=print) -> Tuple[Any, Dict[str, Any]]:
    """Head-only epochs on the frozen trunk, then all weights at ``a.lr``; returns (model, history)."""

    model, body = build_classifier(a.mediapipe_dir, size, a.stride, seed=a.seed, prelu=a.prelu, head=a.head,
                                   expand=a.expand, backbone=a.backbone, cut=a.cut)
    history: Dict[str, Any] = {}
    if a.freeze_epochs:
        set_trunk_trainable(model, body, False)
        model, history["head"] = tc.train(tr, va, a.freeze_epochs, a.batch, a.head_lr, 1.0, a.seed, log=log,
                                          init_model=model, checkpoint=out_dir / "last_epoch.keras")
    set_trunk_trainable(model, body, True)
    if a.epochs:
        model, history["all"] = tc.train(tr, va, a.epochs, a.batch, a.lr, 1.0, a.seed, log=log,
                                         init_model=model, checkpoint=out_dir / "last_epoch.keras",
                                         mixup=a.mixup, label_smoothing=a.label_smoothing)
    return model, history


def recipe(a: argparse.Namespace, crop_size: int, agent_detector: Optional[str] = None, syn_n: int = 0) -> List[str]:
    """The command lines that rebuild this model from ``crop_size`` px crops (the model card prints
    them); ``agent_detector``: the detector sidecar's file name when the crops were made with it;
    ``syn_n``: how many faces got synthetic masks (classifier-data --synthetic N), 0 when unknown."""
    model_opts = (f" --backbone {a.backbone} --cut {a.cut}" if a.backbone != "landmark" else "") + (f" --size {a.size}" if a.size else "") + f" --head {a.head}" + (f" --expand {a.expand}" if a.expand else "")
    return [
        f"maskwatch-convert classifier-data --size {crop_size} --out {a.crops}"
        + (f" --agent-detector models/{agent_detector}" if agent_detector else "")
        + (f" --synthetic {syn_n}" if a.synthetic and syn_n else "  # then --synthetic N --synthetic-only" if a.synthetic else ""),
        f"maskwatch-convert landmark-classifier --crops {a.crops} --stride {a.stride} --prelu {a.prelu}{model_opts} \\",
        f"    --freeze-epochs {a.freeze_epochs} --epochs {a.epochs} --lr {a.lr:g} --seed {a.seed} --threads {a.threads}"
        + (f" --mixup {a.mixup:g}" if a.mixup else "") + (f" --label-smoothing {a.label_smoothing:g}" if a.label_smoothing else "")
        + (f" --tune-fold {a.tune_fold:g}" if a.tune_fold else "") + " \\",
        f"    --representative {a.representative} --export --models-dir build/cand_models/NAME"
        + (" --synthetic" if a.synthetic else ""),
    ]


def _head_words(a: argparse.Namespace) -> str:
    """The head as the provenance line names it."""
    if a.head == "two-view":
        return ("the trunk at half the side on the whole face and on its nose-mouth window (shared weights),"
                " both average-pooled and concatenated + Dense head")
    pool = "global depthwise conv (GDC)" if a.head == "gdc" else "global average pool"
    return (f"1x1 conv to {a.expand} + " if a.expand else "") + f"{pool} + Dense head"


def _source_words(a: argparse.Namespace, size: int) -> str:
    """The sidecar's provenance line: which pretrained weights, cut where, with which head."""
    if a.backbone == "mobilenet_v2":
        return (f"convert/ports/mobilenet_keras.py: torchvision ImageNet MobileNetV2 ({mk.WHEEL} {mk.WHEEL_VERSION} wheel, "
                f"BSD-3-Clause weights, sha256 {sha256_of(mk.ensure_weights())[:16]}...) to features[{a.cut}] "
                f"at {size}px, + {_head_words(a)}; fine-tuned here")
    return (f"convert/ports/landmark_keras.py: trunk of MediaPipe face_landmark.tflite (mediapipe 0.10.21 wheel, "
            f"Apache-2.0, sha256 {hashlib.sha256(model_path(a.mediapipe_dir).read_bytes()).hexdigest()[:16]}...) "
            f"to stride {a.stride} at {size}px, PReLU form {a.prelu}, + {_head_words(a)}; fine-tuned here")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train a mask classifier on a pretrained trunk: head only, then all weights; temperature; export."""

    a = _arguments().parse_args(argv)
    if a.models_dir.resolve() == (REPO_ROOT / "models").resolve():
        print("error: this trainer writes candidates only; --models-dir must not be the shipped models/", file=sys.stderr)
        return 2
    if not a.crops.is_file():
        raise ConvertError(f"--crops {a.crops}: no such crop cache; fix: make it with "
                           f"`maskwatch-convert classifier-data --size 48 --out {a.crops}`")
    if a.mediapipe_dir is None:
        # Only the landmark trunk reads the wheel; it is fetched (pip download, no install) like the
        # other commands' BlazeFace files, but after the arguments are known not to fail.
        a.mediapipe_dir = ensure_mediapipe() if a.backbone == "landmark" else mediapipe_dir()
    tf_threads(a.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    tr, va, syn_val, info, size = _data(a)
    out_dir = a.out_dir or a.crops.parent / (f"mnv2_c{a.cut}_{size}" if a.backbone == "mobilenet_v2" else f"landmark_s{a.stride}_{size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"train {len(tr)} crops at {size}px, val {len(va)}; "
        + (f"MobileNetV2 to features[{a.cut}]" if a.backbone == "mobilenet_v2" else f"trunk stride {a.stride}, PReLU form {a.prelu}"))
    t0 = time.time()
    if a.load:
        model, history = load_keras(out_dir / "mask_classifier.keras"), {}
    else:
        model, history = fit(a, tr, va, size, out_dir, log)
    train_s = time.time() - t0
    log(f"trained in {train_s:.0f} s")
    tune = info.pop("tune_set", None)
    fit_on = va if tune is None else tune
    temperature = tc.fit_temperature(model.predict(tc.normalize(fit_on.x), batch_size=256, verbose=0), fit_on.y)
    log(f"temperature (fitted on {'val' if tune is None else 'the tuning fold of train'} logits): {temperature:.3f}")
    if syn_val is not None and len(syn_val):
        pred = np.argmax(model.predict(tc.normalize(syn_val.x), batch_size=256, verbose=0), axis=1)
        info["synthetic"]["held_out_recall"] = {lab: float((pred[syn_val.y == i] == i).mean()) for i, lab in enumerate(cd.LABELS) if (syn_val.y == i).any()}
        log(f"synthetic held-out recall (not real faces): {info['synthetic']['held_out_recall']}")
    if not a.load:
        model.save(out_dir / "mask_classifier.keras")
        (out_dir / "mask_classifier.train.json").write_text(json.dumps(
            {"temperature": temperature, "train_seconds": train_s, "params": int(model.count_params()), "history": history,
             "args": {k: str(v) for k, v in vars(a).items()}}, indent=1, default=float))
    if a.export:
        source = _source_words(a, size)
        cfg = cd.DataConfig(**{k: v for k, v in info["config"].items() if k in cd.DataConfig.__dataclass_fields__})
        syn_n = int((info.get("synthetic") or {}).get("faces") or 0)
        info["recipe"] = recipe(a, int(info["config"]["size"]), (info.get("agent_detector") or {}).get("model"), syn_n)
        a.models_dir.mkdir(parents=True, exist_ok=True)
        tc.export(model, tr, va, cfg, temperature, info, a.models_dir, a.seed, log=log, source_model=source,
                  n_representative=a.representative, tune_set=tune)
    return 0


if __name__ == "__main__":
    sys.exit(main())
