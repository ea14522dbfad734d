"""``maskwatch detect``: find and classify faces in images, folders or videos (JSON lines or text,
annotated copies on request)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import cv2
import numpy as np

from agent.assemble import load_models
from agent.config import Config, load_config
from agent.draw import draw_overlay
from agent.errors import EXIT_OK, EXIT_SOME_FAILED
from agent.pipeline.detect import clip_box
from agent.pipeline.source import VIDEO_EXTS, SourceCounters, SourceError, VideoFileSource, list_images, normalize_image, read_image
from agent.types import Face


def inputs(paths: Sequence[str]) -> Iterator[Tuple[str, str]]:
    """(path as given or found, kind) for each input: images of folders, globs, files."""
    for p in paths:
        if os.path.isdir(p):
            found = list_images(p)
            if not found:
                yield p, "empty-folder"
            for f in found:
                yield f, "image"
        elif any(c in p for c in "*?[") and not os.path.exists(p):
            found = list_images(p)
            if not found:
                yield p, "missing"
            for f in found:
                yield f, ("video" if f.lower().endswith(VIDEO_EXTS) else "image")
        elif p.lower().endswith(VIDEO_EXTS):
            yield p, "video"
        else:
            yield p, "image"


def face_json(face: Face, width: int, height: int) -> Dict[str, Any]:
    return {
        "box": [round(v, 1) for v in clip_box(face.box, width, height)],
        "label": face.label,
        "score": round(face.score, 4),
        "face_score": round(face.face_score, 4),
        "scores": {k: round(v, 4) for k, v in face.scores.items()},
    }


class Detector:
    """detect + classify of single images, timed, for the ``detect`` and ``bench`` commands."""

    def __init__(self, cfg: Config) -> None:
        self.detector, self.classifier = load_models(cfg)

    def __call__(self, image: np.ndarray) -> Tuple[List[Face], Dict[str, float]]:
        t0 = time.perf_counter()
        faces = self.detector.detect(image)
        t1 = time.perf_counter()
        faces = self.classifier.classify(image, faces)
        t2 = time.perf_counter()
        return faces, {"detect": (t1 - t0) * 1e3, "classify": (t2 - t1) * 1e3}


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    run = Detector(cfg)
    out: TextIO = sys.stdout
    if args.annotate:
        Path(args.annotate).mkdir(parents=True, exist_ok=True)
    failed = 0
    max_pixels = cfg.source.max_pixels

    def emit(obj: Dict[str, Any]) -> None:
        if args.json:
            out.write(json.dumps(obj) + "\n")
        elif "error" in obj:
            out.write(f"{obj['image']}: error: {obj['error']}\n")
        else:
            where = obj["image"] + (f" frame {obj['frame']}" if "frame" in obj else "")
            faces = ", ".join(f"{f['label']} {f['score']:.2f} {f['box']}" for f in obj["faces"]) or "no face"
            out.write(f"{where}: {len(obj['faces'])} face(s): {faces}  [{obj['ms']['total']:.1f} ms]\n")
        out.flush()

    def one(path: str, image: np.ndarray, frame: Optional[int] = None) -> None:
        t0 = time.perf_counter()
        faces, ms = run(image)
        h, w = image.shape[:2]
        obj: Dict[str, Any] = {"image": path}
        if frame is not None:
            obj["frame"] = frame
        obj.update(width=w, height=h, faces=[face_json(f, w, h) for f in faces])
        ms["total"] = (time.perf_counter() - t0) * 1e3
        obj["ms"] = {k: round(v, 3) for k, v in ms.items()}
        emit(obj)
        if args.annotate:
            stem = Path(path).stem + (f"_{frame:06d}" if frame is not None else "")
            cv2.imwrite(str(Path(args.annotate) / f"{stem}.jpg"), draw_overlay(image, faces))

    for path, kind in inputs(args.paths):
        if kind in ("missing", "empty-folder"):
            emit({"image": path, "error": "no such file" if kind == "missing" else "no image in folder"})
            failed += 1
            continue
        if kind == "video":
            try:
                video = VideoFileSource(path, max_pixels)
            except SourceError:
                emit({"image": path, "error": "cannot open as a video" if os.path.exists(path) else "no such file"})
                failed += 1
                continue
            with video:
                for frame in video:
                    one(path, frame.image, frame.index)
            if video.counters.frames == 0:
                emit({"image": path, "error": "no readable frame"})
                failed += 1
            continue
        if not os.path.exists(path):
            emit({"image": path, "error": "no such file"})
            failed += 1
            continue
        raw = read_image(path)
        if raw is None:
            emit({"image": path, "error": "not a readable image"})
            failed += 1
            continue
        counters = SourceCounters()
        image = normalize_image(raw, counters, max_pixels)
        if image is None:
            reason = next(iter(counters.skipped), "unusable")
            emit({"image": path, "error": f"unusable image ({reason.replace('_', ' ')})"})
            failed += 1
            continue
        one(path, image)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per image (per frame for videos)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images into DIR")
    p.add_argument("paths", nargs="+", metavar="PATH")


__all__ = ["Detector", "add_arguments", "face_json", "inputs", "run"]
