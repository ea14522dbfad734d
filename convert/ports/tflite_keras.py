"""Rebuild a float Keras model from an int8 (or float) TFLite classifier, for fine-tuning.

The shipped classifier exists only as ``models/*.tflite``: its float Keras original lives under
the git-ignored ``build/``. The int8 graph is a plain chain (CONV_2D / DEPTHWISE_CONV_2D with fused
RELU / RELU6 and BatchNorm folded into weights + bias, MEAN as global average pooling,
FULLY_CONNECTED logits, maybe RESHAPE / QUANTIZE / DEQUANTIZE), so each op becomes one Keras
layer whose weights are the stored ones dequantized (per-channel scales). Activations are float in
the rebuilt model; it agrees with the int8 model up to the int8 activation rounding.

The flatbuffer is read with :class:`convert.ports.blazeface_keras._Graph` (the ``tflite`` package), the
same reader that rebuilds BlazeFace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from convert.ports.graph import FUSED, Graph, layer_name, options
from convert.errors import ConvertError
from convert.tf import keras_module

# Activation tensors these ops pass through unchanged in a float model.
_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")


def dequantized_constant(g: Graph, i: int) -> np.ndarray:
    """The float32 value of constant tensor ``i``: int8/int32 weights times their (per-channel) scales."""
    v = g.constant(i)
    if v is None:
        raise ConvertError(f"{g.source}: tensor {g.name(i)!r} is expected to be a constant (weights or bias)")
    if v.dtype in (np.float32, np.float16):
        return v.astype(np.float32)
    q = g.tensor(i).Quantization()
    if q is None or q.ScaleLength() == 0:
        raise ConvertError(f"{g.source}: integer tensor {g.name(i)!r} has no quantization scale; cannot dequantize it")
    scale = np.asarray(q.ScaleAsNumpy(), np.float64)
    zero = np.asarray(q.ZeroPointAsNumpy(), np.float64) if q.ZeroPointLength() else np.zeros(1)
    channel = [1] * v.ndim
    channel[q.QuantizedDimension()] = -1  # per-channel values run along the quantized dimension

    def along(a: np.ndarray) -> np.ndarray:
        return a.reshape(channel) if a.size > 1 else a.reshape([1] * v.ndim)

    return ((v.astype(np.float64) - along(zero)) * along(scale)).astype(np.float32)


def _activation(fused: int, source: str, where: str) -> Optional[str]:
    if fused not in FUSED:
        raise ConvertError(f"{source}: op {where} has fused activation {fused}; only none, RELU and RELU6 are supported")
    return FUSED[fused]


def keras_from_tflite(path: Path | str, output_name: str = "logits", name: str = "mask_classifier") -> Any:
    """A float Keras model equivalent to the TFLite classifier at ``path`` (one input, one output).

    The input layer takes the normalized float image (the sidecar's ``normalization``), whatever
    the TFLite input dtype; the output layer is named ``output_name`` (the sidecar's logical output,
    so :func:`convert.export.quantize.quantize_int8` can keep it float). Raises ConvertError naming the
    op for anything outside the supported chain.
    """
    import tflite  # noqa: PLC0415

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConvertError(f"{path}: cannot read the model ({exc.strerror})") from None
    keras = keras_module()
    L = keras.layers
    g = Graph(data, str(path))
    if g.sg.InputsLength() != 1 or g.sg.OutputsLength() != 1:
        raise ConvertError(f"{path}: expected one input and one output, found {g.sg.InputsLength()} and {g.sg.OutputsLength()}")
    in_idx, out_idx = int(g.sg.Inputs(0)), int(g.sg.Outputs(0))
    inp = keras.Input(shape=tuple(g.shape(in_idx)[1:]), name="image")
    vals: Dict[int, Any] = {in_idx: inp}  # tensor index -> Keras tensor
    made_by: Dict[int, str] = {}  # tensor index -> name of the layer that computes it
    used = {"image", output_name}

    for k, op_name, op, ins, outs in g.ops():
        where = f"#{k} {op_name}"
        if op_name in _PASS_THROUGH and ins[0] in vals:
            vals[outs[0]] = vals[ins[0]]
            made_by[outs[0]] = made_by.get(ins[0], "")
            continue
        if ins[0] not in vals:
            raise ConvertError(f"{path}: op {where} does not follow the chain from the input (a branch or a constant input)")
        x = vals[ins[0]]
        nm = output_name if outs[0] == out_idx else layer_name(g.name(outs[0]), used)
        if op_name == "CONV_2D":
            o = options(op, tflite.Conv2DOptions)
            w = dequantized_constant(g, ins[1])  # (out, kh, kw, in)
            b = dequantized_constant(g, ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            layer = L.Conv2D(
                w.shape[0], w.shape[1:3], strides=(o.StrideH(), o.StrideW()), padding="same" if o.Padding() == 0 else "valid",
                dilation_rate=(o.DilationHFactor(), o.DilationWFactor()),
                activation=_activation(o.FusedActivationFunction(), str(path), where), use_bias=b is not None, name=nm,
            )
            y = layer(x)
            layer.set_weights([w.transpose(1, 2, 3, 0)] + ([b] if b is not None else []))
        elif op_name == "DEPTHWISE_CONV_2D":
            o = options(op, tflite.DepthwiseConv2DOptions)
            w = dequantized_constant(g, ins[1])  # (1, kh, kw, C * mult)
            b = dequantized_constant(g, ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            c_in = g.shape(ins[0])[3]
            mult = w.shape[3] // c_in
            layer = L.DepthwiseConv2D(
                w.shape[1:3], strides=(o.StrideH(), o.StrideW()), padding="same" if o.Padding() == 0 else "valid",
                depth_multiplier=mult, dilation_rate=(o.DilationHFactor(), o.DilationWFactor()),
                activation=_activation(o.FusedActivationFunction(), str(path), where), use_bias=b is not None, name=nm,
            )
            y = layer(x)
            layer.set_weights([w.reshape(w.shape[1], w.shape[2], c_in, mult)] + ([b] if b is not None else []))
        elif op_name == "MEAN":
            o = options(op, tflite.ReducerOptions)
            axes = sorted(int(a) % 4 for a in np.ravel(g.constant(ins[1])))
            if len(g.shape(ins[0])) != 4 or axes != [1, 2]:
                raise ConvertError(f"{path}: op {where} averages over axes {axes}; only global average pooling (axes 1, 2) is supported")
            y = L.GlobalAveragePooling2D(keepdims=bool(o.KeepDims()), name=nm)(x)
        elif op_name == "FULLY_CONNECTED":
            o = options(op, tflite.FullyConnectedOptions)
            if len(g.shape(ins[0])) != 2:
                raise ConvertError(f"{path}: op {where} has a rank-{len(g.shape(ins[0]))} input; only (batch, features) is supported")
            w = dequantized_constant(g, ins[1])  # (out, in)
            b = dequantized_constant(g, ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            layer = L.Dense(w.shape[0], activation=_activation(o.FusedActivationFunction(), str(path), where),
                            use_bias=b is not None, name=nm)
            y = layer(x)
            layer.set_weights([w.T] + ([b] if b is not None else []))
        elif op_name == "RESHAPE":
            y = L.Reshape(tuple(g.shape(outs[0])[1:]), name=nm)(x)
        elif op_name in ("RELU", "RELU6"):
            y = L.ReLU(6.0 if op_name == "RELU6" else None, name=nm)(x)
        else:
            raise ConvertError(
                f"{path}: op {where} is not supported by the TFLite -> Keras rebuild "
                "(supported: CONV_2D, DEPTHWISE_CONV_2D, MEAN, FULLY_CONNECTED, RESHAPE, RELU, RELU6, QUANTIZE, DEQUANTIZE)"
            )
        if tuple(y.shape[1:]) != tuple(g.shape(outs[0])[1:]):
            raise ConvertError(f"{path}: op {where} gives shape {tuple(y.shape)}, the flatbuffer says {g.shape(outs[0])}")
        vals[outs[0]] = y
        made_by[outs[0]] = nm

    if out_idx not in vals:
        raise ConvertError(f"{path}: the output tensor is not computed by the supported chain")
    out = vals[out_idx]
    if made_by.get(out_idx) != output_name:  # the output came through a pass-through op
        out = L.Identity(name=output_name)(out)
    return keras.Model(inp, out, name=name)


__all__ = ("keras_from_tflite", "dequantized_constant")
