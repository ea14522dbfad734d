"""Frame sources: files, folders, video, live grabber with reopen; odd frames never raise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.pipeline.source import (
    ImageSource, LiveSource, OpenCVCapture, SourceConfig, SourceCounters, SourceError, VideoFileSource,
    classify_uri, normalize_image, open_source, read_image,
)
from tests.exif import STORE, oriented_jpeg


def norm(img, max_pixels=10_000_000):
    c = SourceCounters()
    return normalize_image(img, c, max_pixels), c


@pytest.mark.parametrize(
    "img",
    [
        np.full((48, 64), 77, np.uint8),  # grayscale
        np.full((48, 64, 1), 77, np.uint8),  # grayscale with a channel axis
        np.dstack([np.full((48, 64, 3), 77, np.uint8), np.zeros((48, 64), np.uint8)]),  # BGRA
        np.full((48, 64, 3), 77 * 257, np.uint16),  # 16-bit
        np.full((48, 64, 3), 77 / 255, np.float32),  # float 0..1
    ],
    ids=["gray", "gray1", "bgra", "16bit", "float"],
)
def test_odd_frames_become_bgr_uint8(img):
    out, c = norm(img)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and c.skipped == {}
    assert abs(int(out[0, 0, 0]) - 77) <= 1


@pytest.mark.parametrize(
    "img, reason",
    [
        (None, "empty"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((1, 500, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 2), np.uint8), "bad_shape"),
        (np.zeros((10, 10, 3, 2), np.uint8), "bad_shape"),
        (np.zeros((4000, 3000, 3), np.uint8), "too_large"),
        (np.full((10, 10, 3), np.nan, np.float32), "bad_values"),
        (np.zeros((10, 10, 3), np.int32), "bad_dtype"),
    ],
)
def test_unusable_frames_are_skipped_and_counted(img, reason):
    out, c = norm(img)
    assert out is None and c.skipped == {reason: 1}


def test_classify_uri():
    assert classify_uri("picamera2") == ("picamera2", 0)
    assert classify_uri("picamera2:1") == ("picamera2", 1)
    assert classify_uri("0") == ("v4l2", 0)
    assert classify_uri("/dev/video2") == ("v4l2", "/dev/video2")
    assert classify_uri("rtsp://cam:554/s") == ("stream", "rtsp://cam:554/s")
    assert classify_uri("http://cam/mjpg") == ("stream", "http://cam/mjpg")
    assert classify_uri("a/b.mp4") == ("video", "a/b.mp4")
    assert classify_uri("a/*.jpg") == ("images", "a/*.jpg")
    assert classify_uri("a/b.PNG") == ("images", "a/b.PNG")


@pytest.fixture
def image_folder(tmp_path, astronaut):
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a_color.jpg"), astronaut)
    cv2.imwrite(str(d / "b_gray.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "c_rgba.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(d / "d_16bit.png"), astronaut.astype(np.uint16) * 257)
    (d / "e_junk.jpg").write_bytes(b"this is not a jpeg")
    (d / "f_empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_image_folder_normalizes_and_skips_junk(image_folder):
    src = open_source(SourceConfig(uri=str(image_folder)))
    assert isinstance(src, ImageSource)
    frames = list(src)
    assert [os.path.basename(f.source) for f in frames] == ["a_color.jpg", "b_gray.png", "c_rgba.png", "d_16bit.png"]
    for f in frames:
        assert f.image.shape == (512, 512, 3) and f.image.dtype == np.uint8
    assert src.counters.skipped == {"unreadable": 2} and src.counters.frames == 4
    assert src.finished


@pytest.mark.parametrize("pattern", ["e_junk.jpg", "[ef]_*"])
def test_a_file_source_that_never_gives_a_frame_is_an_error_naming_the_file(image_folder, pattern):
    """`--source fake.jpg` (text named .jpg) or a glob of such files: no quiet "0 frames"."""
    src = open_source(SourceConfig(uri=str(image_folder / pattern)))
    with pytest.raises(SourceError) as e:
        list(src)
    msg = str(e.value)
    assert str(image_folder / "e_junk.jpg") in msg and "no frame could be read" in msg and "\n  fix: " in msg
    assert "unreadable" in msg
    assert src.finished and src.read() is None  # said once; the source has ended


def test_a_video_file_without_one_readable_frame_is_an_error(tmp_path, clip):
    """A video cut after its header opens but has no frame to give."""
    cut = tmp_path / "cut.avi"
    cut.write_bytes(Path(clip.path).read_bytes()[:6000])
    src = open_source(SourceConfig(uri=str(cut)))
    with pytest.raises(SourceError, match=r"cut\.avi: no frame could be read.*\n  fix: "):
        list(src)


def test_run_on_a_text_file_named_jpg_exits_nonzero_naming_it(tmp_path, models_config, capsys):
    from agent.cli import main

    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    assert main(["run", "--config", str(models_config), "--source", str(fake)]) == 2
    err = capsys.readouterr().err
    assert f"{fake}: no frame could be read" in err and "fix:" in err and "Traceback" not in err


def test_glob_and_single_image(image_folder):
    assert len(list(open_source(SourceConfig(uri=str(image_folder / "*.png"))))) == 3
    assert len(list(open_source(SourceConfig(uri=str(image_folder / "a_color.jpg"))))) == 1


def test_missing_inputs_are_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no image found"):
        open_source(SourceConfig(uri=str(tmp_path / "*.jpg")))
    with pytest.raises(SourceError, match="no such file"):
        open_source(SourceConfig(uri=str(tmp_path / "missing.mp4")))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open as a video"):
        open_source(SourceConfig(uri=str(tmp_path / "junk.mp4")))


def test_picamera2_off_a_pi_is_a_clear_error():
    # picamera2 exists only on Raspberry Pi OS
    try:
        import picamera2  # noqa: F401  (only asking whether it exists)
    except ImportError:
        with pytest.raises(SourceError, match="picamera2.*\n.*fix:"):
            open_source(SourceConfig(uri="picamera2"))
    else:
        pytest.skip("picamera2 is installed here")


def test_video_file_every_frame_then_ends(clip):
    src = open_source(SourceConfig(uri=str(clip.path)))
    assert isinstance(src, VideoFileSource) and not src.live
    frames = list(src)
    assert len(frames) == clip.frames and src.finished
    assert [f.index for f in frames[:3]] == [0, 1, 2]
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(1 / clip.fps)
    assert src.read() is None  # stays ended


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_live_source_keeps_newest_and_survives_a_vanished_camera(clip, tmp_path):
    """A file opened as a live camera: frames flow, slow reading drops old ones, the device vanishing
    turns the camera down, its return is picked up by the reopen loop."""
    cam = tmp_path / "cam.avi"
    shutil.copy(clip.path, cam)
    src = open_source(SourceConfig(uri=str(cam), live=True, reopen_min_s=0.05, reopen_max_s=0.2))
    assert isinstance(src, LiveSource)
    try:
        first = src.read(timeout=5)
        assert first is not None and first.image.shape == (480, 640, 3)
        assert src.up
        time.sleep(0.3)  # the grabber runs ahead: older frames are replaced, not queued
        assert src.read(timeout=1) is not None
        assert src.counters.dropped > 0
        cam.unlink()  # the camera vanishes (the file ends, reopening fails)
        assert wait_for(lambda: not src.up), "camera should be reported down"
        assert wait_for(lambda: src.counters.failures > 3)
        while src.read(timeout=0.01) is not None:  # drain what was grabbed before it vanished
            pass
        assert src.read(timeout=0.3) is None and not src.finished
        reopens = src.counters.reopens
        shutil.copy(clip.path, cam)  # it comes back
        assert wait_for(lambda: src.counters.reopens > reopens and src.up)
        assert src.read(timeout=5) is not None
    finally:
        src.close()
    assert src.finished


def test_live_source_never_opened_counts_failures():
    def opener():
        return OpenCVCapture("/nonexistent/stream.avi", 640, 480, 15)

    src = LiveSource("missing", opener, reopen_min_s=0.05, reopen_max_s=0.1)
    try:
        assert src.read(timeout=0.3) is None
        assert wait_for(lambda: src.counters.failures >= 2)
        assert not src.up and "cannot open" in src.last_error
    finally:
        src.close()


def test_source_config_checks():
    for bad in (dict(width=0), dict(fps=0), dict(reopen_min_s=5, reopen_max_s=1), dict(max_pixels=0)):
        with pytest.raises(ValueError):
            SourceConfig(**bad)


def test_stuck_camera_call_marks_the_source_unhealthy():
    """A stream server that accepts the connection and never answers: FFmpeg blocks in open; the
    source says it is unhealthy (the run loop then stops feeding systemd's watchdog)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    src = open_source(SourceConfig(uri=f"http://127.0.0.1:{port}/stream.mjpg", stall_s=0.5))
    try:
        assert isinstance(src, LiveSource)
        assert src.healthy
        conn, _ = server.accept()  # the grabber connected and now waits for an answer
        assert wait_for(lambda: not src.healthy, timeout=5)
        assert not src.up and src.read(timeout=0.1) is None
        conn.close()  # the server goes away: the call returns, the source is healthy again
        assert wait_for(lambda: src.healthy, timeout=15)
    finally:
        server.close()
        src.close()


def _fake_picamera2_dir(tmp_path, body: str) -> Path:
    """A folder holding a ``picamera2`` package whose import fails as ``body`` says: the ways a real
    one breaks on a Pi (its simplejpeg built for another numpy, libcamera missing), which this
    machine cannot load."""
    pkg = tmp_path / "fake" / "picamera2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    return pkg.parent


def _fake_picamera2(tmp_path, monkeypatch, body: str) -> None:
    """That package first on this process's import path."""
    monkeypatch.syspath_prepend(str(_fake_picamera2_dir(tmp_path, body)))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)


