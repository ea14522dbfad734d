"""Rebuild MediaPipe's BlazeFace .tflite files as Keras 3 functional models with their weights.

The fp16 flatbuffers are read with the ``tflite`` package (not the interpreter): constant weights
are fp16 buffers behind DEQUANTIZE ops, and in the full-range file 46 of them are stored sparse
(CSR, behind DENSIFY). They are densified here from the flatbuffer's own sparsity parameters;
reading them back from an interpreter gave wrong values. Every other op becomes one Keras layer,
so the float model can be re-quantized to int8, fine-tuned or inspected.

Output layers are named after the sidecar's logical outputs: ``regressors`` (1, N, 16) and
``scores`` (1, N, 1).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.pipeline.detectors import blazeface
from convert.errors import ConvertError
from convert.fetch import pip_download
from convert.ports.graph import FUSED, Graph, layer_name, layers, options
from convert.tf import keras_module
from convert.paths import REPO_ROOT

MEDIAPIPE_VERSION = "0.10.21"
FACE_DIR = "mediapipe/modules/face_detection"
# What is unpacked from the wheel: the face-detection and face-landmark graphs (Apache-2.0).
UNPACKED_DIRS = (FACE_DIR, "mediapipe/modules/face_landmark")
MODEL_FILES = {
    "short": "face_detection_short_range.tflite",
    "full": "face_detection_full_range_sparse.tflite",
}
# The landmark graph whose trunk convert.ports.landmark_keras reuses as a classifier backbone.
LANDMARK_FILE = "mediapipe/modules/face_landmark/face_landmark.tflite"

# MediaPipe's face_detection_{short,full}_range graphs (mediapipe 0.10.21,
# modules/face_detection/face_detection.pbtxt + the *_range_cpu.pbtxt options): SsdAnchorsCalculator
# and TensorsToDetectionsCalculator options, verbatim names.
ANCHORS: Dict[str, Dict[str, Any]] = {
    "full": {
        "num_layers": 1, "min_scale": 0.1484375, "max_scale": 0.75,
        "input_size_height": 192, "input_size_width": 192,
        "anchor_offset_x": 0.5, "anchor_offset_y": 0.5,
        "strides": [4], "aspect_ratios": [1.0],
        "fixed_anchor_size": True, "interpolated_scale_aspect_ratio": 0.0,
        "reduce_boxes_in_lowest_layer": False,
    },
    "short": {
        "num_layers": 4, "min_scale": 0.1484375, "max_scale": 0.75,
        "input_size_height": 128, "input_size_width": 128,
        "anchor_offset_x": 0.5, "anchor_offset_y": 0.5,
        "strides": [8, 16, 16, 16], "aspect_ratios": [1.0],
        "fixed_anchor_size": True, "interpolated_scale_aspect_ratio": 1.0,
        "reduce_boxes_in_lowest_layer": False,
    },
}
MIN_SCORE = {"full": 0.6, "short": 0.5}  # MediaPipe's min_score_thresh per graph
KEYPOINT_NAMES = ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"]


def decoding_fields(variant: str, input_wh: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """The sidecar ``decoding`` of a BlazeFace variant (MediaPipe's graph options), at its own input
    or at ``input_wh`` (width, height) for the same graph rebuilt for another input size
    (:func:`convert.ports.blazeface_keras.tflite_to_keras`): the anchor grid and the decoding scale follow."""
    a = dict(ANCHORS[variant])
    if input_wh is not None:
        a["input_size_width"], a["input_size_height"] = int(input_wh[0]), int(input_wh[1])
    width, height = int(a["input_size_width"]), int(a["input_size_height"])
    return {
        "type": "blazeface",
        "anchors": a,
        "num_boxes": len(blazeface.generate_anchors(a)),
        "box_format": "xywh_center",
        "scale": [width, height, width, height],  # raw offsets are in input pixels
        "num_keypoints": 6, "keypoint_offset": 4,
        "keypoint_names": list(KEYPOINT_NAMES),
        "score_activation": "sigmoid", "score_clipping": 100.0,
        "nms": {"method": "weighted", "iou_threshold": blazeface.DEFAULT_NMS_IOU},
        "default_min_score": 0.5,
        "box_adjust": {"dx": 0.0, "dy": 0.0, "sw": 1.0, "sh": 1.0},
    }


def tflite_to_keras(data: bytes, source: str = "model", name: str = "blazeface",
                    input_hw: Optional[Tuple[int, int]] = None) -> Any:
    """Rebuild a float TFLite graph (CONV_2D, DEPTHWISE_CONV_2D, ADD, PAD, MAX_POOL_2D, RELU,
    RESIZE_BILINEAR, DEPTH_TO_SPACE, RESHAPE, CONCATENATION; fp16 weights) as a Keras model.

    ``input_hw`` (height, width) rebuilds the same weights for another input size (a multiple of
    the graph's largest stride): upsampling sizes scale with it and the anchor reshapes follow, so
    the model has one output row per anchor of the new grid. ``None`` keeps the original size.
    """
    import tflite  # noqa: PLC0415

    keras = keras_module()
    custom = layers()
    L = keras.layers
    g = Graph(data, source)
    if g.sg.InputsLength() != 1:
        raise ConvertError(f"{source}: expected one input")
    in_idx = int(g.sg.Inputs(0))
    in_shape = g.shape(in_idx)
    same_size = input_hw is None or tuple(input_hw) == tuple(in_shape[1:3])
    fy, fx = (1.0, 1.0) if same_size else (input_hw[0] / in_shape[1], input_hw[1] / in_shape[2])
    shape_in = tuple(in_shape[1:]) if same_size else (int(input_hw[0]), int(input_hw[1]), int(in_shape[3]))
    inp = keras.Input(shape=shape_in, batch_size=1, name="input")
    vals: Dict[int, Any] = {in_idx: inp}  # tensor index -> Keras tensor
    # original (h, w) of a feature map -> its rebuilt (h, w): an upsampling goes back to the size
    # the matching encoder stage has at the new input (rounding a scaled size can miss it by one)
    grid: Dict[Tuple[int, int], Tuple[int, int]] = {tuple(in_shape[1:3]): tuple(shape_in[:2])}
    consts: Dict[int, np.ndarray] = {}
    used: set = {"input", "regressors", "scores"}

    def const(i: int) -> np.ndarray:
        if i in consts:
            return consts[i]
        v = g.constant(i)
        if v is None:
            raise ConvertError(f"{source}: tensor {g.name(i)!r} is expected to be constant")
        return v

    def act(x: Any, fused: int, where: str) -> Any:
        if fused not in FUSED:
            raise ConvertError(f"{source}: unsupported fused activation {fused} in {where}")
        return x if FUSED[fused] is None else L.Activation(FUSED[fused], name=layer_name(where + "_act", used))(x)

    for k, op_name, op, ins, outs in g.ops():
        nm = layer_name(g.name(outs[0]), used)
        if op_name in ("DEQUANTIZE", "DENSIFY") and ins[0] not in vals:
            v = const(ins[0])
            consts[outs[0]] = v.astype(np.float32) if op_name == "DEQUANTIZE" else v
            continue
        if op_name == "CONV_2D":
            o = options(op, tflite.Conv2DOptions)
            w = const(ins[1])  # (out, kh, kw, in)
            b = const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            layer = L.Conv2D(
                w.shape[0],
                w.shape[1:3],
                strides=(o.StrideH(), o.StrideW()),
                padding="same" if o.Padding() == 0 else "valid",
                dilation_rate=(o.DilationHFactor(), o.DilationWFactor()),
                activation=FUSED.get(o.FusedActivationFunction(), "?"),
                use_bias=b is not None,
                name=nm,
            )
            y = layer(vals[ins[0]])
            layer.set_weights([w.transpose(1, 2, 3, 0)] + ([b] if b is not None else []))
        elif op_name == "DEPTHWISE_CONV_2D":
            o = options(op, tflite.DepthwiseConv2DOptions)
            w = const(ins[1])  # (1, kh, kw, C * mult)
            b = const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            c_in = g.shape(ins[0])[3]
            mult = w.shape[3] // c_in
            layer = L.DepthwiseConv2D(
                w.shape[1:3],
                strides=(o.StrideH(), o.StrideW()),
                padding="same" if o.Padding() == 0 else "valid",
                depth_multiplier=mult,
                dilation_rate=(o.DilationHFactor(), o.DilationWFactor()),
                activation=FUSED.get(o.FusedActivationFunction(), "?"),
                use_bias=b is not None,
                name=nm,
            )
            y = layer(vals[ins[0]])
            layer.set_weights([w.reshape(w.shape[1], w.shape[2], c_in, mult)] + ([b] if b is not None else []))
        elif op_name == "ADD":
            o = options(op, tflite.AddOptions)
            if ins[0] not in vals or ins[1] not in vals:
                raise ConvertError(f"{source}: ADD with a constant operand is not supported")
            y = act(L.Add(name=nm)([vals[ins[0]], vals[ins[1]]]), o.FusedActivationFunction(), nm)
        elif op_name == "RELU":
            y = L.ReLU(name=nm)(vals[ins[0]])
        elif op_name == "PAD":
            pads = const(ins[1]).astype(int).tolist()
            y = custom["Pad"](pads, name=nm)(vals[ins[0]])
        elif op_name == "MAX_POOL_2D":
            o = options(op, tflite.Pool2DOptions)
            y = L.MaxPooling2D(
                (o.FilterHeight(), o.FilterWidth()),
                strides=(o.StrideH(), o.StrideW()),
                padding="same" if o.Padding() == 0 else "valid",
                name=nm,
            )(vals[ins[0]])
            y = act(y, o.FusedActivationFunction(), nm)
        elif op_name == "RESIZE_BILINEAR":
            o = options(op, tflite.ResizeBilinearOptions)
            size = const(ins[1]).astype(int).tolist()
            size = list(grid.get((size[0], size[1]), (int(round(size[0] * fy)), int(round(size[1] * fx)))))
            y = custom["ResizeBilinear"](size, o.AlignCorners(), o.HalfPixelCenters(), name=nm)(vals[ins[0]])
        elif op_name == "DEPTH_TO_SPACE":
            o = options(op, tflite.DepthToSpaceOptions)
            y = custom["DepthToSpace"](o.BlockSize(), name=nm)(vals[ins[0]])
        elif op_name == "RESHAPE":
            target = tuple(g.shape(outs[0])[1:])
            y = L.Reshape(target if same_size else (-1,) + target[1:], name=nm)(vals[ins[0]])
        elif op_name == "CONCATENATION":
            o = options(op, tflite.ConcatenationOptions)
            y = L.Concatenate(axis=o.Axis(), name=nm)([vals[i] for i in ins])
            y = act(y, o.FusedActivationFunction(), nm)
        else:
            raise ConvertError(f"{source}: op {op_name} (#{k}) has no Keras equivalent here")
        if same_size and tuple(y.shape[1:]) != tuple(g.shape(outs[0])[1:]):
            raise ConvertError(f"{source}: op #{k} {op_name} gives {tuple(y.shape)}, tflite says {g.shape(outs[0])}")
        vals[outs[0]] = y
        if len(y.shape) == 4:
            grid.setdefault(tuple(g.shape(outs[0])[1:3]), (int(y.shape[1]), int(y.shape[2])))

    outputs = {}
    for j in range(g.sg.OutputsLength()):
        t = int(g.sg.Outputs(j))
        logical = "scores" if g.shape(t)[-1] == 1 else "regressors"
        outputs[logical] = L.Identity(name=logical)(vals[t])
    return keras.Model(inp, [outputs["regressors"], outputs["scores"]], name=name)


# ---------------------------------------------------------------------------------------------
# Sources


def mediapipe_dir() -> Path:
    """Where the unpacked mediapipe wheel is looked for: ``$MASKWATCH_MEDIAPIPE_DIR``, else
    ``.cache/mediapipe-0.10.21`` in the checkout (filled by :func:`ensure_mediapipe`)."""
    env = os.environ.get("MASKWATCH_MEDIAPIPE_DIR")
    return Path(env) if env else REPO_ROOT / ".cache" / f"mediapipe-{MEDIAPIPE_VERSION}"


def fetch_mediapipe(dest: Path) -> Path:
    """Download the mediapipe wheel (no install) and unpack its face models and licence into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(pip_download(f"mediapipe=={MEDIAPIPE_VERSION}", tmp)) as z:
            for member in z.namelist():
                wanted = any(member.startswith(d + "/") for d in UNPACKED_DIRS) and member.endswith(".tflite")
                if wanted or member.endswith("dist-info/LICENSE"):
                    z.extract(member, dest)
    return dest


def ensure_mediapipe(dest: Optional[Path] = None) -> Path:
    """The unpacked wheel at ``dest`` (default :func:`mediapipe_dir`), fetched once when absent."""
    dest = Path(dest) if dest is not None else mediapipe_dir()
    if all((dest / FACE_DIR / f).is_file() for f in MODEL_FILES.values()) and (dest / LANDMARK_FILE).is_file():
        return dest
    return fetch_mediapipe(dest)


def model_path(mediapipe_dir: Path, variant: str) -> Path:
    """Path of a BlazeFace .tflite in an unpacked mediapipe wheel; error naming the fix if absent."""
    p = Path(mediapipe_dir) / FACE_DIR / MODEL_FILES[variant]
    if not p.is_file():
        raise ConvertError(
            f"{p}: not found. Give --mediapipe-dir pointing at an unpacked mediapipe {MEDIAPIPE_VERSION} wheel, "
            "or leave it out to fetch the wheel with pip download"
        )
    return p


def load_blazeface(mediapipe_dir: Path, variant: str, input_hw: Optional[Tuple[int, int]] = None
                   ) -> Tuple[Any, bytes, str]:
    """(Keras model, original tflite bytes, its sha256) for variant 'short' or 'full'; ``input_hw``
    as in :func:`tflite_to_keras`."""
    p = model_path(mediapipe_dir, variant)
    data = p.read_bytes()
    model = tflite_to_keras(data, str(p), name=f"blazeface_{variant}_range", input_hw=input_hw)
    return model, data, hashlib.sha256(data).hexdigest()


def check_images(images_dir: Optional[Path], n_images: int) -> List[np.ndarray]:
    """RGB uint8 real images for parity checks: skimage's astronaut + up to n scene images."""
    import cv2  # noqa: PLC0415

    imgs: List[np.ndarray] = []
    try:
        from skimage.data import astronaut  # noqa: PLC0415

        imgs.append(astronaut())
    except ImportError:  # pragma: no cover - scikit-image is a test/demo extra
        pass
    if images_dir is not None and Path(images_dir).is_dir():
        for p in sorted(Path(images_dir).glob("*.jpg"))[: max(0, n_images - len(imgs))]:
            bgr = cv2.imread(str(p))
            if bgr is not None:
                imgs.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not imgs:
        raise ConvertError(f"no real images to check the rebuild against: {images_dir} has no .jpg and skimage is missing")
    return imgs


def parity_vs_tflite(model: Any, data: bytes, images_dir: Optional[Path], n_images: int = 8) -> Dict[str, Any]:
    """Max |Keras - original tflite| over both outputs on real images, each stretched to the input."""
    import cv2  # noqa: PLC0415
    from convert.litert import TfliteRunner  # noqa: PLC0415

    run = TfliteRunner(data)
    h, w = int(run.inp["shape"][1]), int(run.inp["shape"][2])
    worst = 0.0
    imgs = check_images(images_dir, n_images)
    for rgb in imgs:
        x = ((cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) - 127.5) / 127.5)[None]
        ref = run(x)
        for out in model(x, training=False):
            out = np.asarray(out)
            worst = max(worst, float(np.abs(out - ref[out.shape]).max()))
    return {"n_images": len(imgs), "max_abs_diff": worst}


def skip_blocks(model: Any, adds: Sequence[str]) -> Any:
    """A copy of a functional ``model`` without the residual blocks whose ``Add`` layers are named in
    ``adds``: each such block's output becomes its skip input, so its convolutions drop out of the
    graph; every other layer (and its weights) is reused as it is. BlazeFace's blocks at the finest
    strides cost the most time per parameter: see the model card."""
    keras = keras_module()
    by_name = {layer.name: layer for layer in model.layers}
    wrong = [n for n in adds if type(by_name.get(n)).__name__ != "Add"]
    if wrong:
        raise ValueError(f"not Add layers of {model.name}: {wrong}")
    inp = keras.Input(shape=tuple(model.input.shape[1:]), batch_size=model.input.shape[0], name=model.input.name)
    new = {id(model.input): inp}
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        many = isinstance(layer.input, (list, tuple))
        ins = [new[id(t)] for t in (layer.input if many else [layer.input])]
        # A residual Add's first input is the block's skip path (as the graphs are rebuilt here).
        new[id(layer.output)] = ins[0] if layer.name in adds else layer(ins if many else ins[0])
    return keras.Model(inp, [new[id(t)] for t in model.outputs], name=f"{model.name}_slim")


def load_keras(path: Path | str) -> Any:
    """Load a .keras file made here (registers the custom layers first)."""
    keras = keras_module()
    layers()
    return keras.saving.load_model(str(path), compile=False)


__all__ = ("ANCHORS", "KEYPOINT_NAMES", "decoding_fields", "tflite_to_keras", "parity_vs_tflite", "check_images", "load_blazeface", "load_keras",
           "fetch_mediapipe", "model_path", "skip_blocks")
