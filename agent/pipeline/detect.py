"""Face detection: letterbox a frame to the detector input, run it, decode faces in frame pixels.

The model's family (the sidecar's ``decoding.type``: ``yunet``, ``blazeface``) picks its decoder
in :mod:`agent.pipeline.detectors`; this module only moves between frame pixels and the model's input,
applies the sidecar's ``box_adjust`` (model box -> human annotators' box) and the config's filters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.detectors import decoder_for
from agent.model import Model, ModelError, pixel_mapper, load_model
from agent.types import Face

# How far past the roi the detector looks, as a fraction of the roi's size.
_ROI_MARGIN = 0.1


@dataclass
class DetectorConfig:
    """``detector:`` section -- the face detector model and which faces are kept."""

    model: str = field(
        default="models/face_detector_yunet.json",
        metadata={"help": "detector sidecar (.json next to its .tflite)", "path": True},
    )
    min_score: Optional[float] = field(
        default=None, metadata={"help": "least detector score; null: the model's default_min_score"}
    )
    iou_threshold: Optional[float] = field(
        default=None, metadata={"help": "overlap that merges two detections; null: the model's nms.iou_threshold"}
    )
    min_face_px: float = field(default=20.0, metadata={"help": "faces smaller than this (shorter side, pixels) are ignored"})
    roi: Optional[List[float]] = field(
        default=None,
        metadata={"help": "region of interest [x1, y1, x2, y2] as fractions of the frame; a face counts when"
                  " its centre is inside; null: whole frame"},
    )
    roi_zoom: bool = field(
        default=True,
        metadata={"help": "with a roi, the detector looks at the roi (and a margin of 10 % of its size) instead"
                  " of the whole frame, so faces there reach its input bigger; false: it looks at the whole frame"},
    )

    def __post_init__(self) -> None:
        if self.min_score is not None and not 0.0 < self.min_score < 1.0:
            raise ValueError("min_score must be between 0 and 1 (exclusive)")
        if self.iou_threshold is not None and not 0.0 < self.iou_threshold < 1.0:
            raise ValueError("iou_threshold must be between 0 and 1 (exclusive)")
        if self.min_face_px < 0:
            raise ValueError("min_face_px must be >= 0")
        if self.roi is not None:
            if len(self.roi) != 4:
                raise ValueError("roi must be 4 numbers [x1, y1, x2, y2]")
            x1, y1, x2, y2 = self.roi
            if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
                raise ValueError("roi must satisfy 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")


@dataclass(frozen=True)
class LetterboxPlan:
    """How :func:`letterbox` fits a frame: halve it ``halving`` times over (to ``source`` pixels),
    resize that to ``size`` and place it at ``offset`` (whole pixels) of the black input."""

    halving: int
    source: Tuple[int, int]
    size: Tuple[int, int]
    offset: Tuple[int, int]

    @classmethod
    def of(cls, frame_w: int, frame_h: int, width: int, height: int, keep_aspect: bool = True) -> "LetterboxPlan":
        sx, sy = width / frame_w, height / frame_h
        if keep_aspect:
            sx = sy = min(sx, sy)
        # Shrinking beyond 4x first halves (OpenCV's fast INTER_AREA path, against aliasing).
        k, sw, sh = 1, frame_w, frame_h
        while max(sx, sy) * k < 0.25 and min(sw, sh) >= 4:
            k, sw, sh = 2 * k, sw // 2, sh // 2
        nw = min(width, max(1, round(frame_w * sx)))
        nh = min(height, max(1, round(frame_h * sy)))
        return cls(k, (sw, sh), (nw, nh), ((width - nw) // 2, (height - nh) // 2))


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: input = frame * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, width: int, height: int, keep_aspect: bool = True) -> "Letterbox":
        """A ``frame_w`` x ``frame_h`` frame fitted into ``width`` x ``height``: centred with the aspect
        kept, or stretched; exactly what :func:`letterbox` does to the pixels. The one geometry of run
        time and training views."""
        return cls.of_plan(LetterboxPlan.of(frame_w, frame_h, width, height, keep_aspect))

    @classmethod
    def of_plan(cls, plan: LetterboxPlan) -> "Letterbox":
        """The geometry of a :class:`LetterboxPlan`'s pixels."""
        # cv2.resize maps pixel edges (edge x -> x * size / source); in pixel centres, the
        # coordinates used here, that is centre x -> x * scale + (scale - 1) / 2.
        sx = plan.size[0] / (plan.halving * plan.source[0])
        sy = plan.size[1] / (plan.halving * plan.source[1])
        return cls(sx, sy, plan.offset[0] + (sx - 1.0) / 2.0, plan.offset[1] + (sy - 1.0) / 2.0)

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Input-pixel coordinates (..., 2) -> frame pixels."""
        out = np.empty_like(xy, dtype=np.float64)
        out[..., 0] = (xy[..., 0] - self.pad_x) / self.scale_x
        out[..., 1] = (xy[..., 1] - self.pad_y) / self.scale_y
        return out


class FaceDetector:
    """A face detector of any registered family, driven entirely by its sidecar."""

    def __init__(self, cfg: DetectorConfig, num_threads: int = 1, model: Optional[Model] = None) -> None:
        self.cfg = cfg
        self.model = model or load_model(cfg.model, kind="detector", num_threads=num_threads)
        meta = self.model.meta
        self.width, self.height = self.model.input_size
        try:
            self.decoding = dict(meta["decoding"])
            self.decoder = decoder_for(self.decoding, (self.width, self.height))
            missing = sorted(set(self.decoder.outputs) - set(meta["outputs"]))
            if missing:
                raise ValueError(f"`outputs` lacks {', '.join(missing)} (the {self.decoding.get('type')} family's)")
            for name in self.decoder.outputs:  # the shapes were matched to the model file when it loaded
                rows = int(meta["outputs"][name]["shape"][1])
                if rows != self.decoder.rows:
                    raise ValueError(f"the decoding gives {self.decoder.rows} cells at {self.width}x{self.height}"
                                     f" but `outputs.{name}` has {rows} (check `decoding.strides` / `decoding.anchors`)")
            adj = self.decoding.get("box_adjust") or {}
            self.box_adjust = (float(adj.get("dx", 0.0)), float(adj.get("dy", 0.0)),
                               float(adj.get("sw", 1.0)), float(adj.get("sh", 1.0)))
        except KeyError as exc:
            raise ModelError(f"{self.model.sidecar_path}: `decoding` lacks {exc}\n  fix: rebuild the model;"
                             " see docs/model-contract.md") from None
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{self.model.sidecar_path}: bad `decoding` ({exc})\n  fix: rebuild the model;"
                             " see docs/model-contract.md") from None
        self.iou_threshold = cfg.iou_threshold or self.decoder.default_iou
        self.min_score = cfg.min_score or self.decoder.default_min_score
        self.keypoint_names = list(self.decoder.keypoint_names)
        self.letterbox = str(meta["input"].get("resize", "letterbox")) == "letterbox"
        # An adaptive model shrinks its input to the letterboxed frame, rounded up to this many
        # pixels: a 16:9 frame fills 320x192 of a 320x256 input, and the padding is not computed.
        self.multiple = int(meta["input"].get("adaptive_multiple") or 0) if self.letterbox else 0
        self._decoders = {(self.width, self.height): self.decoder}
        if self.multiple:
            self._check_adaptive()
        self._rgb = str(meta["input"].get("color", "RGB")).upper() == "RGB"
        self._pixels = pixel_mapper(self.model.pixel_lut())

    @property
    def names(self) -> Tuple[str, str]:
        return self.model.name, self.model.version

    def view(self, shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
        """The frame pixels [x1, y1, x2, y2) the detector looks at: the whole frame, or with ``roi``
        and ``roi_zoom`` the roi widened by 10 % of its size each way (a face centred just inside
        its edge stays whole), within the frame."""
        h, w = shape[:2]
        if self.cfg.roi is None or not self.cfg.roi_zoom:
            return 0, 0, w, h
        x1, y1, x2, y2 = self.cfg.roi
        mx, my = _ROI_MARGIN * (x2 - x1), _ROI_MARGIN * (y2 - y1)
        vx1, vy1 = max(0, math.floor((x1 - mx) * w)), max(0, math.floor((y1 - my) * h))
        return vx1, vy1, max(vx1 + 1, min(w, math.ceil((x2 + mx) * w))), max(vy1 + 1, min(h, math.ceil((y2 + my) * h)))

    def _check_adaptive(self) -> None:
        """ModelError unless the model file leaves height and width open and every size the input
        may shrink to decodes (``input.adaptive_multiple`` a multiple of the family's grid)."""
        path = self.model.sidecar_path
        if not {1, 2} <= set(self.model.open_dims):
            raise ModelError(f"{path}: `input.adaptive_multiple` is set but {self.model.model_path.name} has a fixed"
                             " input size\n  fix: rebuild the model (maskwatch-convert), or drop the key")
        try:
            decoder_for(self.decoding, (self.multiple, self.multiple))
        except ValueError as exc:
            raise ModelError(f"{path}: `input.adaptive_multiple` {self.multiple} does not suit the decoding ({exc})"
                             "\n  fix: rebuild the model (maskwatch-convert)") from None

    def input_size(self, view_w: int, view_h: int) -> Tuple[int, int]:
        """(width, height) of the input for a view of this size: the sidecar's, or for an adaptive
        model the letterboxed view rounded up to ``input.adaptive_multiple`` (the scale is the same:
        the view's longer side, relative to the input, still fills the input)."""
        if not self.multiple:
            return self.width, self.height
        return adaptive_input_size(view_w, view_h, self.width, self.height, self.multiple)

    def decoder_at(self, width: int, height: int) -> Any:
        """The decoder for an input of this size (built once per size)."""
        dec = self._decoders.get((width, height))
        if dec is None:
            dec = self._decoders[(width, height)] = decoder_for(self.decoding, (width, height))
        return dec

    def prepare(self, image: np.ndarray) -> Tuple[np.ndarray, Letterbox]:
        """BGR frame -> (input tensor (1, H, W, 3), letterbox from frame pixels); padding is black."""
        x1, y1, x2, y2 = self.view(image.shape)
        size = self.input_size(x2 - x1, y2 - y1)
        canvas, box = letterbox(image[y1:y2, x1:x2], *size, keep_aspect=self.letterbox)
        if x1 or y1:  # input = (frame - view origin) * scale + pad
            box = Letterbox(box.scale_x, box.scale_y, box.pad_x - x1 * box.scale_x, box.pad_y - y1 * box.scale_y)
        rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB) if self._rgb else canvas
        return self._pixels(rgb)[None], box

    def detect(self, image: np.ndarray) -> List[Face]:
        """Faces of a BGR frame, in frame pixels, filtered by score, size and region of interest."""
        tensor, lb = self.prepare(image)
        raw = self.model.run_raw(tensor)
        decoder = self.decoder_at(tensor.shape[2], tensor.shape[1])
        boxes, scores, keypoints = decoder.decode(self.model.dequantize, raw, self.min_score, self.iou_threshold)
        return self._to_faces(boxes, scores, keypoints, lb, image.shape)

    def _to_faces(self, boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray, lb: Letterbox,
                  shape: Tuple[int, ...]) -> List[Face]:
        if len(boxes) == 0:
            return []
        # The decoder gives input pixels; the letterbox maps them back to frame pixels.
        corners = lb.to_frame(boxes.reshape(-1, 2, 2))
        points = lb.to_frame(kps.reshape(len(kps), -1, 2))
        dx, dy, sw, sh = self.box_adjust
        fh, fw = shape[:2]
        faces: List[Face] = []
        for (p1, p2), score, pts in zip(corners, scores, points):
            w, h = p2[0] - p1[0], p2[1] - p1[1]
            cx, cy = (p1[0] + p2[0]) / 2 + dx * w, (p1[1] + p2[1]) / 2 + dy * h
            w, h = w * sw, h * sh
            if min(w, h) < self.cfg.min_face_px:
                continue
            if self.cfg.roi is not None and not centred_in_roi(cx, cy, self.cfg.roi, fw, fh):
                continue
            box = (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2))
            faces.append(Face(box=box, face_score=float(score), keypoints=pts.astype(np.float32)))
        faces.sort(key=lambda f: -f.face_score)
        return faces


