"""``maskwatch-convert float16``: the float16 variant of a shipped model, beside its int8 one.

Built from the float Keras master the int8 sidecar's ``provenance.float_model`` names (float16
weights, float32 input, output and arithmetic), written as ``STEM.fp16.tflite`` + ``STEM.fp16.json``
by :func:`convert.export.sidecar.write_model_pair`; in the same atomic step the int8 sidecar's
``variants.float16`` pins it (sidecar name and model sha256). The parity report ``STEM.parity.json``
gets a ``float16`` row: the variant against the float master on the scenes-ilc2021 val split, through
the agent's own detector or crop (docs/model-contract.md, "Variants").

A rebuilt int8 model (``maskwatch-convert yunet`` ...) drops the pin, so a float16 variant of an
older master is never picked; run this command again (or ``yunet --float16``) after a rebuild.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from convert.errors import ConvertError, int_at_least, run_command
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT
from convert.tf import keras_module, tf_threads

DEFAULT_MODELS = REPO_ROOT / "models"
PRECISION = "float16"
SUFFIX = ".fp16"  # STEM.fp16.tflite / STEM.fp16.json
# Keys the variant sidecar does not copy from the int8 one: they describe the int8 file or its
# measurements (the variant gets its own), or would make the variant name variants of its own.
NOT_COPIED = ("model_file", "model_sha256", "version", "variants", "metrics", "precision")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stem", required=True, help="the int8 model: models/STEM.json (e.g. face_detector_yunet, mask_classifier)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding scenes-ilc2021/ (parity on its val split)")
    p.add_argument("--val-images", type=int_at_least(1), default=None, help="limit the val scenes of the parity row")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow / LiteRT threads")


def read_primary(models_dir: Path, stem: str) -> Dict[str, Any]:
    """The int8 sidecar ``models_dir/stem.json``, checked by the agent's own reader."""
    from agent.model import ModelError, read_sidecar  # noqa: PLC0415

    side = models_dir / f"{stem}.json"
    if not side.is_file():  # the agent's message points at a config file, which this command has none of
        stems = sorted(p.stem for p in models_dir.glob("*.json") if not p.name.endswith((".parity.json", ".fp16.json")))
        raise ConvertError(f"{side}: model sidecar not found (--stem {stem}, --models-dir {models_dir})\n  fix: give the"
                           f" stem of an int8 model pair there{': ' + ', '.join(stems) if stems else ''}")
    try:
        return read_sidecar(side)
    except ModelError as exc:
        raise ConvertError(str(exc)) from None


def float_master_path(models_dir: Path, stem: str, primary: Mapping[str, Any]) -> Path:
    """The float Keras master the sidecar's ``provenance.float_model`` names, which must exist."""
    side = models_dir / f"{stem}.json"
    name = (primary.get("provenance") or {}).get("float_model")
    if not name:
        raise ConvertError(f"{side}: no `provenance.float_model` (the float Keras master)\n  fix: rebuild the int8"
                           " model with a command that ships its master (maskwatch-convert yunet, train_classifier --export)")
    path = models_dir / str(name)
    if not path.is_file():
        raise ConvertError(f"{path}: the float master `provenance.float_model` of {side} names is missing\n  fix: put"
                           " it back beside the sidecar (it ships in models/) or rebuild the int8 model")
    return path


def variant_sidecar(primary: Mapping[str, Any], stem: str) -> Dict[str, Any]:
    """The float16 variant's sidecar fields: the int8 one's (decoding, labels, crop, box_adjust ...)
    without what describes the int8 file; tensors' dtypes and hashes are filled on write."""
    side = {k: copy.deepcopy(v) for k, v in primary.items() if k not in NOT_COPIED}
    side["precision"] = PRECISION
    for spec in side["outputs"].values():
        spec.pop("dtype", None)
        spec.pop("quantization", None)
    # No calibration set: float16 weights are rounded, not fitted to data.
    provenance = {k: v for k, v in side.get("provenance", {}).items() if k != "representative_data"}
    side["provenance"] = {**provenance, "variant_of": f"{stem}.json",
                          "converter_options": "TFLiteConverter optimizations=[DEFAULT], supported_types=[float16]"}
    return side


def pinned_primary(primary: Mapping[str, Any], variant_name: str, sha256: str) -> bytes:
    """The int8 sidecar with ``variants.float16`` naming the variant sidecar and its model's hash,
    in the JSON layout write_model_pair uses (so the file's diff is that one entry)."""
    side = copy.deepcopy(dict(primary))
    side["variants"] = {**side.get("variants", {}), PRECISION: {"sidecar": f"{variant_name}.json", "model_sha256": sha256}}
    return (json.dumps(side, indent=2) + "\n").encode()


def renamed(report: Mapping[str, Any], old: str = "int8", new: str = PRECISION) -> Dict[str, Any]:
    """A parity report's keys with ``old`` replaced: the shared parity functions call their TFLite side int8."""
    return {k.replace(old, new): v for k, v in report.items()}


