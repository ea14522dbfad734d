"""Running TFLite flatbuffers with LiteRT inside convert/: the one place convert/ makes an interpreter.

What the agent runs (:mod:`agent.model`) is sidecar-driven and falls back to tflite-runtime; convert/
checks the files it writes and the originals it ports with LiteRT alone: their tensor details
(:func:`tflite_io`), dequantized outputs keyed by shape (:class:`TfliteRunner`) and invoke times
(:func:`latency_ms`). Kept low in convert/ so the ports, data and evaluation code that run models
do not import the export step.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from convert.errors import ConvertError


def litert_interpreter(tflite_bytes: bytes, threads: int = 1, input_shape: Optional[Sequence[int]] = None) -> Any:
    """An allocated LiteRT interpreter of a flatbuffer; one whose single input leaves dimensions open
    (-1 in its signature) is first sized to ``input_shape`` (the sidecar's)."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    it = Interpreter(model_content=bytes(tflite_bytes), num_threads=threads)
    inputs = it.get_input_details()
    if len(inputs) == 1 and input_shape is not None and -1 in [int(v) for v in inputs[0].get("shape_signature", [])]:
        it.resize_tensor_input(int(inputs[0]["index"]), [int(v) for v in input_shape], strict=True)
    it.allocate_tensors()
    return it


def tflite_io(tflite_bytes: bytes, input_shape: Optional[Sequence[int]] = None) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Input and output tensor details of a TFLite flatbuffer, read with LiteRT (sized to
    ``input_shape`` if it leaves input dimensions open, see :func:`litert_interpreter`)."""
    try:
        it = litert_interpreter(tflite_bytes, 1, input_shape)
    except (ValueError, RuntimeError) as exc:
        raise ConvertError(f"not a valid TFLite model: {exc}") from exc
    inputs = it.get_input_details()
    if len(inputs) != 1:
        raise ConvertError(f"the model has {len(inputs)} inputs; maskwatch models take one image")
    return inputs[0], list(it.get_output_details())


class TfliteRunner:
    """Runs a TFLite model on float (preprocessed) inputs; outputs dequantized, keyed by shape."""

    def __init__(self, tflite_bytes: bytes, threads: int = 1) -> None:
        self.it = litert_interpreter(tflite_bytes, threads)
        self.inp = self.it.get_input_details()[0]
        self.outs = self.it.get_output_details()

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        dt = np.dtype(self.inp["dtype"])
        if dt == np.float32:
            return x.astype(np.float32)
        scale, zero = self.inp["quantization"]
        info = np.iinfo(dt)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dt)

    def __call__(self, x: np.ndarray) -> Dict[Tuple[int, ...], np.ndarray]:
        """One (1, H, W, C) float batch -> {output shape: float output}."""
        return {tuple(int(d) for d in o["shape"]): v for o, v in zip(self.outs, self.invoke(self.quantize_input(x)))}

    def invoke(self, tensor: np.ndarray) -> List[np.ndarray]:
        """Outputs for an input already in the model's dtype (see :meth:`quantize_input`), in the
        model's output order, dequantized to float32."""
        self.it.set_tensor(self.inp["index"], tensor)
        self.it.invoke()
        res = []
        for o in self.outs:
            v = self.it.get_tensor(o["index"])
            if np.dtype(o["dtype"]) != np.float32:
                scale, zero = o["quantization"]
                v = (v.astype(np.float32) - zero) * scale
            res.append(v.astype(np.float32))
        return res


def median_invoke_ms(it: Any, tensor: np.ndarray, runs: int = 300, warmup: int = 20,
                     set_each_run: bool = False) -> float:
    """Median milliseconds of one invoke of interpreter ``it`` on ``tensor`` (its first input, already
    in the model's dtype). ``set_each_run`` times ``set_tensor`` with each invoke, as a caller that
    feeds a new crop every time pays it; otherwise the tensor is set once and only invoke is timed."""
    index = it.get_input_details()[0]["index"]
    it.set_tensor(index, tensor)
    for _ in range(warmup):
        it.invoke()
    times = np.empty(runs)
    for k in range(runs):
        t0 = time.perf_counter()
        if set_each_run:
            it.set_tensor(index, tensor)
        it.invoke()
        times[k] = time.perf_counter() - t0
    return float(np.median(times)) * 1000.0


def latency_ms(tflite_bytes: bytes, threads: Sequence[int] = (1, 2), runs: int = 300, warmup: int = 20,
               input_shape: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """Median LiteRT invoke time in ms for each thread count (input: zeros; time excludes I/O), at
    ``input_shape`` for a model that leaves its input size open."""
    res: Dict[str, float] = {}
    for n in threads:
        it = litert_interpreter(tflite_bytes, n, input_shape)
        inp = it.get_input_details()[0]
        res[f"threads_{n}"] = round(median_invoke_ms(it, np.zeros(inp["shape"], inp["dtype"]), runs, warmup), 4)
    return res


__all__ = ("TfliteRunner", "latency_ms", "litert_interpreter", "median_invoke_ms", "tflite_io")