def centred_in_roi(cx: Any, cy: Any, roi: Sequence[float], width: float, height: float) -> Any:
    """Whether a face centred at (cx, cy) counts for ``detector.roi`` ([x1, y1, x2, y2] fractions of a
    ``width`` x ``height`` frame, edges included); scalars or arrays of centres."""
    x1, y1, x2, y2 = roi
    return (x1 * width <= cx) & (cx <= x2 * width) & (y1 * height <= cy) & (cy <= y2 * height)


def adaptive_input_size(view_w: int, view_h: int, width: int, height: int, multiple: int) -> Tuple[int, int]:
    """(width, height) an adaptive detector of largest input ``width`` x ``height`` runs a
    ``view_w`` x ``view_h`` view at: its letterbox, each side rounded up to ``multiple``."""
    s = min(width / view_w, height / view_h)
    # 1e-9: a side that fills the input exactly must not round up past it
    return (min(width, multiple * max(1, math.ceil(s * view_w / multiple - 1e-9))),
            min(height, multiple * max(1, math.ceil(s * view_h / multiple - 1e-9))))


def letterbox(image: np.ndarray, width: int, height: int, keep_aspect: bool = True) -> Tuple[np.ndarray, Letterbox]:
    """Fit a frame into ``width`` x ``height``: centred, aspect kept, black padding (or stretched).

    One bilinear ``cv2.resize`` of the frame (after halving it while the reduction is beyond 4x)
    into a black canvas at a whole-pixel offset: about half the time of the equivalent warpAffine
    (``maskwatch bench`` times the detect stage). The returned geometry is exact, and convert/'s
    training views use the same one (:meth:`Letterbox.fit`).
    """
    h, w = image.shape[:2]
    plan = LetterboxPlan.of(w, h, width, height, keep_aspect)
    src = image
    for _ in range(plan.halving.bit_length() - 1):
        hw, hh = src.shape[1] // 2, src.shape[0] // 2
        # an odd last column / row is left out: 2x2 blocks exactly (OpenCV's fast path; any other
        # factor averages fractional pixels and stretches the geometry)
        src = cv2.resize(src[: 2 * hh, : 2 * hw], (hw, hh), interpolation=cv2.INTER_AREA)
    (nw, nh), (ox, oy) = plan.size, plan.offset
    canvas = np.zeros((height, width) + image.shape[2:], image.dtype)
    canvas[oy : oy + nh, ox : ox + nw] = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, Letterbox.of_plan(plan)


def clip_box(box: Tuple[float, float, float, float], width: int, height: int) -> Tuple[float, float, float, float]:
    """A box limited to the frame (for reporting; crops use the unclipped box)."""
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


__all__ = ["DetectorConfig", "FaceDetector", "Letterbox", "LetterboxPlan", "adaptive_input_size", "centred_in_roi", "clip_box",
           "letterbox"]
