"""Log lines: one per record, the journal's priority prefix, no tracebacks below debug, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal

import pytest

from agent.logs import OneLineFormatter, is_journal, priority, set_level, setup
from agent.pipeline.source import redact_uri


def record(level, msg, *args, exc_info=None, name="maskwatch.test"):
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_newlines_fold_into_one_line():
    fmt = OneLineFormatter()
    text = fmt.format(record(logging.ERROR, "reload failed: %s", "c.yaml:3: `tracker.window`: bad\n  fix: a number"))
    assert "\n" not in text
    assert text.endswith("reload failed: c.yaml:3: `tracker.window`: bad |   fix: a number")
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ERROR maskwatch.test: ", text)


@pytest.mark.parametrize("level,prefix", [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"),
                                          (logging.ERROR, "<3>"), (logging.CRITICAL, "<2>")])
def test_journal_lines_carry_the_priority_and_no_time(level, prefix):
    text = OneLineFormatter(journal=True).format(record(level, "camera %s is up", "x"))
    assert text == f"{prefix}{logging.getLevelName(level)} maskwatch.test: camera x is up"
    assert priority(level) == int(prefix[1:-1])


def test_tracebacks_only_at_debug_level():
    logger = logging.getLogger("maskwatch.test.tb")
    try:
        raise RuntimeError("spool gone\nsecond line")
    except RuntimeError:
        import sys

        exc = sys.exc_info()
    fmt = OneLineFormatter()
    logger.setLevel(logging.INFO)
    text = fmt.format(record(logging.ERROR, "sender failed", exc_info=exc, name=logger.name))
    assert "Traceback" not in text and "\n" not in text
    assert text.endswith("sender failed (RuntimeError: spool gone | second line)")
    logger.setLevel(logging.DEBUG)
    try:
        text = fmt.format(record(logging.ERROR, "sender failed", exc_info=exc, name=logger.name))
    finally:
        logger.setLevel(logging.NOTSET)
    assert "Traceback (most recent call last):" in text and "\n" not in text  # still one journal entry


def test_is_journal_matches_the_stream_device_and_inode(tmp_path):
    with open(tmp_path / "err.log", "w") as f:
        st = os.fstat(f.fileno())
        assert is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})  # redirected elsewhere
        assert not is_journal(f, {})
        assert not is_journal(f, {"JOURNAL_STREAM": "junk"})
    assert not is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_setup_replaces_its_handler_and_sets_the_level(monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        buf1, buf2 = io.StringIO(), io.StringIO()
        setup(buf1, "warning")
        setup(buf2, "warning")  # a second setup replaces the first handler: no doubled lines
        logging.getLogger("maskwatch.x").warning("one\ntwo")
        logging.getLogger("maskwatch.x").info("hidden")
        assert buf1.getvalue() == "" and buf2.getvalue().count("\n") == 1 and "one | two" in buf2.getvalue()
        assert os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "-8"
        monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL")
        set_level("debug")  # FFmpeg's own messages are kept for debugging
        assert root.level == logging.DEBUG and "OPENCV_FFMPEG_LOGLEVEL" not in os.environ
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)


@pytest.mark.parametrize("uri,safe", [
    ("rtsp://user:pass@cam/stream", "rtsp://user:***@cam/stream"),
    ("rtsp://admin:p@ss/w0rd@10.0.0.2:554/h264", "rtsp://admin:***@10.0.0.2:554/h264"),
    ("http://tok3n@cam/x.mjpg", "http://***@cam/x.mjpg"),
    ("http://cam/video.cgi?user=admin&pwd=secret&res=1", "http://cam/video.cgi?user=admin&pwd=***&res=1"),
    ("https://cam/a?access_token=abc#f", "https://cam/a?access_token=***#f"),
    ("rtsp://cam/x", "rtsp://cam/x"),
    ("0", "0"), ("/dev/video0", "/dev/video0"), ("picamera2:1", "picamera2:1"), ("/data/clip.mp4", "/data/clip.mp4"),
])
def test_redact_uri(uri, safe):
    assert redact_uri(uri) == safe


def test_under_systemd_no_secret_no_face_and_priority_prefixes(tmp_path, detector_json, classifier_json,
                                                               mjpeg_camera, agent_process):
    """`maskwatch run` as under systemd (stderr is the journal): a camera URL with a password never
    shows in logs, STATUS= or stdout; each stderr line starts with its priority; alerts on stdout
    carry no face crop although alerts.include_crop is on (one warning says so)."""
    camera = mjpeg_camera()
    camera.go_down()  # absent at start: its URL is logged (redacted) and goes into STATUS=
    secret = "s3cr3t-Pw"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "runtime:\n  stats_interval_s: 0\n  ready_timeout_s: 1\n"
        f"source:\n  uri: http://viewer:{secret}@127.0.0.1:{camera.port}/cam.mjpg?pwd={secret}\n"
        "  reopen_min_s: 0.2\n  reopen_max_s: 0.5\n"
        f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
        "alerts:\n  labels: [mask, incorrect_mask, no_mask]\n  min_score: 0\n  min_track_age: 1\n"
        "  include_crop: true\n")
    agent = agent_process(cfg, journal=True)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 1, 60), agent.stderr
    camera.come_back()
    assert agent.wait_for(lambda: any('"type":"alert"' in ln for ln in agent.stdout), 30), agent.stderr
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=20) == 0
    agent.close()
    everything = "\n".join(agent.stderr + agent.stdout + agent.notes)
    assert secret not in everything
    assert "viewer:***@127.0.0.1" in "\n".join(agent.stderr + agent.notes)
    # Our lines carry the priority; the TFLite runtime's own "INFO: Created TensorFlow Lite XNNPACK
    # delegate" comes from C++ straight to fd 2 (journald files it at the default priority).
    ours = [ln for ln in agent.stderr if not ln.startswith("INFO: Created TensorFlow Lite")]
    assert ours and all(re.match(r"^<[2-7]>(DEBUG|INFO|WARNING|ERROR|CRITICAL) maskwatch\S*: ", ln)
                        for ln in ours), agent.stderr
    assert any(ln.startswith("<4>WARNING maskwatch.source: camera ") for ln in agent.stderr), agent.stderr
    alerts = [json.loads(ln) for ln in agent.stdout if '"type":"alert"' in ln]
    assert alerts and not any("crop_jpeg" in a for a in alerts)
    assert sum("include_crop" in ln for ln in agent.stderr) == 1
