"""Inputs of the generic ``quantize`` command: source model, sidecar template, calibration images.

Calibration images are preprocessed exactly as the agent feeds the model, from the sidecar:
classifiers get faces cut with :func:`agent.pipeline.crop.crop_face` (from a boxes CSV) or whole images
resized to the input (from a folder of crops); detectors get letterboxed frames.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from agent.pipeline.crop import CropSpec, crop_face
from convert.errors import ConvertError
from convert.tf import keras_module, tensorflow

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Calibration:
    arrays: List[np.ndarray]  # preprocessed float32 (1, H, W, C)
    description: str


def load_sidecar_template(path: Optional[Path], flags: Optional[argparse.Namespace] = None) -> Dict[str, Any]:
    """Sidecar fields from a JSON template, overridden by the CLI flags that were given."""
    side: Dict[str, Any] = {}
    if path is not None:
        try:
            side = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConvertError(f"{path}: sidecar template not found") from None
        except json.JSONDecodeError as exc:
            raise ConvertError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(side, dict):
            raise ConvertError(f"{path}: the sidecar template must be a JSON object")
    if flags is not None:
        inp = side.setdefault("input", {})
        for key in ("kind", "name"):
            if getattr(flags, key, None):
                side[key] = getattr(flags, key)
        if getattr(flags, "color", None):
            inp["color"] = flags.color
        if getattr(flags, "mean", None) or getattr(flags, "std", None):
            norm = inp.setdefault("normalization", {})
            if flags.mean:
                norm["mean"] = list(flags.mean)
            if flags.std:
                norm["std"] = list(flags.std)
        if getattr(flags, "labels", None):
            side["labels"] = list(flags.labels)
    return side


def load_source_model(path: Path) -> Any:
    """A keras.Model from a .keras/.h5 file or a SavedModel folder; ConvertError if unreadable."""
    from convert.ports.graph import layers  # noqa: PLC0415

    path = Path(path)
    if not path.exists():
        raise ConvertError(f"{path}: model not found")
    keras = keras_module()
    layers()  # custom layers of the BlazeFace rebuild
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConvertError(f"{path}: a folder must be a SavedModel (saved_model.pb missing)")
        try:
            tf = tensorflow()
            sig = tf.saved_model.load(str(path)).signatures["serving_default"]
            spec = list(sig.structured_input_signature[1].values())[0]
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        except Exception as exc:  # TF raises several types for a broken SavedModel
            raise ConvertError(f"{path}: cannot load the SavedModel ({str(exc).splitlines()[0][:200]})") from exc
        inp = keras.Input(shape=tuple(spec.shape[1:]), batch_size=1, name="input")
        out = layer(inp)
        outs = [keras.layers.Identity(name=k)(out[k]) for k in sorted(out)] if isinstance(out, dict) else [out]
        return keras.Model(inp, outs)
    if path.suffix not in (".keras", ".h5"):
        raise ConvertError(f"{path}: expected a .keras or .h5 file, or a SavedModel folder")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # corrupt zip/HDF5, unknown layers, ...: all mean "cannot read this file"
        raise ConvertError(f"{path}: cannot load the Keras model ({str(exc).splitlines()[0][:200]})") from exc


def source_sha256(path: Path) -> str:
    """sha256 of a model file, or of every file of a SavedModel folder (sorted by name)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.read_bytes())
    return h.hexdigest()


