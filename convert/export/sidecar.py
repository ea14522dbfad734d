"""The model contract's writing side: a sidecar completed from the converted model itself, and the
atomic write of a model + sidecar pair (docs/model-contract.md; the agent reads it with
:func:`agent.model.read_sidecar` against agent/schemas/model.schema.json).

``write_model_pair`` writes ``NAME.tflite`` + ``NAME.json`` and updates ``SHA256SUMS``; everything
goes to temp files first, so a failed run leaves ``models/`` unchanged.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from convert.errors import ConvertError
from convert.litert import tflite_io
from convert.export.quantize import tensorflow_version

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


# ---------------------------------------------------------------------------------------------
# Reading a converted model back


def quant_dict(detail: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """A tensor's sidecar ``quantization`` (scale, zero point), None for a float tensor."""
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
    side["input"]["quantization"] = quant_dict(inp)

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
        spec["quantization"] = quant_dict(o)
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


def require_models_dir(models_dir: Path | str, hint: str = "") -> Path:
    """``models_dir`` as a Path; ConvertError naming it and the fix when it is not a folder. Commands
    call it before their work as well, so a typo stops them at once, not at the write."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ConvertError(f"{models_dir}: models folder does not exist; fix: create it, or give --models-dir an"
                           f" existing folder{hint}")
    return models_dir


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
    models_dir = require_models_dir(models_dir)
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
    "SCHEMA",
    "check_sidecar_fields",
    "fill_sidecar",
    "quant_dict",
    "require_models_dir",
    "write_files_atomically",
    "write_model_pair",
)
