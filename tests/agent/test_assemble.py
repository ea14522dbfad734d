"""agent.assemble: models with their thread count, the publisher's error message."""

from __future__ import annotations


import cv2



def test_num_threads_also_sets_opencv_threads(tmp_path, models_config):
    """`runtime.num_threads` bounds the image operations too: bench's 1-thread row is one thread."""
    from agent.assemble import load_models
    from agent.config import load_config

    before = cv2.getNumThreads()
    try:
        for n in (1, 2):
            cfg_file = tmp_path / f"t{n}.yaml"
            cfg_file.write_text(models_config.read_text().replace("runtime:\n", f"runtime:\n  num_threads: {n}\n", 1))
            load_models(load_config(str(cfg_file)))
            assert cv2.getNumThreads() == n
    finally:
        cv2.setNumThreads(before)


def test_publisher_error_message_without_a_key_path():
    from agent.assemble import publisher_error_message

    msg = publisher_error_message("c.yaml", "camera id 'a/b': must be non-empty, without '/', '+' or '#'")
    assert msg.startswith("c.yaml: `mqtt`: camera id 'a/b'") and "\n  fix: " in msg


def test_alert_labels_the_classifier_never_gives_are_refused_where_models_load_and_where_they_are_reused(tmp_path, models_config):
    """load_models checks `alerts.labels` against the classifier (so check-config and every tool say
    so); build_pipeline checks again only for models it is handed, loaded for another config."""
    import pytest

    from agent.assemble import build_pipeline, load_models
    from agent.config import load_config
    from agent.errors import UsageError
    from agent.pipeline.publish.stdout import StdoutPublisher

    good = load_config(str(models_config))
    models = load_models(good)
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(models_config.read_text() + "alerts:\n  labels: [no_mask, mask_under_nose]\n")
    bad = load_config(str(bad_file))
    for attempt in (lambda: load_models(bad), lambda: build_pipeline(bad, StdoutPublisher(), models=models)):
        with pytest.raises(UsageError, match=r"bad.yaml: `alerts.labels`: \['mask_under_nose'\]"):
            attempt()
    assert build_pipeline(good, StdoutPublisher(), models=models).classifier is models[1]
