"""``maskwatch`` command line: run, detect, evaluate, collect, label, explain, check-config, bench, demo,
install-service.

Exit codes: 0 success; 1 some input could not be read (``detect``); 2 usage, config or model errors
(one message on stderr naming the file, key and fix -- never a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import cv2
import numpy as np

from agent import __version__
from agent.pipeline.alert import AlertPolicy
from agent.pipeline.classify import MaskClassifier
from agent.config import Config, ConfigError, load, parse
from agent.pipeline.detect import FaceDetector, clip_box
from agent.draw import draw_overlay
from agent.model import ModelError
from agent import logs
from agent.service import install as service
from agent.tools import evaluate
from agent.pipeline.loop import STAGES, Pipeline, ReconfigureError, anon_mb, cpu_summary, rss_mb, set_image_threads
from agent.service.preview import PreviewError, PreviewServer
from agent.service.sdnotify import Notifier
from agent.pipeline.publish.stdout import Publisher, StdoutPublisher
from agent.pipeline.source import (
    VIDEO_EXTS, FrameSource, SourceConfig, SourceCounters, SourceError, VideoFileSource, classify_uri,
    import_picamera2, list_images, normalize_image, open_source, read_image, redact_uri,
)
from agent.pipeline.track import Tracker
from agent.types import Face, Frame

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
# Site adaptation (collect faces, label them, explain a decision): each command lives in its own
# module with add_arguments(parser) and cmd_<name>(args) -> int, imported when the parser is built.
SITE_COMMANDS = (
    ("collect", "agent.tools.collect", "save aligned face crops from a source for labelling (never on in the service)"),
    ("label", "agent.tools.label", "label collected crops in a local web page (keys 1-4, u: undo)"),
    ("explain", "agent.tools.explain", "per face, an occlusion map of what changes the label most (PNG)"),
)

log = logging.getLogger("maskwatch")


class UsageError(Exception):
    """A command-line mistake; exits 2 with the message."""


# --- config and wiring -----------------------------------------------------------------------


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def find_config(explicit: Optional[str]) -> Optional[Path]:
    """The config to use: --config, $MASKWATCH_CONFIG, ./config.yaml, the checkout's, /etc/maskwatch."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MASKWATCH_CONFIG")
    if env:
        return Path(env)
    for p in (Path.cwd() / "config.yaml", repo_root() / "config.yaml", Path("/etc/maskwatch/config.yaml")):
        if p.is_file():
            return p
    return None


def load_config(explicit: Optional[str]) -> Config:
    path = find_config(explicit)
    if path is None:
        # No file anywhere: defaults, with model paths relative to the checkout.
        return parse("{}", "<defaults>", repo_root())
    return load(path)


def load_models(cfg: Config) -> Tuple[FaceDetector, MaskClassifier]:
    """Load and check both models (the step most likely to fail on a new box: do it first)."""
    threads = cfg.runtime.num_threads
    set_image_threads(threads)
    return FaceDetector(cfg.detector, threads), MaskClassifier(cfg.classifier, threads)


def build_pipeline(cfg: Config, publisher: Publisher,
                   models: Optional[Tuple[FaceDetector, MaskClassifier]] = None) -> Pipeline:
    """Wire the stages a config describes around loaded models."""
    detector, classifier = models or load_models(cfg)
    unknown = [label for label in cfg.alerts.labels if label not in classifier.face_labels]
    if unknown:
        raise UsageError(f"{cfg.source_file}: `alerts.labels`: {unknown} not among the classifier's labels"
                         f" {classifier.face_labels}\n  fix: use those names")
    versions = {detector.model.name: detector.model.version, classifier.model.name: classifier.model.version}
    preview = PreviewServer(cfg.preview, cfg.runtime.camera) if cfg.preview.enabled else None
    return Pipeline(detector, classifier, Tracker(cfg.tracker), AlertPolicy(cfg.alerts, cfg.runtime.camera, versions),
                    publisher, preview=preview)


