"""The shared graph toolkit of the ports: a TFLite flatbuffer read op by op (constants densified from
its own sparsity parameters), Keras layer names from tensor names, the fused activations, and the
custom layers for ops Keras has no exact layer for. BlazeFace, the landmark trunk and any chain-shaped
int8 .tflite are rebuilt with it."""

from __future__ import annotations

import functools
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from convert.errors import ConvertError
from convert.tf import keras_module, tensorflow

FUSED = {0: None, 1: "relu", 3: "relu6"}  # tflite ActivationFunctionType -> Keras activation


@functools.lru_cache(maxsize=None)
def layers():
    """Custom layers for the ops Keras has no exact layer for (registered for .keras loading)."""
    keras = keras_module()
    tf = tensorflow()

    @keras.saving.register_keras_serializable(package="maskwatch")
    class Pad(keras.layers.Layer):
        """Constant zero padding on any axis (BlazeFace pads channels for its residual adds)."""

        def __init__(self, paddings: Sequence[Sequence[int]], **kw: Any) -> None:
            super().__init__(**kw)
            self.paddings = [[int(a), int(b)] for a, b in paddings]

        def call(self, x):
            return keras.ops.pad(x, self.paddings)

        def compute_output_shape(self, s):
            return tuple(None if d is None else d + a + b for d, (a, b) in zip(s, self.paddings))

        def get_config(self):
            return {**super().get_config(), "paddings": self.paddings}

    @keras.saving.register_keras_serializable(package="maskwatch")
    class DepthToSpace(keras.layers.Layer):
        def __init__(self, block_size: int, **kw: Any) -> None:
            super().__init__(**kw)
            self.block_size = int(block_size)

        def call(self, x):
            return tf.nn.depth_to_space(x, self.block_size)

        def compute_output_shape(self, s):
            b = self.block_size
            return (s[0], s[1] * b, s[2] * b, s[3] // (b * b))

        def get_config(self):
            return {**super().get_config(), "block_size": self.block_size}

    @keras.saving.register_keras_serializable(package="maskwatch")
    class ResizeBilinear(keras.layers.Layer):
        """Bilinear resize with TFLite's align_corners / half_pixel_centers flags."""

        def __init__(self, size: Sequence[int], align_corners: bool = False, half_pixel_centers: bool = False, **kw: Any) -> None:
            super().__init__(**kw)
            self.size = [int(v) for v in size]
            self.align_corners = bool(align_corners)
            self.half_pixel_centers = bool(half_pixel_centers)

        def call(self, x):
            # the raw op: the exact TFLite RESIZE_BILINEAR semantics, without tf.compat.v1's deprecation warning
            return tf.raw_ops.ResizeBilinear(
                images=x, size=self.size, align_corners=self.align_corners, half_pixel_centers=self.half_pixel_centers
            )

        def compute_output_shape(self, s):
            return (s[0], self.size[0], self.size[1], s[3])

        def get_config(self):
            return {
                **super().get_config(),
                "size": self.size,
                "align_corners": self.align_corners,
                "half_pixel_centers": self.half_pixel_centers,
            }

    return {"Pad": Pad, "DepthToSpace": DepthToSpace, "ResizeBilinear": ResizeBilinear}


# ---------------------------------------------------------------------------------------------
# Flatbuffer reading


def _op_names() -> Dict[int, str]:
    import tflite  # noqa: PLC0415

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


def _index_vector(table: Any, kind: int) -> np.ndarray:
    """Values of a SparseIndexVector union (Int32Vector=1, Uint16Vector=2, Uint8Vector=3)."""
    import tflite  # noqa: PLC0415

    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind)
    if cls is None:
        raise ConvertError(f"unsupported sparse index vector type {kind}")
    v = cls()
    v.Init(table.Bytes, table.Pos)
    return np.asarray(v.ValuesAsNumpy(), np.int64)


