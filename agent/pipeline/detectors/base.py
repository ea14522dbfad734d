"""What every detector family plugin gives the detector stage (:mod:`agent.pipeline.detect`).

A family is one module in ``agent/pipeline/detectors/`` with a ``Decoder`` class, registered under the
sidecar's ``decoding.type``. The detect stage owns everything that is the same for every family
(letterbox, region of interest, box convention, size filter); a decoder only turns the model's raw
outputs into faces in input pixels.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Protocol, Sequence, Tuple

import numpy as np

# boxes (N, 4) x1y1x2y2, scores (N,), keypoints (N, K, 2): input pixels, best first.
Decoded = Tuple[np.ndarray, np.ndarray, np.ndarray]
# (logical output name, stored values) -> float32 values: the model's dequantize.
OutputReader = Callable[[str, np.ndarray], np.ndarray]


class Decoder(Protocol):
    """One detector family's decoding, built from the sidecar's ``decoding`` and the input size."""

    outputs: Sequence[str]  # the logical output names it reads
    rows: int  # cells or anchors it decodes at this input size: each output's second dimension
    keypoint_names: List[str]
    default_min_score: float
    default_iou: float

    def __init__(self, decoding: Mapping[str, Any], input_wh: Tuple[int, int]) -> None: ...

    def decode(self, read: OutputReader, raw: Mapping[str, np.ndarray], min_score: float, iou: float) -> Decoded: ...


__all__ = ("Decoded", "Decoder", "OutputReader")
