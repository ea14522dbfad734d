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
