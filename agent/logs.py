"""Log lines for a terminal or the systemd journal: one line per record, no secrets, no tracebacks.

* One line per record: newlines in a message (a config error's "fix:" line) fold into `` | ``, so
  the journal never splits one event into several entries.
* Under systemd (``$JOURNAL_STREAM`` names our stderr) each line starts with its sd-daemon(3)
  priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) and carries no time
  stamp: journald adds both.
* Tracebacks only at debug level; otherwise an exception shows as ``(ExcType: message)``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Mapping, Optional

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno: int) -> int:
    """The syslog priority (sd-daemon(3) prefix number) of a logging level."""
    for floor, prio in _PRIORITY:
        if levelno >= floor:
            return prio
    return 7


def is_journal(stream: IO[str], env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``stream`` is connected to the journal: ``$JOURNAL_STREAM`` ("device:inode", set by
    systemd) matches the stream's file (a stream redirected elsewhere is not the journal)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind it (a StringIO, closed)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class OneLineFormatter(logging.Formatter):
    """``time LEVEL name: message`` on a terminal; ``<prio>LEVEL name: message`` for the journal."""

    def __init__(self, journal: bool = False) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s" if journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        exc_info, stack_info = record.exc_info, record.stack_info
        if exc_info and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            # Tracebacks are for debugging; the operator gets the exception's one-line summary.
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            exc = exc_info[1]
            summary = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
        else:
            summary = ""
        try:
            text = super().format(record) + summary
        finally:
            record.exc_info, record.stack_info = exc_info, stack_info
        text = " | ".join(line for line in text.splitlines() if line.strip())
        return f"<{priority(record.levelno)}>{text}" if self.journal else text


def setup(stream: Optional[IO[str]] = None, level: Optional[str] = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) through :class:`OneLineFormatter`; replaces
    handlers set up earlier (so a second call, e.g. in tests, does not double lines). Without
    ``level`` the root logs at info until :func:`set_level` applies the config's."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(journal=is_journal(stream)))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_maskwatch", False):
            root.removeHandler(old)
    handler._maskwatch = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if level is None:
        root.setLevel(logging.INFO)
    else:
        set_level(level)
    return handler


def set_level(level: str) -> None:
    """Apply ``runtime.log_level`` (again on SIGHUP). Below debug, FFmpeg's own messages (one per
    failed reopen of a camera, printed straight to stderr) are silenced before the first capture."""
    root = logging.getLogger()
    root.setLevel(LEVELS.get(level, logging.INFO))
    if level != "debug":
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def quiet_opencv() -> None:
    """Keep OpenCV's own warnings (one at every reopen attempt of a missing camera) off stderr:
    the agent logs the failure once. opencv 5 has ``cv2.utils.logging``; opencv 4 (what Raspberry
    Pi OS bookworm's numpy 1 allows) only ``cv2.setLogLevel``, same levels (2 = error)."""
    import cv2  # late: logging set-up alone needs no OpenCV

    levels = getattr(cv2.utils, "logging", None)
    if levels is not None:
        levels.setLogLevel(levels.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)



__all__ = ["LEVELS", "OneLineFormatter", "is_journal", "priority", "quiet_opencv", "set_level", "setup"]