def _normalize(rgb_or_bgr: np.ndarray, side: Dict[str, Any]) -> np.ndarray:
    norm = side["input"]["normalization"]
    x = (rgb_or_bgr.astype(np.float32) - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    return x[None]


def _to_color(bgr: np.ndarray, side: Dict[str, Any]) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if str(side["input"].get("color", "RGB")).upper() == "RGB" else bgr


def _from_folder(folder: Path, side: Dict[str, Any], limit: int) -> List[np.ndarray]:
    from convert.export.face_detector import letterbox  # noqa: PLC0415

    w, h = int(side["input"]["width"]), int(side["input"]["height"])
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rng = np.random.default_rng(0)
    if len(files) > limit:
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    out = []
    for p in files:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        if side.get("kind") == "detector" and side["input"].get("resize", "letterbox") == "letterbox":
            rgb, *_ = letterbox(bgr, w)
            img = rgb if str(side["input"].get("color", "RGB")).upper() == "RGB" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        else:
            interp = cv2.INTER_AREA if bgr.shape[1] > w else cv2.INTER_LINEAR
            img = _to_color(cv2.resize(bgr, (w, h), interpolation=interp), side)
        out.append(_normalize(img, side))
    return out


def _from_boxes_csv(csv_path: Path, side: Dict[str, Any], limit: int) -> List[np.ndarray]:
    """Face crops from a boxes CSV (image,xmin,ymin,xmax,ymax[,label]); images in CSV_DIR/images."""
    if "crop" not in side:
        raise ConvertError(f"{csv_path}: cutting faces needs the sidecar field 'crop' (see docs/model-contract.md)")
    w, h = int(side["input"]["width"]), int(side["input"]["height"])
    spec = CropSpec.from_sidecar(side["crop"], w, h)
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ConvertError(f"{csv_path}: boxes CSV not found") from None
    need = {"image", "xmin", "ymin", "xmax", "ymax"}
    if rows and not need <= set(rows[0]):
        raise ConvertError(f"{csv_path}: columns {sorted(need - set(rows[0]))} missing (want image,xmin,ymin,xmax,ymax)")
    rng = np.random.default_rng(0)
    if len(rows) > limit:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), limit, replace=False))]
    images_dir = Path(csv_path).parent / "images"
    out, cache = [], {}
    for r in rows:
        p = images_dir / r["image"]
        if p not in cache:
            cache.clear()
            cache[p] = cv2.imread(str(p), cv2.IMREAD_COLOR)
        bgr = cache[p]
        if bgr is None:
            raise ConvertError(f"{p}: cannot read image (listed in {csv_path})")
        box = tuple(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append(_normalize(_to_color(crop_face(bgr, box, None, spec), side), side))
    return out


def representative_arrays(
    side: Dict[str, Any], *, images: Optional[Path] = None, boxes_csv: Optional[Path] = None, limit: int = 300
) -> Calibration:
    """Preprocessed calibration inputs from a folder of images or a boxes CSV."""
    if images is not None:
        if not Path(images).is_dir():
            raise ConvertError(f"{images}: representative image folder not found")
        arrays = _from_folder(images, side, limit)
        desc = f"{len(arrays)} images from {images}"
    elif boxes_csv is not None:
        arrays = _from_boxes_csv(boxes_csv, side, limit)
        desc = f"{len(arrays)} face crops (agent.pipeline.crop.crop_face) from {boxes_csv}"
    else:
        raise ConvertError("give --images DIR or --boxes-csv CSV for the representative dataset")
    if not arrays:
        raise ConvertError(f"the representative dataset is empty: no readable images in {images or boxes_csv}")
    return Calibration(arrays, desc)


def parity_for(model: Any, flat: bytes, side: Dict[str, Any], arrays: Sequence[np.ndarray]) -> Dict[str, Any]:
    """The parity report for the sidecar's kind, on preprocessed inputs."""
    from convert.export import parity  # noqa: PLC0415

    if side["kind"] == "classifier":
        out = side.get("output", {})
        rep = parity.classifier_parity(
            model, flat, np.concatenate(list(arrays)), side["labels"],
            activation=out.get("activation", "softmax"), temperature=float(out.get("temperature", 1.0)),
        )
    else:
        rep = parity.detector_parity(model, flat, list(arrays), side["decoding"])
    rep["validation"] = f"{len(arrays)} of the representative inputs (no held-out set given)"
    return rep


__all__ = ("load_sidecar_template", "load_source_model", "source_sha256", "representative_arrays", "parity_for", "Calibration")
