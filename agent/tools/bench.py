"""``maskwatch bench``: time each stage of the pipeline, per thread count, with the process's memory."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.assemble import build_pipeline, load_models
from agent.config import Config, load_config, repo_root
from agent.errors import EXIT_OK, UsageError
from agent.pipeline.loop import STAGES, anon_mb, cpu_summary, rss_mb
from agent.pipeline.publish.stdout import StdoutPublisher
from agent.pipeline.source import FrameSource, SourceConfig, open_source
from agent.types import Frame
from agent.variants import choose_model, variant_names


def parse_size(text: str) -> Tuple[int, int]:
    """``WxH`` (e.g. 640x480) -> (W, H)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or not (16 <= int(m.group(1)) <= 8192 and 16 <= int(m.group(2)) <= 8192):
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT, each 16-8192 (e.g. 640x480)")
    return int(m.group(1)), int(m.group(2))


def fit_frame(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A camera's view of ``image`` at ``size`` (width, height): the centre cut to that aspect,
    then resized (area-averaged when shrinking)."""
    w, h = size
    ih, iw = image.shape[:2]
    if iw * h > ih * w:
        cw = max(1, round(ih * w / h))
        image = image[:, (iw - cw) // 2 : (iw - cw) // 2 + cw]
    else:
        ch = max(1, round(iw * h / w))
        image = image[(ih - ch) // 2 : (ih - ch) // 2 + ch]
    shrink = image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def bench_frames(source: Optional[str], count: int, max_pixels: int, size: Optional[Tuple[int, int]] = None,
                 keep: Optional[Callable[[np.ndarray], bool]] = None) -> List[np.ndarray]:
    """Frames to time: from --source (images or video, at most ``count`` kept in memory, each fitted
    to ``size`` and kept only when ``keep(frame)`` says so) or a doorway scene with 3 faces."""
    if source:
        src: FrameSource = open_source(SourceConfig(uri=source, live=False, max_pixels=max_pixels))
        frames = []
        with src:
            for f in src:
                image = fit_frame(f.image, size) if size else f.image
                if keep is None or keep(image):
                    frames.append(image)
                if len(frames) >= count:
                    break
        if not frames:
            raise UsageError(f"--source {source}: no readable frame" + (" with the faces --max-faces asks for" if keep else ""))
        return frames
    # Drawn in a child process: loading the sample photo (scikit-image, PIL, imageio) would add
    # ~40 MB to this process and spoil the RSS figure.
    with tempfile.TemporaryDirectory(prefix="maskwatch-bench-") as tmp:
        png = os.path.join(tmp, "scene.png")
        code = f"import cv2; from agent.tools.demo import doorway_scene; cv2.imwrite({png!r}, doorway_scene())"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=str(repo_root()))
        frame = cv2.imread(png)
        if r.returncode != 0 or frame is None:
            raise UsageError(f"could not draw the bench scene ({r.stderr.strip().splitlines()[-1:]})\n  fix:"
                             " pip install scikit-image, or pass --source with your own images")
    return [fit_frame(frame, size) if size else frame]


def bench_precisions(cfg: Config) -> List[str]:
    """The precisions both configured models can run (a bench row each): the named sidecars' own
    and the variants both pin."""
    det = variant_names(cfg.detector.model, "detector")
    return [p for p in variant_names(cfg.classifier.model, "classifier") if p in det]


def bench_run(cfg: Config, frames: Sequence[np.ndarray], count: int,
              warmup: int) -> Tuple[Dict[str, Dict[str, float]], float, float, float, float]:
    """One bench row: the pipeline of ``cfg`` on ``frames`` cycled ``count`` times after ``warmup``;
    (stage timings, fps, RSS MB, anonymous MB, mean faces per frame)."""
    sink = open(os.devnull, "w")
    pipeline = build_pipeline(cfg, StdoutPublisher(stream=sink))
    for i in range(warmup):
        pipeline.process(Frame(frames[i % len(frames)], time.time(), i))
    pipeline.timings = type(pipeline.timings)()
    t0 = time.perf_counter()
    faces = []
    for i in range(count):
        r = pipeline.process(Frame(frames[i % len(frames)], t0 + i / 15.0, i))
        faces.append(len(r.faces))
    wall = time.perf_counter() - t0
    sink.close()
    return pipeline.timings.summary(), count / wall, rss_mb(), anon_mb(), float(np.mean(faces))


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    size = parse_size(args.size) if args.size else None
    if args.distinct < 1:
        raise UsageError("--distinct must be at least 1")
    if args.frames < 1:  # nothing timed: the table would print a negative frame rate
        raise UsageError(f"--frames {args.frames}: must be at least 1 (default 300)")
    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup}: must be 0 or more (default 20)")
    if any(not 1 <= t <= 64 for t in args.threads):
        raise UsageError(f"--threads {' '.join(map(str, args.threads))}: each must be between 1 and 64")
    keep: Optional[Callable[[np.ndarray], bool]] = None
    if args.max_faces is not None:
        if args.max_faces < 1:
            raise UsageError("--max-faces must be at least 1")
        if not args.source:
            raise UsageError("--max-faces needs --source (the default scene has 3 faces)")
        detector, classifier = load_models(cfg)

        def with_faces(image: np.ndarray) -> bool:
            # 1 to N faces found by detect + classify: face-free frames would flatter the median.
            return 1 <= len(classifier.classify(image, detector.detect(image))) <= args.max_faces

        keep = with_faces
    frames = bench_frames(args.source, args.distinct, cfg.source.max_pixels, size, keep)
    keep = detector = classifier = None  # these interpreters are not part of the RSS figure
    precisions = args.precision or bench_precisions(cfg)
    rows = []
    for precision in precisions:
        for threads in args.threads:
            run_cfg = dataclasses.replace(
                cfg, runtime=dataclasses.replace(cfg.runtime, num_threads=threads, precision=precision),
                preview=dataclasses.replace(cfg.preview, enabled=False))
            rows.append((precision, threads, *bench_run(run_cfg, frames, args.frames, args.warmup)))
    h, w = frames[0].shape[:2]
    held = sum(f.nbytes for f in frames) / 2**20
    print(f"maskwatch bench: {len(frames)} distinct frame(s) {w}x{h} ({held:.0f} MB held, inside RSS), "
          f"{args.frames} frames per run (+{args.warmup} warm-up)")
    cols = ["total", *STAGES]
    print(f"{'threads':>7} {'faces':>5} {'precision':>9} " + " ".join(f"{c + ' med/p95 ms':>22}" for c in cols)
          + f" {'fps':>7} {'RSS MB':>7} {'anon MB':>7}")
    for precision, threads, s, fps, rss, anon, nf in rows:
        cells = " ".join(f"{s[c]['median']:>10.2f} /{s[c]['p95']:>9.2f}" if c in s else f"{'-':>22}" for c in cols)
        print(f"{threads:>7} {nf:>5.1f} {precision:>9} {cells} {fps:>7.1f} {rss:>7.1f} {anon:>7.1f}")
    auto = {}
    for threads in args.threads:  # what `runtime.precision: auto` keeps here, and the invoke times it went by
        auto[threads] = {kind: choose_model(getattr(cfg, kind).model, kind, threads, "auto")
                         for kind in ("detector", "classifier")}
        print(f"runtime.precision auto, {threads} thread(s): "
              + "; ".join(f"{kind} {c.describe()}" for kind, c in auto[threads].items()))
    print(f"(RSS counts the library code pages mapped too, as many as the page cache hands over; anon = the"
          f" process's own allocations; load average"
          f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    cpu = cpu_summary()
    print(f"CPU: {cpu['name']}; int8-relevant features: {' '.join(cpu['features']) or 'none found'}")
    if args.json:
        print(json.dumps([{"precision": pr, "threads": t, "ms": s, "fps": round(f, 1), "rss_mb": round(r, 1),
                           "anon_mb": round(p, 1), "faces": n, "cpu": cpu,
                           "auto": {k: {"runs": c.model.precision, "invoke_ms": c.timings_ms}
                                    for k, c in auto[t].items()}}
                          for pr, t, s, f, r, p, n in rows]))
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="image, folder or video to time on (default: a generated 3-face scene)")
    p.add_argument("--size", metavar="WxH", help="fit every --source frame to this camera size (centre cut"
                   " to its aspect, then resized), e.g. 640x480")
    p.add_argument("--max-faces", type=int, metavar="N", help="time only --source frames where the pipeline finds"
                   " 1 to N faces")
    p.add_argument("--distinct", type=int, default=50, metavar="N",
                   help="most --source frames held in memory and cycled through (default 50)")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--precision", nargs="+", choices=["int8", "float16"], metavar="P",
                   help="model variants to time, int8 and/or float16 (default: each one both models have)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")


__all__ = ["add_arguments", "bench_frames", "bench_precisions", "bench_run", "fit_frame", "parse_size", "run"]