def _picamera2_config(tmp_path, detector_json, classifier_json) -> Path:
    """A config with the shipped models and the Pi camera as its source, alerts on stdout."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"source:\n  uri: picamera2\nmqtt:\n  enabled: false\n"
                   f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n")
    return cfg


def test_picamera2_built_for_another_numpy_says_how_to_mend_it(tmp_path, monkeypatch):
    # What Raspberry Pi OS bookworm prints when pip put numpy 2 into a --system-site-packages venv.
    _fake_picamera2(tmp_path, monkeypatch, 'raise ValueError("numpy.dtype size changed, may indicate binary'
                    ' incompatibility. Expected 96 from C header, got 88 from PyObject")\n')
    with pytest.raises(SourceError) as err:
        open_source(SourceConfig(uri="picamera2"))
    msg = str(err.value)
    assert "does not import" in msg and f"numpy {np.__version__}" in msg
    assert "\n  fix:" in msg and "'numpy<2'" in msg and "'opencv-python-headless<4.12'" in msg


def test_picamera2_missing_a_dependency_is_not_called_absent(tmp_path, monkeypatch):
    _fake_picamera2(tmp_path, monkeypatch, "import libcamera_not_here_xyz\n")
    with pytest.raises(SourceError) as err:
        open_source(SourceConfig(uri="picamera2"))
    msg = str(err.value)
    assert "does not import" in msg and "libcamera_not_here_xyz" in msg and "apt install --reinstall" in msg
    assert "numpy<2" not in msg


def test_broken_picamera2_stops_the_agent_without_a_traceback(tmp_path, detector_json, classifier_json):
    fake = _fake_picamera2_dir(tmp_path, 'raise ValueError("numpy.dtype size changed, may indicate binary'
                               ' incompatibility")\n')
    cfg = _picamera2_config(tmp_path, detector_json, classifier_json)
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(repo)])}
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=120, cwd=repo, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "picamera2 does not import" in r.stderr and "fix:" in r.stderr


def test_check_config_finds_a_picamera2_that_does_not_import(tmp_path, monkeypatch, capsys, detector_json,
                                                            classifier_json):
    from agent.cli import main

    _fake_picamera2(tmp_path, monkeypatch, 'raise ValueError("numpy.dtype size changed")\n')
    cfg = _picamera2_config(tmp_path, detector_json, classifier_json)
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "picamera2 does not import" in err and "'numpy<2'" in err


@pytest.mark.parametrize("orientation", sorted(STORE))
def test_photos_are_read_upright_by_their_exif_orientation(tmp_path, astronaut, orientation):
    """A phone stores a portrait photo sideways and tags it; read as stored, every face lies on its side
    (IMREAD_UNCHANGED ignores the tag). Read as viewers show it, and as stored only when asked."""
    upright = astronaut[:384]  # not square: a turn shows in the shape too
    path = tmp_path / "phone.jpg"
    path.write_bytes(oriented_jpeg(upright, orientation))
    got = read_image(str(path))
    assert got.shape == upright.shape and np.abs(got.astype(int) - upright).mean() < 4  # JPEG's loss only
    stored = read_image(str(path), orient=False)
    assert stored.shape == STORE[orientation](upright).shape
    if orientation != 1:
        assert np.abs(stored.astype(int) - STORE[orientation](upright)).mean() < 4
        if stored.shape == upright.shape:
            assert np.abs(stored.astype(int) - upright).mean() > 20  # the check tells the two apart
    frame = next(iter(open_source(SourceConfig(uri=str(path)))))
    assert frame.image.shape == upright.shape
