"""MediaPipe's face_landmark.tflite rebuilt in Keras; its trunk is a pretrained classifier backbone.

The face-mesh landmark net (mediapipe 0.10.21 wheel, Apache-2.0; 192x192 RGB in, 468 x/y/z
landmarks and a face flag out) has features learned on faces: nose, lips, jaw. That is what the
mask classifier needs, and it is the only pretrained feature extractor available offline here.

The flatbuffer is read with :class:`convert.ports.graph.Graph` (fp16 weights behind
DEQUANTIZE, the channel-padding ``Pad`` layer and layer-name sanitizing are reused); this module
adds the one op BlazeFace lacks, PRELU (per-channel alphas). The net is fully convolutional, so
:func:`trunk` rebuilds it on a smaller input and stops at a chosen stride with the original weights.

Input range: [0, 1] (MediaPipe's current FaceLandmarkCpu graph feeds ``output_tensor_float_range``
0..1). The net is robust to the range, so outputs alone barely tell: on 40 real val faces and 40
background crops, [0, 1] separates faces from background better (face-flag AUC 0.996 vs 0.991)
and its landmarks are more mirror-consistent (1.23 vs 1.50 px); see :func:`range_check`. The
project's classifiers take ``(pixel - 127.5) / 127.5``; :func:`trunk` maps that to [0, 1] with a
Rescaling layer, so the sidecar's normalization stays the project's.

The mask classifier trained on this trunk (or on MobileNetV2's) is
:mod:`convert.train.landmark_classifier` (``maskwatch-convert landmark-classifier``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from convert.ports.blazeface_keras import LANDMARK_FILE
from convert.ports.graph import Graph, layer_name, layers, options
from convert.errors import ConvertError
from convert.tf import keras_module

NATIVE_SIZE = 192
NATIVE_RANGE = (0.0, 1.0)  # input pixel range the original net was trained on
PROJECT_RANGE = (-1.0, 1.0)  # (pixel - 127.5) / 127.5, the project's classifier normalization
# Last PReLU of the shared trunk at each stride (flatbuffer tensor names); at stride 64 the net
# splits into its landmark and face-flag heads, so deeper cuts are not a single trunk.
CUTS: Dict[int, str] = {2: "p_re_lu_3", 4: "p_re_lu_6", 8: "p_re_lu_9", 16: "p_re_lu_12", 32: "p_re_lu_15"}
_FUSED_NONE = 0


def model_path(mediapipe_dir: Path | str) -> Path:
    """Path of face_landmark.tflite in an unpacked mediapipe wheel; error naming the fix if absent."""
    p = Path(mediapipe_dir) / LANDMARK_FILE
    if not p.is_file():
        raise ConvertError(f"{p}: not found; give --mediapipe-dir pointing at an unpacked mediapipe 0.10.21 wheel")
    return p


def _conv(L: Any, g: Graph, op: Any, ins: List[int], nm: str, x: Any) -> Any:
    """CONV_2D as a Keras Conv2D with the flatbuffer's (out, kh, kw, in) weights."""
    import tflite  # noqa: PLC0415

    o = options(op, tflite.Conv2DOptions)
    if o.FusedActivationFunction() != _FUSED_NONE:
        raise ConvertError(f"{g.source}: {nm} has a fused activation (the landmark net has none)")
    w = g.constant(ins[1]).astype(np.float32).transpose(1, 2, 3, 0)
    b = g.constant(ins[2]).astype(np.float32)
    layer = L.Conv2D(w.shape[3], w.shape[:2], strides=(o.StrideH(), o.StrideW()),
                     padding="same" if o.Padding() == 0 else "valid", name=nm)
    y = layer(x)
    layer.set_weights([w, b])
    return y