def publisher_error_message(file: Optional[str], problem: str) -> str:
    """One message naming the key once: ``file: `mqtt.tls.ca_file`: cannot load ...`` plus the fix.

    The publisher's errors start with their own key path ("mqtt.tls.ca_file: ..."); ones that do
    not (a camera name unfit for topics) are put under ``mqtt``.
    """
    m = re.match(r"(mqtt(?:\.[\w/]+)*): (.*)", problem, re.S)
    key, text = (m.group(1), m.group(2)) if m else ("mqtt", problem)
    text, _, fix = text.partition("; ")
    fix = fix or f"correct `{key}` in the mqtt section"
    return f"{file or '<config>'}: `{key}`: {text}\n  fix: {fix}"


def make_publisher(cfg: Config) -> Publisher:
    """MQTT when ``mqtt.enabled``, else JSON lines on stdout."""
    if cfg.mqtt.enabled:
        from agent.pipeline.publish.mqtt import MqttPublisher

        try:
            return MqttPublisher(cfg.mqtt, cfg.runtime.camera, cfg.runtime.state_dir)
        except ValueError as exc:  # credentials that cannot be read, a camera name unfit for topics
            raise UsageError(publisher_error_message(cfg.source_file, str(exc))) from None
    # Under systemd stdout goes to the journal, which must hold no face images: crops stay out
    # (conservatively whenever $JOURNAL_STREAM is set; MQTT carries them).
    crops = not os.environ.get("JOURNAL_STREAM")
    if cfg.alerts.include_crop and not crops:
        log.warning("alerts.include_crop: face crops are left out of alerts on stdout, which goes to the journal;"
                    " enable mqtt to receive them")
    return StdoutPublisher(stats_enabled=cfg.runtime.stats_interval_s > 0, crops=crops)


# --- run -------------------------------------------------------------------------------------


def run_config(args: argparse.Namespace) -> Config:
    """The config ``run`` uses: the file, then ``--source`` and ``$MASKWATCH_STATE_DIR`` (systemd's)."""
    cfg = load_config(args.config)
    if args.source:
        cfg.source = dataclasses.replace(cfg.source, uri=args.source)
    state_dir = os.environ.get("MASKWATCH_STATE_DIR")
    if state_dir:
        cfg.runtime = dataclasses.replace(cfg.runtime, state_dir=state_dir)
    return cfg


def start(cfg: Config) -> Tuple[Pipeline, FrameSource]:
    """Models first (the likeliest failure), then the camera, then the publisher."""
    models = load_models(cfg)
    source = open_source(cfg.source)
    try:
        return build_pipeline(cfg, make_publisher(cfg), models), source
    except BaseException:
        source.close()
        raise


def publisher_key(cfg: Config) -> Tuple[Any, ...]:
    """What the publisher is built from: a reload rebuilds it only when this changes."""
    if cfg.mqtt.enabled:
        return ("mqtt", cfg.mqtt, cfg.runtime.camera, cfg.runtime.state_dir)
    return ("stdout", cfg.runtime.stats_interval_s > 0)


class Reloader:
    """SIGHUP: re-read the config and apply it to the running pipeline, in the loop's thread.

    The camera is reopened only when the ``source`` section changed, models reloaded only when
    their paths (or thread count) changed, the publisher rebuilt only when :func:`publisher_key`
    changed. Everything new is built before anything is swapped: an invalid config, a model or
    source that cannot be opened leaves the running config in place with one error line.
    """

    def __init__(self, args: argparse.Namespace, cfg: Config, pipeline: Pipeline, notifier: Notifier) -> None:
        self.args = args
        self.cfg = cfg
        self.pipeline = pipeline
        self.notifier = notifier

    def __call__(self, source: FrameSource) -> FrameSource:
        self.notifier.reloading()
        new_source: Optional[FrameSource] = None
        publisher: Optional[Publisher] = None
        try:
            new = run_config(self.args)
            old = self.cfg
            models_changed = (new.detector.model != old.detector.model or new.classifier.model != old.classifier.model
                              or new.runtime.num_threads != old.runtime.num_threads)
            detector, classifier = load_models(new) if models_changed else (None, None)
            publisher = make_publisher(new) if publisher_key(new) != publisher_key(old) else None
            if new.source != old.source:
                new_source = open_source(new.source)
            self.pipeline.reconfigure(new, detector, classifier, publisher)
        except (ConfigError, ModelError, SourceError, UsageError, ReconfigureError) as exc:
            if new_source is not None:
                new_source.close()
            if publisher is not None:
                publisher.close(timeout=0.0)  # never started: just release its spool
            log.error("reload failed, keeping the running config: %s", exc)
            self.notifier.ready(f"processing {source.name} (reload failed: config kept)")
            return source
        if new.preview != old.preview:
            log.warning("reload: `preview` changes take effect after a restart")
        logs.set_level(new.runtime.log_level)
        self.cfg = new
        changed = [name for name, hit in (("source reopened", new_source is not None), ("models reloaded",
                   models_changed), ("publisher rebuilt", publisher is not None)) if hit]
        if new_source is not None:
            source.close()
            source = new_source
        log.info("reloaded %s: camera %r, source %s (%s)", new.source_file, new.runtime.camera, source.name,
                 ", ".join(changed) or "settings only")
        self.notifier.ready(f"processing {source.name}")
        return source


