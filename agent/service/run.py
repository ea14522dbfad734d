"""``maskwatch run``: the daemon. Runs until SIGTERM/SIGINT or the end of a file; SIGHUP reloads the
config (kept if invalid); tells systemd where it stands (sd_notify)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading
from typing import Any, Optional, Tuple

from agent import __version__, logs
from agent.assemble import build_pipeline, load_models, make_publisher
from agent.config import Config, ConfigError, load_config
from agent.errors import EXIT_OK, UsageError
from agent.model import ModelError
from agent.pipeline.loop import Pipeline, ReconfigureError
from agent.pipeline.publish.stdout import Publisher
from agent.pipeline.source import FrameSource, SourceError, open_source
from agent.service.sdnotify import Notifier

log = logging.getLogger("maskwatch")


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
        return ("mqtt", cfg.mqtt, cfg.runtime.camera, cfg.runtime.state_dir, tuple(cfg.alerts.labels))
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
                              or new.runtime.num_threads != old.runtime.num_threads
                              or new.runtime.precision != old.runtime.precision)
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


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT or the end of a file; SIGHUP reloads the config (kept if invalid)."""
    cfg = run_config(args)
    logs.set_level(cfg.runtime.log_level)
    if cfg.runtime.log_level != "debug":
        logs.quiet_opencv()
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="override source.uri")


__all__ = ["Reloader", "add_arguments", "publisher_key", "run", "run_config", "start"]