def _depthwise(L: Any, g: Graph, op: Any, ins: List[int], nm: str, x: Any) -> Any:
    """DEPTHWISE_CONV_2D (multiplier 1 here) as a Keras DepthwiseConv2D."""
    import tflite  # noqa: PLC0415

    o = options(op, tflite.DepthwiseConv2DOptions)
    w = g.constant(ins[1]).astype(np.float32)  # (1, kh, kw, C)
    b = g.constant(ins[2]).astype(np.float32)
    c = int(x.shape[-1])
    layer = L.DepthwiseConv2D(w.shape[1:3], strides=(o.StrideH(), o.StrideW()),
                              padding="same" if o.Padding() == 0 else "valid", depth_multiplier=w.shape[3] // c, name=nm)
    y = layer(x)
    layer.set_weights([w.reshape(w.shape[1], w.shape[2], c, w.shape[3] // c), b])
    return y


def _prelu(L: Any, g: Graph, ins: List[int], nm: str, x: Any, mode: str) -> Any:
    """PRELU with one alpha per channel (stored (1, 1, C)), shared over height and width.

    ``mode`` "layer": a Keras PReLU (TFLite PRELU). "dw": the same function as
    ``relu(x) - alpha * relu(-x)`` built from 1x1 depthwise convolutions with fused RELU and an ADD.
    Why: XNNPACK does not take int8 PRELU, so each one splits the int8 graph out of the delegate
    (96 px trunk, 1 thread: about 1.4 ms per crop against 0.4-0.5 ms for the "dw" form, all
    delegated). "relu": plain ReLU instead (about 0.27 ms; changes the pretrained function).
    """
    alpha = g.constant(ins[1]).astype(np.float32).reshape(1, 1, -1)
    if mode == "relu":  # not the original function: a cheaper trunk that fine-tuning must adapt
        return L.ReLU(name=nm)(x)
    if mode == "layer":
        layer = L.PReLU(shared_axes=[1, 2], name=nm)
        y = layer(x)
        layer.set_weights([alpha])
        return y
    if mode != "dw":
        raise ConvertError(f"unknown PReLU mode {mode!r} (layer, dw or relu)")

    def scale(w: np.ndarray | float, activation: Optional[str], suffix: str, inp: Any) -> Any:
        """Per-channel multiply by ``w`` (then ``activation``) as a trainable 1x1 depthwise conv."""
        layer = L.DepthwiseConv2D(1, use_bias=False, activation=activation, name=f"{nm}_{suffix}")
        out = layer(inp)
        layer.set_weights([np.broadcast_to(np.asarray(w, np.float32).reshape(1, 1, -1, 1), (1, 1, alpha.shape[-1], 1)).copy()])
        return out

    neg = scale(-1.0, "relu", "neg", x)  # relu(-x)
    return L.Add(name=nm)([scale(1.0, "relu", "pos", x), scale(-alpha, None, "alpha", neg)])


def rebuild(data: bytes, source: str = "face_landmark.tflite", size: int = NATIVE_SIZE, stride: Optional[int] = None,
            input_range: Tuple[float, float] = NATIVE_RANGE, prelu: str = "layer", name: str = "face_landmark") -> Any:
    """The landmark net as a Keras model on a ``size`` x ``size`` input.

    ``stride`` None: the whole net, outputs ``landmarks`` (1, 1, 1404) and ``face_flag`` (1, 1, 1)
    (logit) like the flatbuffer (only at the native size). ``stride`` in :data:`CUTS`: the trunk up
    to that stride, output ``features``. ``input_range``: the range the Keras input takes (mapped
    to the native one by a Rescaling layer first). ``prelu``: "layer", "dw" or "relu" (see :func:`_prelu`).
    """
    keras = keras_module()
    L = keras.layers
    pad_layer = layers()["Pad"]
    g = Graph(data, source)
    if stride is not None and stride not in CUTS:
        raise ConvertError(f"stride {stride} is not a trunk cut; choose one of {sorted(CUTS)}")
    if stride is None and size != NATIVE_SIZE:
        raise ConvertError(f"the whole net (with its heads) only runs at {NATIVE_SIZE} px; give a stride to cut the trunk")
    if size % (stride or 1) or size < 2 * (stride or 1):
        raise ConvertError(f"input size {size} must be a multiple of the stride {stride} (and at least twice it)")
    inp = keras.Input(shape=(size, size, 3), name="image")
    x0 = inp
    if tuple(input_range) != tuple(NATIVE_RANGE):
        # an exact affine layer (folding it into the first conv would change its zero padding)
        a = (NATIVE_RANGE[1] - NATIVE_RANGE[0]) / (input_range[1] - input_range[0])
        x0 = L.Rescaling(a, NATIVE_RANGE[0] - a * input_range[0], name="to_native_range")(inp)
    vals: Dict[int, Any] = {int(g.sg.Inputs(0)): x0}
    consts: Dict[int, int] = {}  # DEQUANTIZE output -> its fp16 constant input
    used = {"image", "features", "landmarks", "face_flag"}
    cut = CUTS.get(stride) if stride is not None else None
    for k, op_name, op, ins, outs in g.ops():
        if op_name == "DEQUANTIZE" and ins[0] not in vals:
            consts[outs[0]] = ins[0]  # fp16 weights: read from the buffer feeding the DEQUANTIZE
            continue
        if ins[0] not in vals:
            raise ConvertError(f"{source}: op #{k} {op_name} does not follow from the input")
        nm = layer_name(g.name(outs[0]), used)
        x = vals[ins[0]]
        ins = [consts.get(i, i) for i in ins]
        if op_name == "CONV_2D":
            y = _conv(L, g, op, ins, nm, x)
        elif op_name == "DEPTHWISE_CONV_2D":
            y = _depthwise(L, g, op, ins, nm, x)
        elif op_name == "PRELU":
            y = _prelu(L, g, ins, nm, x, prelu)
        elif op_name == "ADD":
            y = L.Add(name=nm)([x, vals[ins[1]]])
        elif op_name == "MAX_POOL_2D":
            import tflite  # noqa: PLC0415

            o = options(op, tflite.Pool2DOptions)
            y = L.MaxPooling2D((o.FilterHeight(), o.FilterWidth()), strides=(o.StrideH(), o.StrideW()),
                               padding="same" if o.Padding() == 0 else "valid", name=nm)(x)
        elif op_name == "PAD":
            y = pad_layer(g.constant(ins[1]).astype(int).tolist(), name=nm)(x)
        else:
            raise ConvertError(f"{source}: op {op_name} (#{k}) is not in the landmark net's set")
        want = g.shape(outs[0])
        if size == NATIVE_SIZE and tuple(y.shape[1:]) != tuple(want[1:]):
            raise ConvertError(f"{source}: op #{k} {op_name} gives {tuple(y.shape)}, tflite says {want}")
        vals[outs[0]] = y
        if cut is not None and g.name(outs[0]) == cut:
            return keras.Model(inp, L.Identity(name="features")(y), name=f"{name}_trunk{stride}_{size}")
    if cut is not None:
        raise ConvertError(f"{source}: tensor {cut!r} (stride {stride}) not found")
    heads = {}
    for j in range(g.sg.OutputsLength()):
        t = int(g.sg.Outputs(j))
        logical = "face_flag" if g.shape(t)[-1] == 1 else "landmarks"
        heads[logical] = L.Reshape((1, g.shape(t)[-1]), name=logical)(vals[t])
    return keras.Model(inp, [heads["landmarks"], heads["face_flag"]], name=name)


def load(mediapipe_dir: Path | str, size: int = NATIVE_SIZE, stride: Optional[int] = None,
         input_range: Tuple[float, float] = NATIVE_RANGE, prelu: str = "layer") -> Tuple[Any, bytes, str]:
    """(Keras model, original tflite bytes, its sha256); see :func:`rebuild`."""
    p = model_path(mediapipe_dir)
    data = p.read_bytes()
    return rebuild(data, str(p), size, stride, input_range, prelu), data, hashlib.sha256(data).hexdigest()


def trunk(mediapipe_dir: Path | str, size: int, stride: int = 16, input_range: Tuple[float, float] = PROJECT_RANGE,
          prelu: str = "dw") -> Any:
    """The pretrained trunk up to ``stride`` on a ``size`` px input, taking ``input_range`` pixels
    (PReLU in the int8-delegate-friendly "dw" form by default)."""
    return load(mediapipe_dir, size, stride, input_range, prelu)[0]


# ---------------------------------------------------------------------------------------------
# Parity with the original


def _run_tflite(data: bytes, x: np.ndarray) -> Dict[Tuple[int, ...], np.ndarray]:
    """Original outputs (by shape) for a batch of float inputs, one invoke per image."""
    from convert.litert import TfliteRunner  # noqa: PLC0415

    run = TfliteRunner(data)
    res: Dict[Tuple[int, ...], List[np.ndarray]] = {}
    for xi in x:
        for shape, v in run(xi[None].astype(np.float32)).items():
            res.setdefault(shape[1:], []).append(v[0])
    return {k: np.stack(v) for k, v in res.items()}


def to_range(rgb: np.ndarray, rng: Tuple[float, float]) -> np.ndarray:
    """uint8 pixels mapped linearly to ``rng``."""
    return (rgb.astype(np.float32) / 255.0 * (rng[1] - rng[0]) + rng[0]).astype(np.float32)


def parity(model: Any, data: bytes, crops: np.ndarray, input_range: Tuple[float, float] = NATIVE_RANGE) -> Dict[str, float]:
    """Max |Keras - original| of landmarks (pixels) and face-flag logit on real crops at 192 px;
    ``model`` takes ``input_range`` pixels, the original always its native range."""
    ref = _run_tflite(data, to_range(crops, NATIVE_RANGE))
    lm, flag = (np.asarray(v) for v in model.predict(to_range(crops, input_range), batch_size=8, verbose=0))
    lm_ref, flag_ref = ref[(1, 1, 1404)].reshape(len(crops), 1, 1404), ref[(1, 1, 1)].reshape(len(crops), 1, 1)
    return {
        "n_crops": int(len(crops)),
        "landmarks_max_abs_diff": float(np.abs(lm - lm_ref).max()),
        "landmarks_max_rel_diff": float(np.abs(lm - lm_ref).max() / max(1e-6, np.abs(lm_ref).max())),
        "face_flag_max_abs_diff": float(np.abs(flag - flag_ref).max()),
    }


def range_check(data: bytes, faces: np.ndarray, backgrounds: np.ndarray) -> Dict[str, Dict[str, float]]:
    """How well the original works on [0, 1] and on [-1, 1] inputs (192 px crops): face-flag AUC of
    ``faces`` against ``backgrounds``, and mean distance (px) from each landmark of a face to the
    nearest landmark of its mirrored face's prediction mirrored back (lower = more consistent)."""
    out = {}
    for rng in ((0.0, 1.0), (-1.0, 1.0)):
        f = _run_tflite(data, to_range(faces, rng))
        b = _run_tflite(data, to_range(backgrounds, rng))
        fm = _run_tflite(data, to_range(faces[:, :, ::-1], rng))
        ff, bf = f[(1, 1, 1)].reshape(-1), b[(1, 1, 1)].reshape(-1)
        pts = f[(1, 1, 1404)].reshape(len(faces), 468, 3)[:, :, :2]
        back = fm[(1, 1, 1404)].reshape(len(faces), 468, 3)[:, :, :2] * np.array([-1.0, 1.0]) + np.array([faces.shape[2], 0.0])
        nn = np.sqrt(((pts[:, :, None] - back[:, None]) ** 2).sum(-1)).min(axis=2)
        out[f"[{rng[0]:g}, {rng[1]:g}]"] = {"face_flag_auc": float((ff[:, None] > bf[None, :]).mean()), "mirror_px": float(nn.mean())}
    return out


__all__ = ("rebuild", "load", "trunk", "model_path", "to_range", "parity", "range_check", "CUTS", "NATIVE_RANGE", "PROJECT_RANGE")