def quiet_opencv() -> None:
    """Keep OpenCV's own warnings (one at every reopen attempt of a missing camera) off stderr:
    the agent logs the failure once. opencv 5 has ``cv2.utils.logging``; opencv 4 (what Raspberry
    Pi OS bookworm's numpy 1 allows) only ``cv2.setLogLevel``, same levels (2 = error)."""
    levels = getattr(cv2.utils, "logging", None)
    if levels is not None:
        levels.setLogLevel(levels.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)


def cmd_run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT or the end of a file; SIGHUP reloads the config (kept if invalid)."""
    cfg = run_config(args)
    logs.set_level(cfg.runtime.log_level)
    if cfg.runtime.log_level != "debug":
        quiet_opencv()
    pipeline, source = start(cfg)
    stop, reload = threading.Event(), threading.Event()

    notifier = Notifier()

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            reload.set()
        elif not stop.is_set():
            notifier.stopping()  # at once: the shutdown (delivering in-flight alerts) takes a moment
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    log.info("maskwatch %s: camera %r, source %s, models %s", __version__, cfg.runtime.camera, source.name,
             pipeline.policy.models)
    reloader = Reloader(args, cfg, pipeline, notifier)
    try:
        final = pipeline.run(source, stop, cfg.runtime.stats_interval_s, notifier, reload=reload, reloader=reloader,
                             ready_anyway_s=cfg.runtime.ready_timeout_s)
    finally:
        if not stop.is_set():  # the source ended (a file) or the loop failed
            notifier.stopping()
        (pipeline.source or source).close()
    log.info("stopped after %d frames, %d alerts", final["frames"], final["alerts"])
    return EXIT_OK


# --- detect ----------------------------------------------------------------------------------


def _inputs(paths: Sequence[str]) -> Iterator[Tuple[str, str]]:
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


def cmd_detect(args: argparse.Namespace) -> int:
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

    for path, kind in _inputs(args.paths):
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


# --- check-config ----------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.explain:
        from agent.config import describe

        print("\n".join(describe()))
        return EXIT_OK
    path = find_config(args.file or args.config)
    cfg = load_config(str(path) if path else None)
    run = Detector(cfg)  # loads and checks both models against their sidecars
    if classify_uri(cfg.source.uri)[0] == "picamera2":
        import_picamera2()  # cameras are not opened here, but the module must load (a venv's numpy can break it)
    where = path or "<defaults>"
    print(f"{where}: ok")
    print(f"  camera {cfg.runtime.camera!r}, source {redact_uri(cfg.source.uri)!r}, {cfg.runtime.num_threads} thread(s)")
    for m in (run.detector.model, run.classifier.model):
        print(f"  {m.meta['kind']}: {m.name} {m.version} ({m.model_path}, runtime {m.runtime})")
    print(f"  alerts: {', '.join(cfg.alerts.labels)} -> {'MQTT ' + cfg.mqtt.host if cfg.mqtt.enabled else 'stdout'}")
    return EXIT_OK


# --- bench -----------------------------------------------------------------------------------


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


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    size = parse_size(args.size) if args.size else None
    if args.distinct < 1:
        raise UsageError("--distinct must be at least 1")
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
    rows = []
    for threads in args.threads:
        run_cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, num_threads=threads),
                                      preview=dataclasses.replace(cfg.preview, enabled=False))
        sink = open(os.devnull, "w")
        pipeline = build_pipeline(run_cfg, StdoutPublisher(stream=sink))
        for i in range(args.warmup):
            pipeline.process(Frame(frames[i % len(frames)], time.time(), i))
        pipeline.timings = type(pipeline.timings)()
        t0 = time.perf_counter()
        faces = []
        for i in range(args.frames):
            r = pipeline.process(Frame(frames[i % len(frames)], t0 + i / 15.0, i))
            faces.append(len(r.faces))
        wall = time.perf_counter() - t0
        sink.close()
        s = pipeline.timings.summary()
        rows.append((threads, s, args.frames / wall, rss_mb(), anon_mb(), float(np.mean(faces))))
        del pipeline  # free the interpreters before the next setting
    h, w = frames[0].shape[:2]
    held = sum(f.nbytes for f in frames) / 2**20
    print(f"maskwatch bench: {len(frames)} distinct frame(s) {w}x{h} ({held:.0f} MB held, inside RSS), "
          f"{args.frames} frames per run (+{args.warmup} warm-up)")
    cols = ["total", *STAGES]
    print(f"{'threads':>7} {'faces':>5} " + " ".join(f"{c + ' med/p95 ms':>22}" for c in cols)
          + f" {'fps':>7} {'RSS MB':>7} {'anon MB':>7}")
    for threads, s, fps, rss, anon, nf in rows:
        cells = " ".join(f"{s[c]['median']:>10.2f} /{s[c]['p95']:>9.2f}" if c in s else f"{'-':>22}" for c in cols)
        print(f"{threads:>7} {nf:>5.1f} {cells} {fps:>7.1f} {rss:>7.1f} {anon:>7.1f}")
    print(f"(RSS counts the library code pages mapped too, as many as the page cache hands over; anon = the"
          f" process's own allocations; load average"
          f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    cpu = cpu_summary()
    print(f"CPU: {cpu['name']}; int8-relevant features: {' '.join(cpu['features']) or 'none found'}")
    if args.json:
        print(json.dumps([{"threads": t, "ms": s, "fps": round(f, 1), "rss_mb": round(r, 1), "anon_mb": round(p, 1),
                           "faces": n, "cpu": cpu} for t, s, f, r, p, n in rows]))
    return EXIT_OK


# --- demo ------------------------------------------------------------------------------------


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C/C++ code writes to fd 2 meanwhile to /dev/null: the TFLite runtime's "INFO: Created
    TensorFlow Lite XNNPACK delegate" line, which no Python setting reaches (``demo --quiet``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def wait_for_viewer(preview: PreviewServer, stop: threading.Event, timeout_s: float) -> None:
    """Until someone watches the preview (so they see the clip from its start), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while preview.clients == 0 and not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.1)


