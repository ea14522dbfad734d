"""Load a TFLite model from its sidecar (docs/model-contract.md) and run it.

The interpreter comes from the first runtime that imports: ``ai_edge_litert`` (the LiteRT wheel),
``tflite_runtime`` (older Pi images), then ``tensorflow.lite`` -- TensorFlow is only tried last so
that the agent never pays for it when a light runtime is present.

Quantization parameters are read from the interpreter (they are the truth at run time); the
sidecar's copy is documentation. Inputs are prepared through a per-channel lookup table that maps
an 8-bit pixel straight to the tensor's value, so normalization and quantization cost one table
lookup per pixel.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent import schema_check

SCHEMA = "maskwatch-model/1"

# (module to import, attribute path to the Interpreter class, pip package that provides it)
RUNTIMES: Tuple[Tuple[str, str, str], ...] = (
    ("ai_edge_litert.interpreter", "Interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "Interpreter", "tflite-runtime"),
    ("tensorflow", "lite.Interpreter", "tensorflow"),
)

_DTYPES = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32, "int16": np.int16}

# Interpreters kept per input shape (classifier batch sizes, an adaptive detector's input sizes):
# switching shape on one interpreter re-plans it (about 1 ms for the detector), keeping one per
# shape costs its tensor arena instead (about 3.5 MB for the detector). A camera uses one shape;
# photos of mixed shapes a handful.
POOL_SIZE = 5


class ModelError(Exception):
    """A model that cannot be used; ``str()`` names the files and the fix."""


def find_interpreter(runtimes: Sequence[Tuple[str, str, str]] = RUNTIMES) -> Tuple[Callable[..., Any], str]:
    """Return (Interpreter class, runtime module name) from the first runtime that imports."""
    import importlib

    failures: List[str] = []
    for module_name, attr, package in runtimes:
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            return obj, module_name
        except Exception as exc:  # ImportError, or a broken install raising anything else
            failures.append(f"{module_name} ({type(exc).__name__}: {exc})")
    raise ModelError(
        "no TFLite runtime could be imported; tried: " + "; ".join(failures)
        + "\n  fix: pip install ai-edge-litert  (or tflite-runtime on older Raspberry Pi OS;"
        " tensorflow also works but is large)"
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sidecar(path: os.PathLike | str, kind: Optional[str] = None) -> Dict[str, Any]:
    """Read a sidecar and check it against agent/schemas/model.schema.json; raises ModelError
    naming the file, the first wrong key (``missing key `decoding.nms```) and the fix."""
    p = Path(path)
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{p}: model sidecar not found\n  fix: check the model path in the config"
                         " (models are built by `maskwatch-convert`, see models/MODEL_CARD.md)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{p}: not a readable JSON sidecar ({exc})\n  fix: restore it from the release"
                         " or rebuild the model") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        got = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        raise ModelError(f"{p}: schema is {got!r}, expected {SCHEMA!r}\n  fix: point the config at a"
                         " maskwatch model sidecar (.json next to the .tflite)")
    if kind and meta.get("kind") != kind:
        raise ModelError(f"{p}: is a {meta.get('kind')!r} model, expected a {kind!r}\n  fix: swap the"
                         " detector and classifier model paths in the config")
    # Every field the agent reads, against the one schema file (a missing field would otherwise
    # fall back to a code default and silently change scores, e.g. the classifier's temperature).
    problem = schema_check.first_problem(meta, schema_check.load("model"))
    if problem is not None:
        raise ModelError(f"{p}: {problem}\n  fix: rebuild the model (maskwatch-convert) or restore this sidecar"
                         " from the release; its fields: docs/model-contract.md, agent/schemas/model.schema.json")
    # What the schema cannot say: one value for all channels or one per channel, and no zero std
    # (the pixel table would fail to broadcast, or divide by zero, at the first frame).
    norm, channels = meta["input"]["normalization"], int(meta["input"]["channels"])
    for key in ("mean", "std"):
        if len(norm[key]) not in (1, channels):
            raise ModelError(f"{p}: `input.normalization.{key}` has {len(norm[key])} values; it needs 1 or"
                             f" `input.channels` ({channels})\n  fix: rebuild the model or restore this sidecar")
    if any(float(v) == 0.0 for v in norm["std"]):
        raise ModelError(f"{p}: `input.normalization.std` has a 0\n  fix: rebuild the model or restore this sidecar")
    return meta


@dataclass
class Model:
    """An allocated interpreter with its sidecar, ready to run."""

    sidecar_path: Path
    model_path: Path
    meta: Dict[str, Any]
    interpreter: Any
    runtime: str
    input_index: int
    input_dtype: np.dtype
    input_quant: Tuple[float, int]  # (scale, zero_point); scale 0 = not quantized
    output_index: Dict[str, int]  # logical name -> tensor index
    batch: int = 1
    choice: str = ""  # how runtime.precision picked this file among the sidecar's variants (agent/variants.py)
    make_interpreter: Optional[Callable[[], Any]] = None  # a fresh, unallocated interpreter of the model file's bytes
    _out_quant: Dict[str, Tuple[float, int]] = field(default_factory=dict)  # name -> (scale, zero point)
    _pool: "OrderedDict[Tuple[int, ...], Any]" = field(default_factory=OrderedDict)  # input shape -> interpreter
    _shape: Tuple[int, ...] = ()
    _ran: set = field(default_factory=set)  # shapes run_raw has run at

    def __post_init__(self) -> None:
        details = {d["index"]: d for d in self.interpreter.get_output_details()}
        for name, index in self.output_index.items():
            scale, zero = details[index]["quantization"]
            self._out_quant[name] = (float(scale), int(zero))
        self._shape = tuple(int(v) for v in self.interpreter.get_input_details()[0]["shape"])
        self._pool[self._shape] = self.interpreter

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.model_path.stem))

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))

    @property
    def precision(self) -> str:
        return precision_of(self.meta)

    @property
    def input_size(self) -> Tuple[int, int]:
        """(width, height) of the input tensor."""
        return int(self.meta["input"]["width"]), int(self.meta["input"]["height"])

    def pixel_lut(self) -> np.ndarray:
        """(256, 3) table: 8-bit pixel value per channel -> input tensor value (normalized, quantized).

        Channels are in the sidecar's ``input.color`` order.
        """
        return pixel_table(self.meta["input"].get("normalization"), self.input_dtype, self.input_quant)

    @property
    def open_dims(self) -> Tuple[int, ...]:
        """Input dimensions the model file leaves open (``-1`` in its signature): 0 = batch, 1 and 2 =
        height and width."""
        sig = self.interpreter.get_input_details()[0].get("shape_signature", [])
        return tuple(i for i, v in enumerate(sig) if int(v) == -1)

    @property
    def kept_shapes(self) -> List[Tuple[int, ...]]:
        """Input shapes with an interpreter kept, least recently used first."""
        return list(self._pool)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """The input tensor's shape (batch, height, width, channels) the model runs at now."""
        return self._shape

    def use_input_shape(self, shape: Sequence[int]) -> None:
        """Run at this input shape from now on: an interpreter kept for it, or a new one (at most
        :data:`POOL_SIZE` kept, the least recently used dropped). Only dimensions the model left
        open (batch; an adaptive detector's height and width) may change: ``ValueError`` /
        ``RuntimeError`` from the runtime otherwise, and the model keeps its shape."""
        key = tuple(int(v) for v in shape)
        if key == self._shape:
            return
        if self._shape not in self._ran:
            # only ever checked, never run (the load-time size, when frames run at another): dropped
            self._pool.pop(self._shape, None)
        interpreter = self._pool.get(key)
        if interpreter is None:
            if self.make_interpreter is None:
                raise ValueError(f"{self.model_path}: no way to build another interpreter")
            interpreter = self.make_interpreter()
            interpreter.resize_tensor_input(self.input_index, list(key), strict=True)
            interpreter.allocate_tensors()
            self._pool[key] = interpreter
            while len(self._pool) > POOL_SIZE:
                self._pool.popitem(last=False)
        self._pool.move_to_end(key)
        self.interpreter, self._shape, self.batch = interpreter, key, key[0]

    def resize_batch(self, n: int) -> None:
        """Run batches of ``n`` from now on (a failed resize leaves the model as it was)."""
        self.use_input_shape((n, *self._shape[1:]))

    def run_raw(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        """Run on a prepared input tensor; returns the outputs as stored (maybe quantized), by logical name.

        A tensor of another shape than the last one switches interpreter (:meth:`use_input_shape`)."""
        if tensor.shape != self._shape:
            self.use_input_shape(tensor.shape)
        self._ran.add(self._shape)
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self.output_index.items()}

    def dequantize(self, name: str, raw: np.ndarray) -> np.ndarray:
        """float32 values of (part of) output ``name`` from its stored values."""
        scale, zero = self._out_quant[name]
        return (raw.astype(np.float32) - zero) * scale if scale else raw.astype(np.float32, copy=False)

    def run(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        """Run on a prepared input tensor; returns float32 outputs by logical name (dequantized)."""
        return {name: self.dequantize(name, raw) for name, raw in self.run_raw(tensor).items()}


def precision_of(meta: Mapping[str, Any]) -> str:
    """A sidecar's precision: its ``precision`` key (a variant's), else its input tensor's kind
    (int8 models keep float heads in places, so the input is what tells them apart)."""
    if meta.get("precision"):
        return str(meta["precision"])
    return "float32" if str(meta["input"].get("dtype")) == "float32" else "int8"


def pixel_table(normalization: Optional[Mapping[str, Sequence[float]]], dtype: Any,
                quant: Tuple[float, int]) -> np.ndarray:
    """(256, 3) table: 8-bit pixel value per channel -> input tensor value, for a sidecar's
    ``input.normalization`` (``None``: raw pixels) and an input tensor's dtype and (scale, zero point).

    The one place the model contract's normalization becomes numbers: the agent and convert/'s
    evaluation both go through it, so they feed a model identical tensors (float64 and ``np.round``:
    with mean = std = 127.5 many pixels land on rounding ties that float32 would break differently).
    """
    norm = normalization or {"mean": [0.0] * 3, "std": [1.0] * 3}
    mean = np.asarray(norm["mean"], np.float64).reshape(1, -1)
    std = np.asarray(norm["std"], np.float64).reshape(1, -1)
    x = np.broadcast_to((np.arange(256, dtype=np.float64)[:, None] - mean) / std, (256, 3))
    dtype = np.dtype(dtype)
    scale, zero = quant
    if scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def cv2_table(lut: np.ndarray) -> np.ndarray:
    """A (256, 3) :meth:`Model.pixel_lut` shaped for ``cv2.LUT``: one (1, 256) table when the three
    channels share it (the usual normalization; half the time of a per-channel table), else (1, 256, 3)."""
    lut = np.asarray(lut).reshape(256, -1)
    if (lut == lut[:, :1]).all():
        return np.ascontiguousarray(lut[:, 0].reshape(1, 256))
    return np.ascontiguousarray(lut.reshape(1, 256, 3))


def pixel_mapper(lut: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function taking uint8 pixels through a (256, 3) :meth:`Model.pixel_lut`: ``cv2.LUT``, or for
    the int8 table "pixel - 128" (raw pixels at scale 1, zero point -128: YuNet's) a bitwise XOR
    with 0x80 read as int8, the same numbers in a fifteenth of the time."""
    import cv2  # noqa: PLC0415 - the runtime's dependency; convert/ reads sidecars without it

    table = cv2_table(lut)
    if table.dtype == np.int8 and table.shape == (1, 256) and np.array_equal(table[0], np.arange(-128, 128)):
        return lambda px: np.bitwise_xor(px, 0x80).view(np.int8)
    return lambda px: cv2.LUT(px, table)


def load_model(
    sidecar: os.PathLike | str,
    kind: Optional[str] = None,
    num_threads: int = 1,
    runtimes: Sequence[Tuple[str, str, str]] = RUNTIMES,
) -> Model:
    """Load the model a sidecar describes, after checking its hash and tensor shapes."""
    sidecar_path = Path(sidecar)
    meta = read_sidecar(sidecar_path, kind)
    model_path = sidecar_path.parent / meta["model_file"]
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file named by {sidecar_path} is missing\n  fix: put"
                         f" {meta['model_file']} next to the sidecar, or rebuild the model")
    # The bytes are read once: every interpreter of the pool is built from them (the file may be
    # replaced or removed meanwhile) and the hash is checked on exactly what runs.
    content = model_path.read_bytes()
    want = meta.get("model_sha256")
    if want:
        got = hashlib.sha256(content).hexdigest()
        if got != want:
            raise ModelError(
                f"{model_path}: sha256 {got[:12]}... does not match {sidecar_path} ({str(want)[:12]}...)"
                "\n  fix: the model and its sidecar come from different builds; reinstall both together"
            )
    interpreter_cls, runtime = find_interpreter(runtimes)
    threads = max(1, int(num_threads))

    def make_interpreter() -> Any:
        return interpreter_cls(model_content=content, num_threads=threads)

    mi = meta["input"]
    want_shape = [int(mi["height"]), int(mi["width"]), int(mi.get("channels", 3))]
    resized = False
    try:
        interpreter = make_interpreter()
        inputs = interpreter.get_input_details()
        if len(inputs) == 1 and -1 in [int(v) for v in inputs[0].get("shape_signature", [])[1:3]]:
            # Height and width left open (an adaptive detector): the sidecar's size is the default.
            resized = True
            interpreter.resize_tensor_input(int(inputs[0]["index"]), [1, *want_shape], strict=True)
        interpreter.allocate_tensors()
    except Exception as exc:  # the runtime reports corrupt flatbuffers with assorted types
        if resized:  # the file loaded; the size the sidecar asks for is what the graph cannot take
            raise ModelError(f"{sidecar_path}: the model cannot run at `input.height` x `input.width`"
                             f" {want_shape[0]}x{want_shape[1]} ({exc})\n  fix: restore the sidecar built with"
                             f" {model_path.name} (maskwatch-convert writes both)") from None
        raise ModelError(f"{model_path}: not a loadable TFLite model ({exc})\n  fix: rebuild it or"
                         " restore it from the release, with its sidecar") from None
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise ModelError(f"{model_path}: has {len(inputs)} inputs, expected 1\n  fix: rebuild the model")
    inp = inputs[0]
    if list(inp["shape"][1:]) != want_shape:
        raise ModelError(
            f"{model_path}: input shape {list(inp['shape'])} does not match {sidecar_path} "
            f"(height, width, channels = {want_shape})\n  fix: reinstall the model and its sidecar together"
        )
    want_dtype = _DTYPES.get(str(mi.get("dtype")))
    if want_dtype is not None and np.dtype(inp["dtype"]) != np.dtype(want_dtype):
        raise ModelError(f"{model_path}: input dtype {np.dtype(inp['dtype'])} does not match {sidecar_path}"
                         f" ({mi.get('dtype')})\n  fix: reinstall the model and its sidecar together")
    output_index = match_outputs(interpreter.get_output_details(), meta["outputs"], model_path, sidecar_path)
    scale, zero = inp["quantization"]
    return Model(
        sidecar_path=sidecar_path,
        model_path=model_path,
        meta=meta,
        interpreter=interpreter,
        runtime=runtime,
        input_index=int(inp["index"]),
        input_dtype=np.dtype(inp["dtype"]),
        input_quant=(float(scale), int(zero)),
        output_index=output_index,
        batch=int(inp["shape"][0]),
        make_interpreter=make_interpreter,
    )


def match_outputs(
    details: Sequence[Mapping[str, Any]], wanted: Mapping[str, Any], model_path: Path, sidecar_path: Path
) -> Dict[str, int]:
    """Map the sidecar's logical output names to tensor indices by shape (names change in conversion)."""
    by_shape: Dict[Tuple[int, ...], List[int]] = {}
    for d in details:
        by_shape.setdefault(tuple(int(v) for v in d["shape"][1:]), []).append(int(d["index"]))
    found: Dict[str, int] = {}
    for name, spec in wanted.items():
        shape = tuple(int(v) for v in spec["shape"][1:])
        hits = by_shape.get(shape, [])
        if len(hits) != 1:
            have = ", ".join(str([1, *s]) for s in by_shape)
            problem = "no output" if not hits else f"{len(hits)} outputs"
            raise ModelError(
                f"{model_path}: {problem} of shape {list(spec['shape'])} for `{name}` in {sidecar_path}"
                f" (the model's outputs: {have})\n  fix: reinstall the model and its sidecar together"
            )
        found[name] = hits[0]
    return found


__all__ = ["Model", "ModelError", "RUNTIMES", "cv2_table", "find_interpreter", "load_model", "pixel_mapper", "precision_of", "read_sidecar",
           "sha256_of"]
