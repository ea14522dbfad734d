"""Config -> models, Pipeline, Publisher: the wiring ``maskwatch run`` and every tool share."""

from __future__ import annotations

import logging
import os
import re
from typing import Optional, Tuple

from agent.config import Config
from agent.errors import UsageError
from agent.pipeline.alert import AlertPolicy
from agent.pipeline.classify import MaskClassifier
from agent.pipeline.detect import FaceDetector
from agent.pipeline.loop import Pipeline, set_image_threads
from agent.pipeline.publish.stdout import Publisher, StdoutPublisher
from agent.pipeline.track import Tracker
from agent.service.preview import PreviewServer
from agent.variants import choose_model

log = logging.getLogger("maskwatch")


def load_models(cfg: Config) -> Tuple[FaceDetector, MaskClassifier]:
    """Load and check both models (the step most likely to fail on a new box: do it first)."""
    threads = cfg.runtime.num_threads
    set_image_threads(threads)
    # runtime.precision picks each model's variant (timing them when auto); the choice is logged.
    detector = choose_model(cfg.detector.model, "detector", threads, cfg.runtime.precision).model
    classifier = choose_model(cfg.classifier.model, "classifier", threads, cfg.runtime.precision).model
    models = FaceDetector(cfg.detector, threads, model=detector), MaskClassifier(cfg.classifier, threads, model=classifier)
    check_alert_labels(cfg, models[1])  # here too, so check-config and every tool find it, not only `run`
    return models


def check_alert_labels(cfg: Config, classifier: MaskClassifier) -> None:
    """`alerts.labels` must name the classifier's face labels: a name it never gives would never alert."""
    unknown = [label for label in cfg.alerts.labels if label not in classifier.face_labels]
    if unknown:
        raise UsageError(f"{cfg.source_file}: `alerts.labels`: {unknown} not among the classifier's labels"
                         f" {classifier.face_labels}\n  fix: use those names")


def build_pipeline(cfg: Config, publisher: Publisher,
                   models: Optional[Tuple[FaceDetector, MaskClassifier]] = None) -> Pipeline:
    """Wire the stages a config describes around loaded models."""
    if models is None:
        detector, classifier = load_models(cfg)  # which checks the alert labels
    else:
        detector, classifier = models
        check_alert_labels(cfg, classifier)  # models loaded before, perhaps for another config (a reload)
    versions = {detector.model.name: detector.model.version, classifier.model.name: classifier.model.version}
    preview = PreviewServer(cfg.preview, cfg.runtime.camera) if cfg.preview.enabled else None
    return Pipeline(detector, classifier, Tracker(cfg.tracker, thresholds=cfg.classifier.thresholds), AlertPolicy(cfg.alerts, cfg.runtime.camera, versions),
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
            return MqttPublisher(cfg.mqtt, cfg.runtime.camera, cfg.runtime.state_dir, alert_labels=cfg.alerts.labels)
        except ValueError as exc:  # credentials that cannot be read, a camera name unfit for topics
            raise UsageError(publisher_error_message(cfg.source_file, str(exc))) from None
    # Under systemd stdout goes to the journal, which must hold no face images: crops stay out
    # (conservatively whenever $JOURNAL_STREAM is set; MQTT carries them).
    crops = not os.environ.get("JOURNAL_STREAM")
    if cfg.alerts.include_crop and not crops:
        log.warning("alerts.include_crop: face crops are left out of alerts on stdout, which goes to the journal;"
                    " enable mqtt to receive them")
    return StdoutPublisher(stats_enabled=cfg.runtime.stats_interval_s > 0, crops=crops)


__all__ = ["build_pipeline", "load_models", "make_publisher", "publisher_error_message"]