def cmd_demo(args: argparse.Namespace) -> int:
    """The agent on a generated doorway clip: alerts as JSON lines on stdout; the annotated clip, the
    contact sheet and a summary table (stderr) show its work; ``--preview`` plays it live."""
    from agent.tools.demo import DEFAULT_PEOPLE, RECORD_NAME, DemoError, Recorder, make_clip, summary_table

    cfg = load_config(args.config)
    cfg.mqtt = dataclasses.replace(cfg.mqtt, enabled=False)
    cfg.runtime = dataclasses.replace(cfg.runtime, stats_interval_s=0.0)
    say: Callable[[str], None] = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    if args.quiet:
        logs.set_level("warning")
        with native_stderr_silenced():
            models = load_models(cfg)
    else:
        models = load_models(cfg)
    # The pipeline's own preview hook would draw faces without tracks or banners: the recorder
    # hands the preview its drawn frames instead.
    preview = PreviewServer(dataclasses.replace(cfg.preview, enabled=True), cfg.runtime.camera) if args.preview else None
    cfg.preview = dataclasses.replace(cfg.preview, enabled=False)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if preview is not None:
            preview.start()  # first: a busy port fails before anything is written
        with tempfile.TemporaryDirectory(prefix="maskwatch-demo-") as tmp:
            clip = make_clip(Path(tmp) / "doorway.avi", DEFAULT_PEOPLE)
            pipeline = build_pipeline(cfg, StdoutPublisher(), models)
            with Recorder(Path(args.out), clip.fps, clip.size, cfg.detector.roi, preview) as recorder:
                unmasked = sum(not p.masked for p in clip.people)
                say(f"demo: {len(clip.people)} people walk past a doorway ({unmasked} without a mask), "
                    f"{clip.frames} frames; alerts follow as JSON lines")
                if preview is not None:
                    say(f"demo: watch it at {preview.url} (it starts when a viewer connects, or in"
                        f" {args.wait:g} s; Ctrl-C stops)")
                    wait_for_viewer(preview, stop, args.wait)
                source = VideoFileSource(str(clip.path), cfg.source.max_pixels)
                try:
                    final = pipeline.run(source, stop, stats_interval_s=0.0, on_frame=recorder)
                finally:
                    source.close()
            record = recorder.save(final)
    except DemoError as exc:
        raise UsageError(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if preview is not None:
            preview.stop()
    wrote = [record["clip"], record["contact_sheet"] or "no contact sheet (no alert)", RECORD_NAME]
    say(("demo: stopped early\n" if stop.is_set() else "") + "demo summary:\n"
        + summary_table(record, models[1].face_labels) + f"\n  in {Path(args.out)}/: {', '.join(wrote)}")
    return EXIT_OK


# --- main ------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskwatch", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"maskwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", metavar="FILE",
                        help="config file (default: $MASKWATCH_CONFIG, ./config.yaml, /etc/maskwatch/config.yaml)")
        return sp

    r = with_config(sub.add_parser("run", help="run the agent on the configured camera"))
    r.add_argument("--source", help="override source.uri")
    r.set_defaults(func=cmd_run)
    d = with_config(sub.add_parser("detect", help="find and classify faces in images, folders or videos"))
    d.add_argument("--json", action="store_true", help="one JSON object per image (per frame for videos)")
    d.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images into DIR")
    d.add_argument("paths", nargs="+", metavar="PATH")
    d.set_defaults(func=cmd_detect)
    c = with_config(sub.add_parser("check-config", help="validate a config file and load its models"))
    c.add_argument("file", nargs="?", metavar="FILE")
    c.add_argument("--explain", action="store_true", help="list every key with its default and meaning")
    c.set_defaults(func=cmd_check_config)
    b = with_config(sub.add_parser("bench", help="time each stage on 640x480 frames"))
    b.add_argument("--source", help="image, folder or video to time on (default: a generated 3-face scene)")
    b.add_argument("--size", metavar="WxH", help="fit every --source frame to this camera size (centre cut"
                   " to its aspect, then resized), e.g. 640x480")
    b.add_argument("--max-faces", type=int, metavar="N", help="time only --source frames where the pipeline finds"
                   " 1 to N faces")
    b.add_argument("--distinct", type=int, default=50, metavar="N",
                   help="most --source frames held in memory and cycled through (default 50)")
    b.add_argument("--frames", type=int, default=300)
    b.add_argument("--warmup", type=int, default=20)
    b.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    b.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    b.set_defaults(func=cmd_bench)
    e = with_config(sub.add_parser("evaluate", help="score detect + classify against annotated face boxes"))
    evaluate.add_arguments(e)
    e.set_defaults(func=evaluate.cmd_evaluate)
    for name, module, text in SITE_COMMANDS:
        mod = importlib.import_module(module)
        sp = with_config(sub.add_parser(name, help=text))
        mod.add_arguments(sp)
        sp.set_defaults(func=getattr(mod, "cmd_" + name))
    m = with_config(sub.add_parser("demo", help="run the agent on a generated doorway clip and show its work"))
    m.add_argument("--out", default="demo-out", metavar="DIR",
                   help="folder for annotated.mp4, contact-sheet.png and annotated.json (default: demo-out)")
    m.add_argument("--preview", action="store_true",
                   help="also play the annotated clip live on the local preview (preview.host/port of the config)")
    m.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="with --preview: seconds to wait for a viewer before the clip starts (default 30)")
    m.add_argument("--quiet", "-q", action="store_true", help="print only the JSON alert lines")
    m.set_defaults(func=cmd_demo)
    i = sub.add_parser("install-service", help="install the systemd unit, a default config and the models")
    service.add_arguments(i)
    i.set_defaults(func=service.cmd_install_service)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    logs.setup(sys.stderr)
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ModelError, SourceError, UsageError, PreviewError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
