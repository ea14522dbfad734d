"""Keras model -> full-integer int8 TFLite (or its float16 variant).

``quantize_int8`` makes an int8-in, int8-out model (weights and activations int8); outputs named
in ``float_outputs`` have their last convolution computed in float32 (:func:`float_heads`).
``quantize_float16`` makes the float variant: float16 weights, float32 input, output and arithmetic.
Writing the model with its sidecar is :mod:`convert.export.sidecar`'s.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from convert.errors import ConvertError
from convert.tf import tensorflow

def tensorflow_version() -> str:
    """Installed TensorFlow version, without importing it."""
    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - convert extra not installed
        return "unknown"


def _collect_representative(model: Any, representative: Iterable[np.ndarray]) -> List[np.ndarray]:
    """Materialize and check the calibration batches (so errors are clear, before TF sees them)."""
    want = tuple(model.inputs[0].shape[1:])  # None: a dimension the model leaves open
    batches: List[np.ndarray] = []
    for i, x in enumerate(representative):
        x = np.asarray(x)
        if x.ndim != len(want) + 1 or x.shape[0] != 1 or any(w is not None and int(w) != d for w, d in zip(want, x.shape[1:])):
            raise ConvertError(
                f"representative batch {i} has shape {x.shape}, the model wants (1, {', '.join(map(str, want))}): "
                "resize the images to the model input and add a batch axis of 1"
            )
        if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
            raise ConvertError(f"representative batch {i} must be finite float32 (preprocessed), got {x.dtype}")
        batches.append(x.astype(np.float32))
    if not batches:
        raise ConvertError("the representative dataset is empty: give a folder or CSV with at least one image")
    return batches


def keras_output_names(model: Any) -> List[str]:
    """Logical names of a Keras model's outputs (the layer names of its output tensors)."""
    names = getattr(model, "output_names", None)
    if names:
        return [str(n) for n in names]
    return [t.name.split("/")[0] for t in model.outputs]


def quantize_int8(model: Any, representative: Iterable[np.ndarray], *, float_outputs: Sequence[str] = ()) -> bytes:
    """Convert a Keras model to a full-integer int8 TFLite flatbuffer.

    ``representative`` yields preprocessed float32 batches of shape (1, H, W, C) (calibration).
    ``float_outputs`` are logical output names (Keras output names = sidecar ``outputs`` keys)
    whose convolution head runs in float32 (see :func:`float_heads`); the others stay int8.
    Output tensors are identified by shape, so every output shape must be unique.
    """
    batches = _collect_representative(model, representative)
    names = keras_output_names(model)
    shapes = [tuple(int(d) if d is not None else 1 for d in t.shape) for t in model.outputs]
    if len(set(shapes)) != len(shapes):
        raise ConvertError(f"output shapes {shapes} are not unique: outputs are found by shape after conversion")
    unknown = sorted(set(float_outputs) - set(names))
    if unknown:
        raise ConvertError(f"float_outputs {unknown} are not outputs of the model (outputs: {names})")

    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([b] for b in batches)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        flat = bytes(converter.convert())
    except Exception as exc:  # the converter raises many types; all mean "this model cannot be int8"
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "error" in ln.lower()), first[0] if first else type(exc).__name__)
        raise ConvertError(
            f"TFLite int8 conversion failed: {detail.strip()[:400]} "
            "(an op without an int8 kernel? use only TFLITE_BUILTINS int8 ops)"
        ) from exc
    if float_outputs:
        float_shapes = [shapes[names.index(n)] for n in float_outputs]
        flat = float_heads(flat, float_shapes, list(float_outputs))
    return flat


def open_input_size(model: Any) -> Any:
    """The same Keras model (shared weights) with its input's height and width left open and a batch
    of 1: for fully convolutional models whose sidecar has ``input.adaptive_multiple``. Converted,
    the flatbuffer's input signature is (1, -1, -1, C) and every reshape follows the input size."""
    from convert.tf import keras_module  # noqa: PLC0415

    keras = keras_module()
    inp = keras.Input((None, None, int(model.inputs[0].shape[-1])), batch_size=1)
    # clone_model keeps every layer's name (the outputs' names are the sidecar's logical names)
    opened = keras.models.clone_model(model, input_tensors=inp)
    opened.set_weights(model.get_weights())
    return opened


