"""Mask classification of the faces of one frame, in one batched model call.

Faces are cut with :func:`agent.pipeline.crop.crop_faces` using the classifier sidecar's ``crop`` (the same
function convert/ used for the training crops), the batch runs once, logits become probabilities
with the sidecar's softmax temperature, per-class thresholds from the config pick the label, and
faces whose label is one of the sidecar's ``non_face_labels`` are dropped.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Sequence

import cv2
import numpy as np

from agent.pipeline.crop import CropSpec, crop_faces
from agent.model import Model, ModelError, pixel_mapper, load_model
from agent.types import Face


@dataclass
class ClassifierConfig:
    """``classifier:`` section -- the mask classifier model and how its answers are used."""

    model: str = field(
        default="models/mask_classifier.json",
        metadata={"help": "classifier sidecar (.json next to its .tflite)", "path": True},
    )
    thresholds: Dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "least probability for a label to be given (e.g. no_mask: 0.6); a face below it gets"
            " its next most likely label; unset labels: 0"
        },
    )
    batching: Literal["resize", "loop"] = field(
        default="resize",
        metadata={"help": "resize: one call for all faces of a frame; loop: one call per face"},
    )
    max_batch: int = field(default=16, metadata={"help": "most faces classified per frame (largest first)"})

    def __post_init__(self) -> None:
        for label, t in self.thresholds.items():
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"thresholds.{label} must be between 0 and 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def batch_chunks(n: int) -> List[int]:
    """``n`` faces as batches of powers of two, largest first (11 -> 8, 2, 1): the classifier runs
    at a handful of batch sizes, each on an interpreter kept for it (:meth:`agent.model.Model.use_input_shape`)."""
    return [1 << b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1]


def pick_label(probs: np.ndarray, labels: Sequence[str], thresholds: Dict[str, float]) -> int:
    """Index of the most likely label that reaches its threshold; the most likely one if none does."""
    order = np.argsort(-probs, kind="stable")
    for i in order:
        if probs[i] >= thresholds.get(labels[i], 0.0):
            return int(i)
    return int(order[0])


class MaskClassifier:
    """The classifier model with its sidecar's labels, crop and output handling."""

    def __init__(self, cfg: ClassifierConfig, num_threads: int = 1, model: Optional[Model] = None) -> None:
        self.cfg = cfg
        self.model = model or load_model(cfg.model, kind="classifier", num_threads=num_threads)
        meta = self.model.meta
        try:
            self.labels: List[str] = [str(v) for v in meta["labels"]]
            self.non_face = set(meta.get("non_face_labels", []))
            out = meta.get("output", {})
            self.temperature = float(out.get("temperature", 1.0))
            self.activation = str(out.get("activation", "softmax"))
            self.output_name = str(out.get("name", next(iter(meta["outputs"]))))
            w, h = self.model.input_size
            self.spec = CropSpec.from_sidecar(meta.get("crop", {}), w, h)
        except (KeyError, TypeError, ValueError, StopIteration) as exc:
            raise ModelError(f"{self.model.sidecar_path}: bad classifier fields ({exc})\n  fix: rebuild the"
                             " model; see docs/model-contract.md") from None
        unknown = set(cfg.thresholds) - set(self.labels)
        if unknown:
            raise ModelError(f"classifier.thresholds: {sorted(unknown)} not among the model's labels"
                             f" {self.labels} ({self.model.sidecar_path})\n  fix: use those label names")
        if self.output_name not in self.model.output_index:
            raise ModelError(f"{self.model.sidecar_path}: output.name {self.output_name!r} is not in"
                             " `outputs`\n  fix: rebuild the model")
        # one label per output value (a mismatch would label faces by the wrong index, or fail mid-run);
        # the sidecar's output shapes were matched to the model file when it loaded
        width = int(meta["outputs"][self.output_name]["shape"][-1])
        if width != len(self.labels):
            raise ModelError(f"{self.model.sidecar_path}: `labels` has {len(self.labels)} names but the model's"
                             f" `{self.output_name}` output gives {width} values\n  fix: restore the sidecar"
                             " that was built with this model (maskwatch-convert writes both)")
        if len(set(self.labels)) != len(self.labels) or not self.non_face <= set(self.labels):
            raise ModelError(f"{self.model.sidecar_path}: `labels` {self.labels} must be distinct and hold every"
                             f" `non_face_labels` {sorted(self.non_face)}\n  fix: restore the sidecar built with this model")
        if self.temperature <= 0 or not math.isfinite(self.temperature):
            raise ModelError(f"{self.model.sidecar_path}: output.temperature must be > 0\n  fix: rebuild")
        self._rgb = str(meta["input"].get("color", "RGB")).upper() == "RGB"
        self._pixels = pixel_mapper(self.model.pixel_lut())
        self._can_resize = cfg.batching == "resize"

    @property
    def face_labels(self) -> List[str]:
        return [lab for lab in self.labels if lab not in self.non_face]

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) BGR uint8 crops -> the model's input tensor."""
        n, h, w, _ = crops.shape
        flat = crops.reshape(n * h, w, 3)
        if self._rgb:
            flat = cv2.cvtColor(flat, cv2.COLOR_BGR2RGB)
        return self._pixels(flat).reshape(n, h, w, 3)

    def probabilities(self, tensor: np.ndarray) -> np.ndarray:
        """Class probabilities (N, labels) for a prepared batch."""
        n = tensor.shape[0]
        if self._can_resize:
            try:
                self.model.resize_batch(batch_chunks(n)[0])
            except (RuntimeError, ValueError):
                # A model converted with a fixed batch of 1 cannot be resized: one call per face.
                self._can_resize = False
                self.model.resize_batch(1)
        sizes = batch_chunks(n) if self._can_resize else [1] * n
        starts = np.cumsum([0] + sizes[:-1])
        raw = np.concatenate([self.model.run(tensor[a : a + k])[self.output_name] for a, k in zip(starts, sizes)])
        raw = raw.reshape(n, -1)
        return softmax(raw, self.temperature) if self.activation == "softmax" else raw.astype(np.float32)

    def label_all(self, image: np.ndarray, faces: Sequence[Face]) -> List[Face]:
        """Label every given face of a BGR frame in one call, ``not_face`` ones too, with every
        label's probability in ``scores`` (``maskwatch collect`` keeps false detections to label)."""
        if not faces:
            return []
        crops = crop_faces(image, [f.box for f in faces], [f.keypoints for f in faces], self.spec)
        probs = self.probabilities(self.prepare(crops))
        out: List[Face] = []
        for face, p in zip(faces, probs):
            i = pick_label(p, self.labels, self.cfg.thresholds)
            scores = {lab: float(p[j]) for j, lab in enumerate(self.labels)}
            out.append(dataclasses.replace(face, label=self.labels[i], score=float(p[i]), scores=scores))
        return out

    def classify(self, image: np.ndarray, faces: Sequence[Face]) -> List[Face]:
        """Label the faces of a BGR frame (the largest ``max_batch``); returns the faces that are
        faces, non-face labels dropped from the result and from ``scores``."""
        largest = sorted(faces, key=lambda f: -(f.width * f.height))[: self.cfg.max_batch]
        return [dataclasses.replace(f, scores={lab: p for lab, p in f.scores.items() if lab not in self.non_face})
                for f in self.label_all(image, largest) if f.label not in self.non_face]


__all__ = ["ClassifierConfig", "MaskClassifier", "batch_chunks", "pick_label", "softmax"]
