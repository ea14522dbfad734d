"""Keras model -> full-integer int8 TFLite (or its float16 variant), and the atomic write of a
model + sidecar pair.

``quantize_int8`` makes an int8-in, int8-out model (weights and activations int8); outputs named
in ``float_outputs`` have their last convolution computed in float32 (:func:`float_heads`).
``quantize_float16`` makes the float variant: float16 weights, float32 input, output and arithmetic.
``write_model_pair`` writes ``NAME.tflite`` + ``NAME.json`` (docs/model-contract.md) and updates
``SHA256SUMS``; everything goes to temp files first, so a failed run leaves ``models/`` unchanged.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from convert.errors import ConvertError
from convert.tf import tensorflow

SCHEMA = "maskwatch-model/1"
# Sidecar keys the caller must give; the rest (files, hashes, quantization, dates) are filled here.
REQUIRED_FIELDS: Tuple[str, ...] = (
    "kind",
    "name",
    "input.height",
    "input.width",
    "input.channels",
    "input.color",
    "input.normalization.mean",
    "input.normalization.std",
    "outputs",
    "provenance.source_model",
)
# Per detector family (the sidecar's decoding.type); the agent's decoder reads these.
DETECTOR_FIELDS: Dict[str, Tuple[str, ...]] = {
    "blazeface": ("decoding.anchors", "decoding.num_boxes"),
    "yunet": ("decoding.strides", "decoding.num_keypoints", "decoding.keypoint_names", "decoding.nms.iou_threshold",
              "decoding.default_min_score"),
}
CLASSIFIER_FIELDS: Tuple[str, ...] = ("labels", "output.name", "output.activation", "crop")


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


# ---------------------------------------------------------------------------------------------
# Reading a converted model back


def tflite_io(tflite_bytes: bytes, input_shape: Optional[Sequence[int]] = None) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Input and output tensor details of a TFLite flatbuffer, read with LiteRT; a model that leaves
    input dimensions open is first sized to ``input_shape`` (the sidecar's)."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    try:
        it = Interpreter(model_content=bytes(tflite_bytes))
        inputs = it.get_input_details()
        if len(inputs) == 1 and input_shape is not None and -1 in [int(v) for v in inputs[0].get("shape_signature", [])]:
            it.resize_tensor_input(int(inputs[0]["index"]), [int(v) for v in input_shape], strict=True)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ConvertError(f"not a valid TFLite model: {exc}") from exc
    inputs = it.get_input_details()
    if len(inputs) != 1:
        raise ConvertError(f"the model has {len(inputs)} inputs; maskwatch models take one image")
    return inputs[0], list(it.get_output_details())


def _quant_dict(detail: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    if np.dtype(detail["dtype"]) == np.float32:
        return None
    scale, zero = detail["quantization"]
    return {"scale": float(scale), "zero_point": int(zero)}


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def check_sidecar_fields(sidecar: Mapping[str, Any], source: str = "sidecar") -> None:
    """Raise ConvertError naming the first missing required key (``source`` names the file)."""
    fields = list(REQUIRED_FIELDS)
    kind = sidecar.get("kind")
    if kind == "detector":
        family = sidecar.get("decoding", {}).get("type") if isinstance(sidecar.get("decoding"), Mapping) else None
        if family not in DETECTOR_FIELDS:
            raise ConvertError(f"{source}: 'decoding.type' must be one of {', '.join(DETECTOR_FIELDS)}, not {family!r}")
        fields += DETECTOR_FIELDS[family]
    elif kind == "classifier":
        fields += CLASSIFIER_FIELDS
    elif kind is not None:
        raise ConvertError(f"{source}: 'kind' must be 'detector' or 'classifier', not {kind!r}")
    for key in fields:
        try:
            _get(sidecar, key)
        except KeyError:
            raise ConvertError(f"{source}: missing required field '{key}' (see docs/model-contract.md)") from None
    outputs = sidecar["outputs"]
    if not isinstance(outputs, Mapping) or not outputs:
        raise ConvertError(f"{source}: 'outputs' must map logical names to {{'shape': [...]}}")
    for name, spec in outputs.items():
        if not isinstance(spec, Mapping) or "shape" not in spec:
            raise ConvertError(f"{source}: missing required field 'outputs.{name}.shape'")


def fill_sidecar(sidecar: Mapping[str, Any], tflite_bytes: bytes, model_file: str) -> Dict[str, Any]:
    """Copy of ``sidecar`` completed from the model itself: file, hash, dtypes, quantization, dates."""
    check_sidecar_fields(sidecar)
    want_in = [1, int(sidecar["input"]["height"]), int(sidecar["input"]["width"]), int(sidecar["input"]["channels"])]
    inp, outs = tflite_io(tflite_bytes, want_in)
    side: Dict[str, Any] = json.loads(json.dumps(sidecar))  # deep copy, JSON-clean
    side["schema"] = SCHEMA
    side["model_file"] = model_file
    side["model_sha256"] = hashlib.sha256(tflite_bytes).hexdigest()
    # A pinned variant (docs/model-contract.md) was built from the master of the model it was pinned
    # in; new bytes (a rebuild, a fine-tune copying its base's sidecar) drop the pin until
    # `maskwatch-convert float16` builds theirs.
    side.pop("variants", None)
    now = _dt.datetime.now(_dt.timezone.utc)
    side["version"] = now.strftime("%Y.%m.%d.%H%M%S")

    if [int(d) for d in inp["shape"]] != want_in:
        raise ConvertError(f"model input shape {list(inp['shape'])} differs from the sidecar input {want_in}")
    side["input"]["dtype"] = np.dtype(inp["dtype"]).name
    side["input"]["quantization"] = _quant_dict(inp)

    by_shape = {tuple(int(d) for d in o["shape"]): o for o in outs}
    if len(by_shape) != len(outs):
        raise ConvertError("the model's output shapes are not unique: outputs cannot be matched by shape")
    for name, spec in side["outputs"].items():
        shape = tuple(int(d) for d in spec["shape"])
        if shape not in by_shape:
            raise ConvertError(
                f"sidecar output '{name}' has shape {list(shape)} but the model's outputs are "
                f"{[list(s) for s in by_shape]}"
            )
        o = by_shape[shape]
        spec["dtype"] = np.dtype(o["dtype"]).name
        spec["quantization"] = _quant_dict(o)
    if len(side["outputs"]) != len(outs):
        raise ConvertError(f"the model has {len(outs)} outputs, the sidecar names {len(side['outputs'])}")

    prov = side.setdefault("provenance", {})
    prov.setdefault("converter", f"tensorflow {tensorflow_version()}")
    prov["date"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return side


def _sums_text(models_dir: Path, new: Mapping[str, str]) -> str:
    """SHA256SUMS content (``sha256sum`` format) with ``new`` name -> hash entries replaced."""
    entries: Dict[str, str] = {}
    sums = models_dir / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text().splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                name = parts[1].lstrip("*")
                if (models_dir / name).exists():  # drop entries of removed files
                    entries[name] = parts[0]
    entries.update(new)
    return "".join(f"{h}  {n}\n" for n, h in sorted(entries.items()))


def write_files_atomically(files: Mapping[Path, bytes]) -> None:
    """Write every file to a temp name first, then rename them all: a failure writes nothing."""
    tmps: List[Tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmps.append((tmp, path))
        for tmp, path in tmps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in tmps:
            if tmp.exists():
                tmp.unlink()


def _previous_build(side_path: Path, sha256: str) -> Tuple[Optional[str], Optional[str]]:
    """(version, provenance date) ``side_path`` gives a model with this sha256, or Nones (no, other
    or unreadable sidecar)."""
    try:
        old = json.loads(side_path.read_text())
    except (OSError, ValueError):
        return None, None
    if not (isinstance(old, dict) and old.get("model_sha256") == sha256 and isinstance(old.get("version"), str)):
        return None, None
    prov = old.get("provenance")
    date = prov.get("date") if isinstance(prov, dict) else None
    return old["version"], date if isinstance(date, str) else None


def write_model_pair(models_dir: Path | str, stem: str, tflite_bytes: bytes, sidecar: dict,
                     extra: Optional[Mapping[str, bytes]] = None) -> Tuple[Path, Path]:
    """Write ``models_dir/stem.tflite`` + ``stem.json`` and update ``models_dir/SHA256SUMS``.

    The sidecar is completed from the model (``model_file``, ``model_sha256``, input and output
    dtype/quantization, outputs matched by shape, version, provenance date and converter). When
    ``stem.json`` is already there for the same model bytes, its version and provenance date are
    kept: alerts and reports name the model by version, so a rebuild that lands on identical bytes
    is not a new one.
    ``extra`` (file name -> bytes, e.g. the float Keras master a sidecar's
    ``provenance.float_model`` names) is written in the same atomic step and listed in SHA256SUMS.
    Returns (tflite path, sidecar path).
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ConvertError(f"{models_dir}: models folder does not exist")
    model_path, side_path = models_dir / f"{stem}.tflite", models_dir / f"{stem}.json"
    side = fill_sidecar(sidecar, tflite_bytes, model_path.name)
    version, date = _previous_build(side_path, side["model_sha256"])
    if version:
        side["version"] = version
        if date and isinstance(side.get("provenance"), dict):
            side["provenance"]["date"] = date
    side_bytes = (json.dumps(side, indent=2) + "\n").encode()
    files = {model_path: bytes(tflite_bytes), side_path: side_bytes}
    files.update({models_dir / name: bytes(data) for name, data in (extra or {}).items()})
    sums = _sums_text(models_dir, {p.name: hashlib.sha256(data).hexdigest() for p, data in files.items()})
    write_files_atomically({**files, models_dir / "SHA256SUMS": sums.encode()})
    return model_path, side_path


__all__ = (
    "quantize_int8",
    "quantize_float16",
    "write_model_pair",
    "fill_sidecar",
    "check_sidecar_fields",
    "float_heads",
    "tflite_io",
    "keras_output_names",
    "write_files_atomically",
)
