"""``maskwatch-convert``: build the int8 models in ``models/`` from full TensorFlow/Keras models.

Subcommands:
  blazeface      rebuild MediaPipe's BlazeFace .tflite files as Keras models (build/keras/)
  face-detector  BlazeFace (Keras) -> int8 models/face_detector*.tflite + sidecar + parity report
  quantize       any Keras/SavedModel + sidecar template + representative images -> int8 model pair
  yunet          YuNet (ONNX) -> Keras -> int8 models/face_detector_yunet.tflite + sidecar + reports
  float16        the float16 variant of a shipped int8 model (STEM.fp16.tflite + sidecar, parity row)
  ...            training subcommands of other convert modules (train-classifier, ...) when present

User errors print one line naming the file/key and the fix, and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from convert.errors import ConvertError, float_in, int_at_least
from convert.tf import settings
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT

DEFAULT_SCENES = DEFAULT_DATA_ROOT / "scenes-ilc2021"
DEFAULT_MODELS = REPO_ROOT / "models"
DEFAULT_KERAS_DIR = REPO_ROOT / "build" / "keras"

# Subcommands that live in other convert modules, each with main(argv) -> int. Registered only when
# the module exists, so this CLI does not depend on them.
EXTERNAL: Dict[str, str] = {
    "train-classifier": "convert.train.classifier",
    "landmark-classifier": "convert.train.landmark_classifier",
    "evaluate-classifier": "convert.evaluate.classifier",
    "classifier-data": "convert.data.classifier",
    "train-detector": "convert.train.detector",
    "finetune": "convert.train.finetune",
    "yunet": "convert.export.yunet_detector",
    "train-yunet": "convert.train.yunet",
    "float16": "convert.export.float16",
}


def _external_available() -> Dict[str, str]:
    return {cmd: mod for cmd, mod in EXTERNAL.items() if importlib.util.find_spec(mod) is not None}


def _mediapipe_dir(arg: Optional[Path]) -> Path:
    """--mediapipe-dir, else $MASKWATCH_MEDIAPIPE_DIR or .cache/ (the wheel fetched there once)."""
    from convert.ports.blazeface_keras import ensure_mediapipe  # noqa: PLC0415

    return arg if arg is not None else ensure_mediapipe()


# ---------------------------------------------------------------------------------------------
# blazeface


def cmd_blazeface(a: argparse.Namespace) -> int:
    """Rebuild both BlazeFace variants as .keras files and check them against the originals."""
    from convert.ports.blazeface_keras import load_blazeface, parity_vs_tflite  # noqa: PLC0415

    a.out.mkdir(parents=True, exist_ok=True)
    mp_dir = _mediapipe_dir(a.mediapipe_dir)
    for variant in a.variants:
        print(f"rebuilding BlazeFace {variant} range from {mp_dir}", flush=True)
        model, data, sha = load_blazeface(mp_dir, variant)
        diff = parity_vs_tflite(model, data, a.scenes / "images", n_images=a.check_images)
        print(f"  max |keras - tflite| on {diff['n_images']} real images: {diff['max_abs_diff']:.2e}", flush=True)
        if diff["max_abs_diff"] > 1e-3:
            raise ConvertError(f"{variant} rebuild differs from the tflite by {diff['max_abs_diff']:.2e} (> 1e-3)")
        path = a.out / f"blazeface_{variant}_range.keras"
        tmp_path = path.with_name(path.name + ".tmp.keras")
        model.save(tmp_path)
        os.replace(tmp_path, path)
        (a.out / f"blazeface_{variant}_range.source.json").write_text(
            json.dumps({"source_sha256": sha, "source": str(mp_dir), **diff}, indent=2) + "\n"
        )
        print(f"  wrote {path}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# face-detector


def cmd_face_detector(a: argparse.Namespace) -> int:
    """The shipped detector(s): BlazeFace Keras -> int8 + sidecar + parity report in models/."""
    from convert.ports.blazeface_keras import MODEL_FILES, load_blazeface, load_keras  # noqa: PLC0415
    from agent.model import sha256_of  # noqa: PLC0415
    from convert.export.face_detector import build_face_detector  # noqa: PLC0415

    for variant in a.variants:
        stem = "face_detector" if variant == "full" else "face_detector_short"
        if a.keras:
            model = load_keras(a.keras)
            src_name, sha = a.keras.name, sha256_of(a.keras)
        else:
            model, _, sha = load_blazeface(_mediapipe_dir(a.mediapipe_dir), variant)
            src_name = MODEL_FILES[variant]
        build_face_detector(
            model, variant, src_name, sha, a.scenes, a.models_dir, stem,
            n_calibration=a.calibration_images, n_val=a.val_images,
            float_outputs=a.float_outputs, trim_quantile=a.trim_quantile, ablation=not a.no_ablation,
            head_correction=not a.no_head_correction,
        )
    return 0


# ---------------------------------------------------------------------------------------------
# quantize (generic)


def cmd_quantize(a: argparse.Namespace) -> int:
    """Any Keras model + sidecar template + representative data -> int8 model pair + parity."""
    from convert.export import representative as rep  # noqa: PLC0415
    from convert.export.quantize import quantize_int8  # noqa: PLC0415
    from convert.export.sidecar import check_sidecar_fields, write_model_pair  # noqa: PLC0415

    side = rep.load_sidecar_template(a.sidecar_template, a)
    check_sidecar_fields(side, str(a.sidecar_template) if a.sidecar_template else "no --sidecar-template, so the flags (--kind ...)")
    model = rep.load_source_model(a.model)
    side.setdefault("provenance", {}).update(
        {"source_model": side.get("provenance", {}).get("source_model", a.model.name),
         "source_model_sha256": rep.source_sha256(a.model)}
    )
    calib = rep.representative_arrays(side, images=a.images, boxes_csv=a.boxes_csv, limit=a.calibration_images)
    side["provenance"]["representative_data"] = calib.description
    print(f"calibrating on {len(calib.arrays)} images ({calib.description})", flush=True)
    flat = quantize_int8(model, calib.arrays, float_outputs=a.float_outputs)
    report = rep.parity_for(model, flat, side, calib.arrays[: a.val_images])
    side.setdefault("metrics", {})["parity"] = {k: v for k, v in report.items() if k not in ("notes",)}
    write_model_pair(a.models_dir, a.stem, flat, side)
    from convert.export.parity import write_parity_report  # noqa: PLC0415

    write_parity_report(a.models_dir, a.stem, report)
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskwatch-convert", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser("blazeface", help="rebuild MediaPipe BlazeFace .tflite files as Keras (build/keras/)")
    b.add_argument("--mediapipe-dir", type=Path, help="unpacked mediapipe 0.10.21 wheel (default: $MASKWATCH_MEDIAPIPE_DIR, else pip download)")
    b.add_argument("--out", type=Path, default=DEFAULT_KERAS_DIR)
    b.add_argument("--variants", nargs="+", choices=["full", "short"], default=["full", "short"])
    b.add_argument("--scenes", type=Path, default=DEFAULT_SCENES, help="scenes-ilc2021 folder (images for the check)")
    b.add_argument("--check-images", type=int, default=8, help="real images compared with the original tflite")
    b.set_defaults(func=cmd_blazeface)

    f = sub.add_parser("face-detector", help="int8 BlazeFace -> models/face_detector*.tflite + sidecar + parity")
    f.add_argument("--mediapipe-dir", type=Path)
    f.add_argument("--keras", type=Path, help="a .keras BlazeFace (e.g. fine-tuned) instead of the mediapipe original")
    f.add_argument("--variants", nargs="+", choices=["full", "short"], default=["full"])
    f.add_argument("--scenes", type=Path, default=DEFAULT_SCENES)
    f.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    f.add_argument("--calibration-images", type=int_at_least(1), default=300)
    f.add_argument("--val-images", type=int_at_least(1), default=None, help="limit the val images of the parity report")
    f.add_argument("--float-outputs", nargs="*", default=["regressors", "scores"], choices=["regressors", "scores"],
                   help="outputs whose head runs in float (default both; give the flag alone for all-int8)")
    f.add_argument("--trim-quantile", type=float_in(0, 1, low_open=True), default=0.25, help="drop calibration images with output peaks above this quantile")
    f.add_argument("--no-ablation", action="store_true", help="skip measuring the all-int8-heads variant")
    f.add_argument("--no-head-correction", action="store_true",
                   help="do not fit and fold the int8 bias correction into the float regressor heads")
    f.set_defaults(func=cmd_face_detector)

    q = sub.add_parser("quantize", help="Keras/SavedModel + sidecar template + images -> int8 model pair")
    q.add_argument("model", type=Path, help=".keras / .h5 file or SavedModel folder")
    q.add_argument("--stem", required=True, help="output name: models/STEM.tflite + STEM.json")
    q.add_argument("--sidecar-template", type=Path, help="JSON with the sidecar fields (docs/model-contract.md)")
    q.add_argument("--kind", choices=["detector", "classifier"])
    q.add_argument("--name")
    q.add_argument("--color", choices=["RGB", "BGR"])
    q.add_argument("--mean", type=float, nargs=3)
    q.add_argument("--std", type=float, nargs=3)
    q.add_argument("--labels", nargs="+")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of representative images")
    src.add_argument("--boxes-csv", type=Path, help="boxes CSV (image,xmin,ymin,xmax,ymax,label); faces cut with agent.pipeline.crop")
    q.add_argument("--calibration-images", type=int_at_least(1), default=300)
    q.add_argument("--val-images", type=int_at_least(1), default=200)
    q.add_argument("--float-outputs", nargs="*", default=[])
    q.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    q.set_defaults(func=cmd_quantize)

    for cmd, mod in _external_available().items():
        sub.add_parser(cmd, help=f"see {mod} (arguments passed through)", add_help=False)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``maskwatch-convert`` / ``python -m convert``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    settings()
    external = _external_available()
    if argv and argv[0] in external:
        # The pass-through commands parse their own arguments; their user errors end below too,
        # as one line and exit 2 rather than a traceback.
        command = argv[0]
        call = lambda: importlib.import_module(external[command]).main(argv[1:])  # noqa: E731
    else:
        p = build_parser()
        a = p.parse_args(argv)
        if not getattr(a, "func", None):
            p.print_help()
            return 2
        command, call = a.command, lambda: a.func(a)  # noqa: E731
    try:
        return int(call() or 0)
    except ConvertError as exc:
        print(f"maskwatch-convert {command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"maskwatch-convert {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; models/ left unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