def detector_parity(keras_model: Any, flat: bytes, side: Dict[str, Any], data_root: Path,
                    val_images: Optional[int], threads: int) -> Dict[str, Any]:
    """Faces of the variant against the float master on val scenes, through the agent's detector."""
    from agent.model import load_model  # noqa: PLC0415
    from convert.data.detector import bgr_loader, read_scenes  # noqa: PLC0415
    from convert.evaluate import detector as de  # noqa: PLC0415
    from convert.export.sidecar import write_model_pair  # noqa: PLC0415

    val = read_scenes(data_root, "val")[:val_images]
    with tempfile.TemporaryDirectory(prefix="maskwatch-fp16-") as tmp:
        _, sidecar = write_model_pair(Path(tmp), "candidate", flat, side)
        variant = load_model(sidecar, kind="detector", num_threads=threads)
        min_score = float(side["decoding"]["default_min_score"])
        report = de.face_parity(de.KerasModel(keras_model, side), variant, val, bgr_loader(), min_score)
    return {"kind": "detector", **renamed(report), "validation": f"scenes-ilc2021 val split, {len(val)} images"}


def classifier_parity(keras_model: Any, flat: bytes, side: Dict[str, Any], data_root: Path,
                      val_images: Optional[int]) -> Dict[str, Any]:
    """Labels of the variant against the float master on the annotated val faces, cut with the sidecar's crop."""
    import cv2  # noqa: PLC0415

    from agent.pipeline.crop import CropSpec, crop_faces  # noqa: PLC0415
    from convert.data.detector import read_scenes  # noqa: PLC0415
    from convert.export import parity  # noqa: PLC0415

    inp = side["input"]
    spec = CropSpec.from_sidecar(side["crop"], int(inp["width"]), int(inp["height"]))
    labels = list(side["labels"])
    crops, y = [], []
    for s in read_scenes(data_root, "val")[:val_images]:
        keep = [i for i, lab in enumerate(s.labels) if lab in labels]
        image = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
        if not keep or image is None:
            continue
        crops.append(crop_faces(image, [tuple(s.boxes[i]) for i in keep], [None] * len(keep), spec))
        y += [labels.index(s.labels[i]) for i in keep]
    if not crops:
        raise ConvertError(f"{data_root}: no val faces labelled {labels}\n  fix: pass --data-root DIR holding scenes-ilc2021/")
    x = np.concatenate(crops)
    if str(inp["color"]).upper() == "RGB":
        x = x[..., ::-1]
    norm = inp["normalization"]
    x = (x.astype(np.float32) - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    out = side.get("output", {})
    report = parity.classifier_parity(keras_model, flat, x, labels, activation=str(out.get("activation", "softmax")),
                                      temperature=float(out.get("temperature", 1.0)), y_true=np.asarray(y))
    return {**renamed(report), "validation": f"scenes-ilc2021 val split, {len(y)} annotated faces (sidecar crop, no keypoints)"}


def build(models_dir: Path, stem: str, data_root: Path = DEFAULT_DATA_ROOT, val_images: Optional[int] = None,
          threads: int = 2, log: Callable[[str], None] = print) -> Path:
    """Build, score and write the float16 variant of ``models_dir/stem.json``; returns its sidecar path."""
    from convert.export.parity import write_parity_report  # noqa: PLC0415
    from convert.litert import latency_ms  # noqa: PLC0415
    from convert.export.quantize import open_input_size, quantize_float16  # noqa: PLC0415
    from convert.export.sidecar import write_model_pair  # noqa: PLC0415

    models_dir = Path(models_dir)
    primary = read_primary(models_dir, stem)
    master = float_master_path(models_dir, stem, primary)
    tf_threads(threads)  # a no-op when TensorFlow already ran in this process (yunet --float16)
    log(f"float16 variant of {models_dir / stem}.json from {master.name}")
    model = keras_module().models.load_model(master, compile=False)
    mi = primary["input"]
    if mi.get("adaptive_multiple"):  # the variant runs at every input size the primary may shrink to
        model = open_input_size(model)
    flat = quantize_float16(model)
    side = variant_sidecar(primary, stem)
    if primary["kind"] == "detector":
        report = detector_parity(model, flat, side, data_root, val_images, threads)
    else:
        report = classifier_parity(model, flat, side, data_root, val_images)
    report.update({"size_bytes": len(flat),
                   "latency_ms": latency_ms(flat, input_shape=(1, int(mi["height"]), int(mi["width"]), int(mi["channels"])))})
    side["metrics"] = {"parity": report}
    name = stem + SUFFIX
    sha = hashlib.sha256(flat).hexdigest()
    _, variant_path = write_model_pair(models_dir, name, flat, side,
                                       extra={f"{stem}.json": pinned_primary(primary, name, sha)})
    old_path = models_dir / f"{stem}.parity.json"
    old = json.loads(old_path.read_text()) if old_path.is_file() else {"kind": primary["kind"]}
    write_parity_report(models_dir, stem, {**old, PRECISION: report})
    log(f"wrote {variant_path} ({len(flat)} bytes) and pinned it in {models_dir / stem}.json")
    return variant_path


def run(a: argparse.Namespace) -> int:
    """Execute ``maskwatch-convert float16``."""
    build(a.models_dir, a.stem, a.data_root, a.val_images, a.threads)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("maskwatch-convert float16", __doc__.splitlines()[0], add_arguments, run, argv)


__all__ = ("build", "float_master_path", "main", "pinned_primary", "read_primary", "run", "variant_sidecar")
