"""``maskwatch evaluate --stream SECONDS``: each annotated photo as a short doorway clip, scored per person.

A photo understates what the agent does at a door, where it sees each person for seconds and the
tracker's vote and the alert policy decide. Here every annotated photo becomes a clip of
``SECONDS`` at the config's ``source.fps``: sensor noise, a pixel or two of jitter and a slight
exposure drift, all seeded by ``--seed`` and the photo's file name (a photo's clip does not depend
on which other photos are scored). Each clip runs through a fresh :class:`agent.pipeline.loop.Pipeline`
built as ``maskwatch run`` builds it (:func:`agent.assemble.build_pipeline`: the config's detector,
classifier, tracker and alert policy) one frame at a time with :meth:`Pipeline.process`, the
run loop's per-frame step. Each alert is matched to the annotated faces of its frame (moved by
that frame's jitter) at IoU >= ``--iou``, as detections are in the photo mode; each annotated face is
one person. Scored: unmasked people alerted, masked people falsely alerted (95 % Wilson
intervals), alerts on no annotated face, and repeat alerts on one person (a track lost and
started again).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np

from agent.tools.annotations import LABELS, Annotation, Boxes
from agent.tools.scoring import MATCH_IOU, UNMASKED, match_greedy, pct, read_annotated_photo, wilson
from agent.types import Frame

# A still camera's clip: how far a frame may be shifted (px), sensor noise (sd, 8-bit levels) and
# the largest exposure change over the clip (fraction): a doorway camera on a wall, not a handheld one.
JITTER_PX = 2.0
NOISE_SD = 2.0
EXPOSURE_DRIFT = 0.06


@dataclass(frozen=True)
class ClipSpec:
    """How a photo becomes a clip."""

    seconds: float
    fps: float
    seed: int = 0

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))


def clip_frames(image: np.ndarray, spec: ClipSpec, name: str) -> Iterator[Tuple[np.ndarray, Tuple[float, float]]]:
    """The clip of one photo: ``(frame, (dx, dy))`` per frame, ``(dx, dy)`` how far its content moved.

    Seeded by ``spec.seed`` and ``name`` only. Exposure drifts linearly from 1 to a gain drawn
    within +-:data:`EXPOSURE_DRIFT`; each frame gets its own sub-pixel shift within
    +-:data:`JITTER_PX` (borders replicated) and Gaussian noise of :data:`NOISE_SD` levels.
    """
    rng = np.random.default_rng([spec.seed, zlib.crc32(name.encode("utf-8"))])
    h, w = image.shape[:2]
    end_gain = 1.0 + rng.uniform(-EXPOSURE_DRIFT, EXPOSURE_DRIFT)
    # Drawing a frame's worth of Gaussian noise costs more than the detector does: draw one field a
    # margin larger than the frame per clip and cut each frame's noise from it at a random offset.
    margin = 32
    field = np.rint(rng.standard_normal((h + 2 * margin, w + 2 * margin, image.shape[2]), dtype=np.float32)
                    * NOISE_SD).astype(np.int16)
    levels = np.arange(256, dtype=np.float32)
    for k in range(spec.frames):
        dx, dy = (float(v) for v in rng.uniform(-JITTER_PX, JITTER_PX, 2))
        ox, oy = (int(v) for v in rng.integers(0, 2 * margin + 1, 2))
        moved = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        gain = 1.0 + (end_gain - 1.0) * k / max(1, spec.frames - 1)
        exposed = cv2.LUT(moved, np.clip(np.rint(levels * gain), 0, 255).astype(np.uint8))
        yield cv2.add(exposed, field[oy:oy + h, ox:ox + w], dtype=cv2.CV_8U), (dx, dy)  # saturates at 0 and 255


def _shifted(box: Sequence[float], dx: float, dy: float) -> Tuple[float, float, float, float]:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def run_clip(pipeline: Any, image: np.ndarray, faces: Sequence[Annotation], spec: ClipSpec, name: str,
             iou_thr: float = MATCH_IOU) -> Dict[str, Any]:
    """One photo's clip through ``pipeline``: per annotated person its alerts (matched at IoU >= ``iou_thr``),
    and the alerts on no face.

    ``pipeline`` is a fresh :class:`agent.pipeline.loop.Pipeline` (its tracker and alert policy start empty).
    """
    alerts = [0] * len(faces)
    labels: List[List[str]] = [[] for _ in faces]
    on_no_face = 0
    for k, (frame, (dx, dy)) in enumerate(clip_frames(image, spec, name)):
        events = pipeline.process(Frame(image=frame, timestamp=k / spec.fps, index=k, source=name)).events
        if not events:
            continue
        matched = match_greedy([(e.box, e.score) for e in events], [_shifted(f.box, dx, dy) for f in faces], iou_thr)
        for g, m in enumerate(matched):
            if m is not None:
                alerts[g] += 1
                labels[g].append(events[m].label)
        on_no_face += len(events) - sum(m is not None for m in matched)
    pipeline.finish()
    return {"people": [{"box": list(f.box), "label": f.label, "height": f.height, "alerts": n, "alert_labels": lab}
                       for f, n, lab in zip(faces, alerts, labels)],
            "alerts_on_no_face": on_no_face}


def _rate(k: int, n: int) -> Dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"count": k, "of": n, "pct": pct(k, n),
            "interval95": None if n == 0 else [round(100 * lo, 1), round(100 * hi, 1)]}


def _people_group(people: List[Dict[str, Any]]) -> Dict[str, Any]:
    rows: Dict[str, Any] = {label: _rate(sum(p["alerts"] > 0 for p in people if p["label"] == label),
                                         sum(p["label"] == label for p in people)) for label in LABELS}
    unmasked = [p for p in people if p["label"] in UNMASKED]
    masked = [p for p in people if p["label"] == "mask"]
    rows["unmasked_alerted"] = _rate(sum(p["alerts"] > 0 for p in unmasked), len(unmasked))
    rows["masked_falsely_alerted"] = _rate(sum(p["alerts"] > 0 for p in masked), len(masked))
    return rows


def summarize_stream(per_image: Dict[str, Dict[str, Any]], spec: ClipSpec, min_size: float = 40,
                     iou_thr: float = MATCH_IOU) -> Dict[str, Any]:
    """Per-person metrics over :func:`run_clip` outcomes, for all faces and faces >= ``min_size`` px tall."""
    people = [p for r in per_image.values() for p in r["people"]]
    on_no_face = sum(r["alerts_on_no_face"] for r in per_image.values())
    return {
        "mode": "stream", "images": len(per_image), "seconds": spec.seconds, "fps": spec.fps,
        "frames_per_clip": spec.frames, "seed": spec.seed, "iou": iou_thr, "min_size": min_size,
        "all": _people_group(people),
        "min_size_faces": _people_group([p for p in people if p["height"] >= min_size]),
        "alerts": sum(p["alerts"] for p in people) + on_no_face,
        "alerts_on_no_face": on_no_face,
        "alerts_on_no_face_per_clip": round(on_no_face / len(per_image), 3) if per_image else None,
        "repeat_alerts": sum(max(0, p["alerts"] - 1) for p in people),
    }


def format_stream_table(summary: Dict[str, Any]) -> str:
    """The stream summary as a plain-text table."""
    def cell(r: Dict[str, Any]) -> str:
        if r["pct"] is None:
            return f"{r['count']:>5}/{r['of']:<5}      -"
        lo, hi = r["interval95"]
        return f"{r['count']:>5}/{r['of']:<5}{r['pct']:>7.1f} %  [{lo:.1f}, {hi:.1f}]"

    s = summary
    lines = [f"{s['images']} clips of {s['seconds']:g} s at {s['fps']:g} fps ({s['frames_per_clip']} frames, seed"
             f" {s['seed']}) through the run loop's tracker and alert policy; alerts matched at IoU >= {s['iou']}"]
    if s.get("models"):
        lines.append("models: " + ", ".join(f"{k} {v}" for k, v in s["models"].items()))
    for key, title in (("all", "all people"), ("min_size_faces", f"people with faces >= {s['min_size']:g} px tall")):
        g = s[key]
        lines += ["", title, f"  {'':<24}{'alerted':>11}{'%':>9}  95 % interval"]
        for name, what in [(lab, lab) for lab in LABELS] + [
                ("unmasked_alerted", "unmasked alerted"), ("masked_falsely_alerted", "masked falsely alerted")]:
            lines.append(f"  {what:<24}{cell(g[name])}")
    lines += ["", f"alerts: {s['alerts']}; on no annotated face: {s['alerts_on_no_face']}"
                  f" ({s['alerts_on_no_face_per_clip']} per clip); repeat alerts on one person: {s['repeat_alerts']}"]
    return "\n".join(lines)


def cmd_stream(args: argparse.Namespace, cfg: Any, boxes: Boxes, images: Dict[str, str]) -> int:
    """Score every annotated image as a clip (``--stream``); print the table, save ``--json``."""
    from agent.assemble import build_pipeline, load_models
    from agent.pipeline.publish.stdout import StdoutPublisher

    spec = ClipSpec(seconds=args.stream, fps=cfg.source.fps, seed=args.seed)
    cfg = dataclasses.replace(cfg, preview=dataclasses.replace(cfg.preview, enabled=False))  # no web server
    models = load_models(cfg)
    started = time.perf_counter()
    per_image: Dict[str, Dict[str, Any]] = {}
    for name, path in sorted(images.items()):
        # as `maskwatch run` wires it; alerts go to a buffer (they are read from the frame results)
        publisher = StdoutPublisher(stream=io.StringIO(), stats_enabled=False, crops=False)
        image, gts = read_annotated_photo(path, cfg, boxes[name], args.boxes_on)
        per_image[name] = run_clip(build_pipeline(cfg, publisher, models), image, gts, spec, name, args.iou)
    elapsed = time.perf_counter() - started
    summary = {**summarize_stream(per_image, spec, args.min_size, args.iou),
               "models": {m.model.name: m.model.version for m in models},
               "tracker": dataclasses.asdict(cfg.tracker), "alert_policy": dataclasses.asdict(cfg.alerts)}
    print(format_stream_table(summary))
    print(f"{spec.frames * len(per_image)} frames in {elapsed:.1f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "per_image": per_image}, indent=1) + "\n")
    return 0


__all__ = ["ClipSpec", "EXPOSURE_DRIFT", "JITTER_PX", "NOISE_SD", "clip_frames", "cmd_stream", "format_stream_table",
           "run_clip", "summarize_stream"]