def quantize_float16(model: Any) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with float16 weights and float32 input/output.

    The runtime computes in float32 (XNNPACK unpacks the weights once at load): on CPUs without
    fast int8 dot products this runs faster than the int8 model, at half the float32 size.
    """
    shapes = [tuple(int(d) if d is not None else 1 for d in t.shape) for t in model.outputs]
    if len(set(shapes)) != len(shapes):
        raise ConvertError(f"output shapes {shapes} are not unique: outputs are found by shape after conversion")
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises many types; all mean "this model cannot be converted"
        first = str(exc).strip().splitlines()
        raise ConvertError(f"TFLite float16 conversion failed: {(first[0] if first else type(exc).__name__)[:400]}") from exc


_SHAPE_OPS = ("RESHAPE", "DEPTH_TO_SPACE", "CONCATENATION")  # move values, no arithmetic
_HEAD_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def float_heads(flat: bytes, shapes: Sequence[Tuple[int, ...]], names: Sequence[str] = ()) -> bytes:
    """Run the heads producing the outputs of the given shapes in float32.

    From each such output, walks back through shape-only ops (RESHAPE, DEPTH_TO_SPACE,
    CONCATENATION) to the convolutions / fully-connected layers that compute it; those get a
    DEQUANTIZE on their int8 input and float32 weights/bias (the int8 weights dequantized), and
    every tensor on the way becomes float32. The body stays int8; only the head's output range is no longer squeezed into
    256 levels (BlazeFace's score logits span hundreds, its box offsets +-280 px).
    """
    tensorflow()
    from tensorflow.lite.python import schema_py_generated as fb  # noqa: PLC0415
    from tensorflow.lite.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flat))
    sg = model.subgraphs[0]
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def op_name(op: Any) -> str:
        c = model.operatorCodes[op.opcodeIndex]
        return op_names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM")

    def opcode(code: int, version: int) -> int:
        for i, c in enumerate(model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
                return i
        c = fb.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), version
        model.operatorCodes.append(c)
        return len(model.operatorCodes) - 1

    def new_tensor(like: Any, name: str, data: Optional[np.ndarray] = None) -> int:
        t = fb.TensorT()
        t.shape = np.array(like.shape, np.int32)
        t.shapeSignature = None if like.shapeSignature is None else np.array(like.shapeSignature, np.int32)
        t.type = fb.TensorType.FLOAT32
        t.name = name.encode()
        buf = fb.BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data, np.float32).tobytes(), np.uint8)
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def dequantized(ti: int) -> np.ndarray:
        t = sg.tensors[ti]
        raw = model.buffers[t.buffer].data
        dt = {fb.TensorType.INT8: np.int8, fb.TensorType.INT32: np.int32}[t.type]
        q = np.frombuffer(np.asarray(raw, np.uint8).tobytes(), dt).reshape(t.shape).astype(np.float64)
        scale = np.asarray(t.quantization.scale, np.float64)
        zero = np.asarray(t.quantization.zeroPoint if t.quantization.zeroPoint is not None else [0], np.float64)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[t.quantization.quantizedDimension] = -1
        return ((q - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)

    producer = {int(o): k for k, op in enumerate(sg.operators) for o in op.outputs}
    consumers: Dict[int, List[int]] = {}
    for k, op in enumerate(sg.operators):
        for i in op.inputs:
            consumers.setdefault(int(i), []).append(k)

    to_float: List[int] = []
    for shape in shapes:
        pos = [k for k, t in enumerate(sg.outputs) if tuple(int(d) for d in sg.tensors[t].shape) == tuple(shape)]
        if len(pos) != 1:
            raise ConvertError(f"no unique output of shape {list(shape)} to compute in float")
        frontier = [int(sg.outputs[pos[0]])]
        while frontier:
            t = frontier.pop()
            k = producer.get(t)
            if k is None or k in to_float:
                continue
            name = op_name(sg.operators[k])
            if name in _SHAPE_OPS:
                ins = list(sg.operators[k].inputs)
                frontier += ins if name == "CONCATENATION" else ins[:1]
            elif name not in _HEAD_OPS:
                raise ConvertError(
                    f"output {list(shape)} comes from {name}, not a convolution / fully-connected head: cannot leave it float"
                )
            to_float.append(k)

    float_tensors = {int(sg.operators[k].outputs[0]) for k in to_float}
    for t in float_tensors:
        outside = [c for c in consumers.get(t, []) if c not in to_float]
        if outside:
            raise ConvertError(f"tensor {sg.tensors[t].name!r} of a float head also feeds int8 ops")
        sg.tensors[t].type = fb.TensorType.FLOAT32
        sg.tensors[t].quantization = None

    deq = opcode(fb.BuiltinOperator.DEQUANTIZE, 2)
    inserts: List[Tuple[int, Any]] = []
    for k in to_float:
        op = sg.operators[k]
        if op_name(op) not in _HEAD_OPS:
            continue
        src = int(op.inputs[0])
        xf = new_tensor(sg.tensors[src], sg.tensors[src].name.decode() + "_float")
        d = fb.OperatorT()
        d.opcodeIndex = deq
        d.inputs, d.outputs = np.array([src], np.int32), np.array([xf], np.int32)
        inserts.append((k, d))
        w, b = int(op.inputs[1]), int(op.inputs[2]) if len(op.inputs) > 2 else -1
        ins = [xf, new_tensor(sg.tensors[w], sg.tensors[w].name.decode() + "_float", dequantized(w))]
        if b >= 0:
            ins.append(new_tensor(sg.tensors[b], sg.tensors[b].name.decode() + "_float", dequantized(b)))
        op.inputs = np.array(ins, np.int32)
    for k, d in sorted(inserts, key=lambda kd: -kd[0]):  # insert from the back: indices stay valid
        sg.operators.insert(k, d)
    for i, name in enumerate(names):
        pos = [k for k, t in enumerate(sg.outputs) if tuple(int(v) for v in sg.tensors[t].shape) == tuple(shapes[i])]
        sg.tensors[sg.outputs[pos[0]]].name = name.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


__all__ = (
    "quantize_int8",
    "quantize_float16",
    "open_input_size",
    "float_heads",
    "keras_output_names",
    "tensorflow_version",
)
