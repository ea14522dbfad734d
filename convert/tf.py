"""TensorFlow set-up, once for all of convert/: imported lazily (the agent never loads it), quietly,
with oneDNN off (it changes float results run to run)."""

from __future__ import annotations

import os
from typing import Any


def settings() -> None:
    """The environment TensorFlow must find when it loads (set before anything may import it)."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tensorflow() -> Any:
    """Import TensorFlow quietly (oneDNN off: it changes float results run to run)."""
    settings()
    import tensorflow as tf  # noqa: PLC0415 - TF is only ever imported lazily, inside convert/

    return tf


def keras_module() -> Any:
    """Keras, after TensorFlow's set-up."""
    tensorflow()
    import keras  # noqa: PLC0415

    return keras


def tf_threads(n: int) -> None:
    """Bound TensorFlow's thread pools to ``n``; a no-op once TensorFlow has started running (it
    refuses a change then, e.g. when tests call several commands in one process)."""
    tf = tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        pass


__all__ = ["keras_module", "settings", "tensorflow", "tf_threads"]
