"""YuNet (libfacedetection.train, Apache-2.0) rebuilt as a trainable Keras 3 functional model.

The published ONNX file is read with the ``onnx`` package (its initializers are the weights, its
nodes the graph); every node becomes one Keras layer in NHWC: Conv -> Conv2D or DepthwiseConv2D
(BatchNorm is already folded into them), Relu, MaxPool, nearest Resize -> UpSampling2D, Add.
The output heads' Transpose/Reshape plumbing becomes one Reshape per head, and the twelve per-stride
outputs are concatenated into the three the agent's ``yunet`` decoder reads
(:mod:`agent.pipeline.detectors.yunet`): ``scores`` (cls, obj), ``boxes``, ``keypoints``.

Input: BGR, 0-255 floats, no normalization, sides multiples of 32 (the ONNX file is dynamic; a
Keras model is built for one input size). ``cv2.FaceDetectorYN`` runs the ONNX file directly and is
the parity reference (:func:`parity_vs_opencv`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.boxes import greedy_match, iou_matrix
from agent.pipeline.detectors import yunet as yunet_family
from convert.errors import ConvertError
from convert.tf import keras_module
from convert.paths import SHARED_ROOT

DEFAULT_ONNX = SHARED_ROOT / "models" / "yunet" / "yunet_n_dynamic.onnx"
STRIDES = (8, 16, 32)
# The authors' NMS (and cv2.FaceDetectorYN's): what a build writes unless asked for another.
NMS_METHOD, NMS_IOU = "hard", 0.45
HEADS = ("cls", "obj", "bbox", "kps")  # the ONNX output prefixes, one of each per stride
# The sidecar's logical outputs and the heads that make them (scores = cls and obj side by side).
OUTPUTS = {"scores": ("cls", "obj"), "boxes": ("bbox",), "keypoints": ("kps",)}
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Concat")  # the heads' dynamic reshape plumbing


def read_onnx(path: Path) -> Tuple[Any, Dict[str, np.ndarray], str]:
    """(graph, initializers by name, sha256) of a YuNet ONNX file; ConvertError if it is not one."""
    try:
        import onnx  # noqa: PLC0415
        from onnx import numpy_helper  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the convert extra installs it
        raise ConvertError("reading YuNet needs the `onnx` package: pip install -e '.[convert]'") from None
    try:
        data = Path(path).read_bytes()
        model = onnx.load_from_string(data)
    except FileNotFoundError:
        raise ConvertError(f"{path}: YuNet ONNX file not found (see ../shared/models/yunet/README.md)") from None
    except Exception as exc:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise ConvertError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    outputs = {o.name for o in model.graph.output}
    want = {f"{h}_{s}" for h in HEADS for s in STRIDES}
    if outputs != want:
        raise ConvertError(f"{path}: not a YuNet graph: outputs {sorted(outputs)}, expected {sorted(want)}")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return model.graph, inits, hashlib.sha256(data).hexdigest()


def _attrs(node: Any) -> Dict[str, Any]:
    from onnx import helper  # noqa: PLC0415

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_layer(keras: Any, node: Any, inits: Mapping[str, np.ndarray], name: str) -> Tuple[List[Any], List[np.ndarray]]:
    """Keras layers for one ONNX Conv (an optional explicit padding, then the convolution) and the
    convolution's weights in Keras order."""
    a = _attrs(node)
    w = inits[node.input[1]]
    b = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
    out_c, in_per_group, kh, kw = w.shape
    group, stride = int(a.get("group", 1)), tuple(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if list(a.get("dilations", [1, 1])) != [1, 1]:
        raise ConvertError(f"Conv {node.name or node.output[0]}: dilation is not used by YuNet")
    layers: List[Any] = []
    # PyTorch pads symmetrically; Keras 'same' does too at stride 1 with an odd kernel, but pads
    # (0, 1) at stride 2, so strided convolutions get an explicit ZeroPadding2D.
    same = stride == (1, 1) and pads == [kh // 2, kw // 2, kh // 2, kw // 2]
    if not same and any(pads):
        layers.append(keras.layers.ZeroPadding2D(((pads[0], pads[2]), (pads[1], pads[3])), name=f"{name}_pad"))
    padding = "same" if same else "valid"
    if group == 1:
        layers.append(keras.layers.Conv2D(out_c, (kh, kw), strides=stride, padding=padding, name=name))
        weights = [w.transpose(2, 3, 1, 0), b]
    elif in_per_group == 1 and group == out_c:
        layers.append(keras.layers.DepthwiseConv2D((kh, kw), strides=stride, padding=padding, name=name))
        weights = [w.transpose(2, 3, 0, 1), b]
    else:
        raise ConvertError(f"Conv {node.output[0]}: grouped convolution ({group} groups) is not depthwise")
    return layers, weights


def build_keras(onnx_path: Path = DEFAULT_ONNX, input_hw: Tuple[int, int] = (256, 320),
                name: str = "yunet") -> Tuple[Any, str]:
    """(Keras model with the ONNX weights for a fixed (height, width) input, the ONNX sha256)."""
    h, w = (int(v) for v in input_hw)
    try:
        yunet_family.check_input_size(w, h, list(STRIDES))
    except ValueError as exc:
        raise ConvertError(str(exc)) from None
    graph, inits, sha = read_onnx(onnx_path)
    keras = keras_module()
    inp = keras.Input((h, w, 3), name="input")
    tensors: Dict[str, Any] = {graph.input[0].name: inp}
    pending: List[Tuple[Any, List[np.ndarray]]] = []
    for i, node in enumerate(graph.node):
        op, out = node.op_type, node.output[0]
        lname = f"{op.lower()}_{i}" if out not in {o.name for o in graph.output} else out
        if op == "Conv":
            layers, weights = _conv_layer(keras, node, inits, lname)
            x = tensors[node.input[0]]
            for layer in layers:
                x = layer(x)
            pending.append((layers[-1], weights))
            tensors[out] = x
        elif op == "Relu":
            tensors[out] = keras.layers.ReLU(name=lname)(tensors[node.input[0]])
        elif op == "Sigmoid":
            tensors[out] = keras.layers.Activation("sigmoid", name=lname)(tensors[node.input[0]])
        elif op == "MaxPool":
            a = _attrs(node)
            if any(a.get("pads", [0])) or a.get("ceil_mode", 0):
                raise ConvertError(f"MaxPool {out}: padding / ceil_mode is not used by YuNet")
            tensors[out] = keras.layers.MaxPooling2D(tuple(a["kernel_shape"]), tuple(a["strides"]), name=lname)(
                tensors[node.input[0]])
        elif op == "Resize":
            scales = inits.get(node.input[2]) if len(node.input) > 2 else None
            if scales is None or list(scales) != [1.0, 1.0, 2.0, 2.0] or _attrs(node).get("mode") != b"nearest":
                raise ConvertError(f"Resize {out}: only YuNet's nearest x2 upsampling is supported")
            tensors[out] = keras.layers.UpSampling2D(2, interpolation="nearest", name=lname)(tensors[node.input[0]])
        elif op == "Add":
            tensors[out] = keras.layers.Add(name=lname)([tensors[n] for n in node.input])
        elif op == "Transpose":
            if list(_attrs(node)["perm"]) != [0, 2, 3, 1]:
                raise ConvertError(f"Transpose {out}: only NCHW -> NHWC is expected")
            tensors[out] = tensors[node.input[0]]  # Keras is NHWC already
        elif op == "Reshape":
            x = tensors[node.input[0]]
            tensors[out] = keras.layers.Reshape((-1, int(x.shape[-1])), name=lname)(x)
        elif op in SHAPE_OPS:
            continue  # computes the Reshape's target shape, which Keras knows statically
        else:
            raise ConvertError(f"{onnx_path}: ONNX op {op} ({out}) is not part of YuNet's graph")
    outputs = []
    for logical, heads in OUTPUTS.items():
        per_stride = []
        for s in STRIDES:
            parts = [tensors[f"{head}_{s}"] for head in heads]
            per_stride.append(parts[0] if len(parts) == 1 else keras.layers.Concatenate(-1, name=f"{logical}_{s}")(parts))
        outputs.append(keras.layers.Concatenate(1, name=logical)(per_stride))
    model = keras.Model(inp, outputs, name=name)
    for layer, weights in pending:
        layer.set_weights([np.asarray(v, np.float32) for v in weights])
    return model, sha


def keras_outputs(model: Any, bgr_input: np.ndarray) -> Dict[str, np.ndarray]:
    """The model's outputs on one (H, W, 3) BGR 0-255 input, by logical name."""
    outs = model(np.asarray(bgr_input, np.float32)[None], training=False)
    return {n: np.asarray(o)[0] for n, o in zip(OUTPUTS, outs)}


def opencv_detector(onnx_path: Path, width: int, height: int, score: float = 0.5, nms: float = NMS_IOU) -> Any:
    """``cv2.FaceDetectorYN`` running the ONNX file on inputs of ``width`` x ``height``."""
    from agent.logs import quiet_opencv  # noqa: PLC0415 - opencv 5's dnn warns at every create

    quiet_opencv()
    return cv2.FaceDetectorYN.create(str(onnx_path), "", (width, height), score, nms, 5000)


def opencv_faces(detector: Any, bgr_input: np.ndarray) -> np.ndarray:
    """An :func:`opencv_detector` on an input at its size: (N, 15) rows of x, y, w, h, five
    keypoints, score."""
    _, faces = detector.detect(np.ascontiguousarray(bgr_input))
    return np.zeros((0, 15), np.float32) if faces is None else np.asarray(faces, np.float32)


def parity_vs_opencv(model: Any, onnx_path: Path, images: Sequence[np.ndarray], score: float = 0.5,
                     nms: float = NMS_IOU) -> Dict[str, Any]:
    """The Keras model + the agent's decoder against ``cv2.FaceDetectorYN`` on letterboxed inputs.

    Faces are paired by IoU; returns the counts and the largest box / keypoint (px) and score
    differences over the pairs.
    """
    from agent.pipeline.detect import letterbox  # noqa: PLC0415

    h, w = (int(d) for d in model.inputs[0].shape[1:3])
    decoder = yunet_family.Decoder(decoding_fields(), (w, h))
    reference = opencv_detector(onnx_path, w, h, score, nms)  # one for every image: they share the size
    worst = {"box_px": 0.0, "keypoint_px": 0.0, "score": 0.0}
    n_ref = n_ours = n_pairs = 0
    for img in images:
        x, _ = letterbox(img, w, h)
        boxes, scores, kps = decoder.decode(lambda _n, v: np.asarray(v, np.float32), keras_outputs(model, x), score, nms)
        ref = opencv_faces(reference, x)
        ref_boxes = np.concatenate([ref[:, :2], ref[:, :2] + ref[:, 2:4]], axis=1)
        pairs = greedy_match(iou_matrix(boxes, ref_boxes), 0.5)
        n_ref, n_ours, n_pairs = n_ref + len(ref), n_ours + len(boxes), n_pairs + len(pairs)
        for i, j in pairs:
            worst["box_px"] = max(worst["box_px"], float(np.abs(boxes[i] - ref_boxes[j]).max()))
            worst["keypoint_px"] = max(worst["keypoint_px"], float(np.abs(kps[i].reshape(-1) - ref[j, 4:14]).max()))
            worst["score"] = max(worst["score"], float(abs(scores[i] - ref[j, 14])))
    return {"images": len(images), "faces_opencv": n_ref, "faces_keras": n_ours, "paired": n_pairs, "max_abs_diff": worst}


def decoding_fields(default_min_score: float = 0.5, iou: float = NMS_IOU,
                    box_adjust: Optional[Mapping[str, float]] = None, nms: str = NMS_METHOD) -> Dict[str, Any]:
    """The sidecar's ``decoding`` of a YuNet built here (docs/model-contract.md)."""
    return {
        "type": "yunet",
        "strides": list(STRIDES),
        "num_keypoints": len(yunet_family.KEYPOINT_NAMES),
        "keypoint_names": list(yunet_family.KEYPOINT_NAMES),
        "nms": {"method": nms, "iou_threshold": iou},
        "default_min_score": default_min_score,
        "box_adjust": dict(box_adjust or {"dx": 0.0, "dy": 0.0, "sw": 1.0, "sh": 1.0}),
    }


def sidecar_template(input_wh: Tuple[int, int], source: str, source_sha: str, min_score: float,
                     box_adjust: Optional[Mapping[str, float]] = None, nms: str = NMS_METHOD,
                     nms_iou: float = NMS_IOU) -> Dict[str, Any]:
    """The sidecar fields the build knows (quantization, hashes and dates are filled on write)."""
    w, h = input_wh
    # adaptive_multiple: YuNet runs at any multiple of its largest stride; twice that gives half as
    # many input sizes (320x192 for 16:9, 256x256 square, the full 320x256 for 3:2 and 4:3), so
    # the agent keeps fewer interpreters for photos of mixed shapes at nearly the same invoke time.
    n = sum((w // s) * (h // s) for s in (8, 16, 32))
    widths = {"scores": 2, "boxes": 4, "keypoints": 10}
    return {
        "kind": "detector",
        "name": f"yunet-n-{w}x{h}",
        "input": {"height": h, "width": w, "channels": 3, "adaptive_multiple": 2 * max(STRIDES), "color": "BGR",
                  "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}, "resize": "letterbox"},
        "outputs": {k: {"shape": [1, n, widths[k]]} for k in OUTPUTS},
        "decoding": decoding_fields(min_score, nms_iou, box_adjust, nms),
        "provenance": {
            "source_model": source, "source_model_sha256": source_sha,
            "licence": "Apache-2.0 (YuNet, ShiqiYu/libfacedetection.train; weights trained on WIDER FACE)",
        },
    }


__all__ = ("DEFAULT_ONNX", "NMS_IOU", "NMS_METHOD", "OUTPUTS", "STRIDES", "build_keras", "decoding_fields", "keras_outputs", "sidecar_template",
           "opencv_detector", "opencv_faces", "parity_vs_opencv", "read_onnx")
