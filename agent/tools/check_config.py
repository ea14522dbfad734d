"""``maskwatch check-config``: validate a config file and load its models (``--explain``: every key)."""

from __future__ import annotations

import argparse

from agent.config import find_config, load_config
from agent.errors import EXIT_OK
from agent.pipeline.source import classify_uri, import_picamera2, redact_uri
from agent.tools.detect import Detector
from agent.variants import variant_names


def run(args: argparse.Namespace) -> int:
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
    for m, named in ((run.detector.model, cfg.detector.model), (run.classifier.model, cfg.classifier.model)):
        print(f"  {m.meta['kind']}: {m.name} {m.version} ({m.model_path}, runtime {m.runtime})")
        variants = ", ".join(f"{p} {name}" for p, name in variant_names(named).items())
        print(f"    runs {m.choice}\n    variants ({cfg.source_file or '<defaults>'}: runtime.precision"
              f" {cfg.runtime.precision}): {variants}")
    print(f"  alerts: {', '.join(cfg.alerts.labels)} -> {'MQTT ' + cfg.mqtt.host if cfg.mqtt.enabled else 'stdout'}")
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", metavar="FILE")
    p.add_argument("--explain", action="store_true", help="list every key with its default and meaning")


__all__ = ["add_arguments", "run"]