def densify(values: np.ndarray, shape: Sequence[int], sparsity: Any) -> np.ndarray:
    """Dense array from TFLite sparse storage (DENSE / SPARSE_CSR dimensions, no block map)."""
    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()]
    if sparsity.BlockMapLength() or order != list(range(len(shape))):
        raise ConvertError("block-sparse or reordered tensors are not supported (BlazeFace uses neither)")
    dims = []
    for d in range(sparsity.DimMetadataLength()):
        dm = sparsity.DimMetadata(d)
        if dm.Format() == 0:
            dims.append(("dense", int(dm.DenseSize()), None, None))
        else:
            dims.append(
                (
                    "csr",
                    0,
                    _index_vector(dm.ArraySegments(), dm.ArraySegmentsType()),
                    _index_vector(dm.ArrayIndices(), dm.ArrayIndicesType()),
                )
            )
    out = np.zeros(shape, values.dtype)
    flat_coords: List[Tuple[int, ...]] = []

    def walk(level: int, prev: int, coords: Tuple[int, ...]) -> None:
        if level == len(dims):
            flat_coords.append(coords)
            return
        kind, size, seg, idx = dims[level]
        if kind == "dense":
            for i in range(size):
                walk(level + 1, prev * size + i, coords + (i,))
        else:
            for k in range(int(seg[prev]), int(seg[prev + 1])):
                walk(level + 1, k, coords + (int(idx[k]),))

    walk(0, 0, ())
    if len(flat_coords) != values.size:
        raise ConvertError(f"sparse tensor has {values.size} values but its index lists {len(flat_coords)}")
    out[tuple(np.asarray(flat_coords).T)] = values.reshape(-1)
    return out


class Graph:
    """The ops and constant tensors of a (single-subgraph) TFLite flatbuffer."""

    def __init__(self, data: bytes, source: str) -> None:
        import tflite  # noqa: PLC0415

        try:
            self.model = tflite.Model.GetRootAsModel(data, 0)
            self.sg = self.model.Subgraphs(0)
            _ = self.sg.OperatorsLength()
        except Exception as exc:  # flatbuffers raises assorted errors on garbage
            raise ConvertError(f"{source}: not a readable TFLite flatbuffer ({exc})") from exc
        self.source = source
        self.names = _op_names()

    def tensor(self, i: int):
        return self.sg.Tensors(i)

    def shape(self, i: int) -> List[int]:
        return [int(v) for v in self.tensor(i).ShapeAsNumpy()]

    def name(self, i: int) -> str:
        return self.tensor(i).Name().decode(errors="replace")

    def constant(self, i: int) -> Optional[np.ndarray]:
        """The stored value of a constant tensor (densified if sparse), None for activations."""
        t = self.tensor(i)
        buf = self.model.Buffers(t.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        dtype = _NP_TYPES.get(t.Type())
        if dtype is None:
            raise ConvertError(f"{self.source}: tensor {self.name(i)!r} has unsupported type {t.Type()}")
        raw = np.frombuffer(buf.DataAsNumpy().tobytes(), dtype)
        sp = t.Sparsity()
        if sp is not None:
            return densify(raw, self.shape(i), sp)
        return raw.reshape(self.shape(i))

    def ops(self):
        for k in range(self.sg.OperatorsLength()):
            op = self.sg.Operators(k)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            name = self.names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            ins = [int(op.Inputs(j)) for j in range(op.InputsLength())]
            outs = [int(op.Outputs(j)) for j in range(op.OutputsLength())]
            yield k, name, op, ins, outs


def options(op: Any, cls: Any) -> Any:
    opts = cls()
    table = op.BuiltinOptions()
    opts.Init(table.Bytes, table.Pos)
    return opts


def layer_name(tensor_name: str, used: set) -> str:
    """A valid, unique Keras layer name from a TFLite tensor name (';' and '/' break tf.function)."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", tensor_name.split(";")[0]).strip("_")[-60:] or "layer"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


__all__ = ["FUSED", "Graph", "densify", "layer_name", "layers", "options"]
