"""The whole pipeline on a generated doorway clip: N people walking past -> N alerts."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest

from agent.pipeline.alert import AlertConfig, AlertPolicy
from agent.pipeline.classify import ClassifierConfig, MaskClassifier
from agent.pipeline.detect import DetectorConfig, FaceDetector
from agent.config import RuntimeConfig
from agent.pipeline.loop import Pipeline, Timings, anon_mb, cpu_summary, rss_mb
from agent.pipeline.publish.stdout import StdoutPublisher
from agent.pipeline.source import SourceConfig, open_source
from agent.pipeline.track import Tracker, TrackerConfig
from agent.types import Frame


def make(detector_json, classifier_json, labels=("no_mask", "incorrect_mask"), buf=None, min_score=0.5):
    buf = buf if buf is not None else io.StringIO()
    det = FaceDetector(DetectorConfig(model=str(detector_json)))
    clf = MaskClassifier(ClassifierConfig(model=str(classifier_json)))
    policy = AlertPolicy(AlertConfig(labels=list(labels), min_score=min_score), "door", {det.model.name: det.model.version})
    return Pipeline(det, clf, Tracker(TrackerConfig()), policy, StdoutPublisher(stream=buf)), buf


def alerts(buf):
    return [json.loads(ln) for ln in buf.getvalue().splitlines() if json.loads(ln)["type"] == "alert"]


def test_each_person_passing_alerts_exactly_once(detector_json, classifier_json, clip):
    """Whatever the label, one alert per person, not one per frame."""
    pipe, buf = make(detector_json, classifier_json, labels=("mask", "incorrect_mask", "no_mask"),
                     min_score=0.0)
    final = pipe.run(open_source(SourceConfig(uri=str(clip.path))), stats_interval_s=0)
    got = alerts(buf)
    assert len(got) == len(clip.people), [(a["track"], a["label"]) for a in got]
    assert len({a["id"] for a in got}) == len(got)
    assert final["frames"] == clip.frames and final["alerts"] == len(clip.people)
    assert sum(final["people"].values()) == len(clip.people)


def test_unmasked_people_raise_no_mask_alerts(detector_json, classifier_json, clip):
    pipe, buf = make(detector_json, classifier_json)
    pipe.run(open_source(SourceConfig(uri=str(clip.path))), stats_interval_s=0)
    got = alerts(buf)
    assert [a["label"] for a in got] == ["no_mask"] * len(clip.people)
    a = got[0]
    assert a["camera"] == "door" and a["frame"] == {"width": 640, "height": 480}
    x1, y1, x2, y2 = a["box"]
    assert 0 <= x1 < x2 <= 640 + 100 and 0 <= y1 < y2 <= 480


def test_stats_report_stages_drops_camera_people(detector_json, classifier_json, clip):
    pipe, buf = make(detector_json, classifier_json)
    src = open_source(SourceConfig(uri=str(clip.path)))
    final = pipe.run(src, stats_interval_s=1e-9)  # a stats line after every frame
    stats = [json.loads(ln) for ln in buf.getvalue().splitlines() if json.loads(ln)["type"] == "stats"]
    assert len(stats) >= clip.frames
    s = stats[-1]
    for stage in ("detect", "classify", "track", "alert", "publish", "total"):
        assert s["ms"][stage]["median"] >= 0 and s["ms"][stage]["p95"] >= s["ms"][stage]["median"]
    assert s["frames"] == clip.frames and s["dropped_frames"] == 0 and s["rss_mb"] > 0
    assert "camera_up" in s and s["fps"] > 0 and final["people"] == s["people"]


def test_stop_event_ends_a_live_run(detector_json, classifier_json, clip):
    pipe, buf = make(detector_json, classifier_json)
    src = open_source(SourceConfig(uri=str(clip.path), live=True))
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    try:
        final = pipe.run(src, stop, stats_interval_s=0)
    finally:
        src.close()
        timer.cancel()
    assert final["frames"] > 0
    lines = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    assert {"type": "camera", "up": True} in lines


def test_frames_of_odd_formats_flow_through(detector_json, classifier_json, astronaut):
    pipe, _ = make(detector_json, classifier_json)
    r = pipe.process(Frame(image=astronaut, timestamp=0.0))
    assert len(r.faces) == 1 and set(r.ms) >= {"detect", "classify", "track", "alert", "publish", "total"}
    r = pipe.process(Frame(image=np.zeros((480, 640, 3), np.uint8), timestamp=0.1))
    assert r.faces == []


def test_timings_summary():
    t = Timings(keep=5)
    for v in range(10):
        t.add("detect", float(v))
    s = t.summary()["detect"]
    assert s["median"] == 7.0 and 8.0 <= s["p95"] <= 9.0


def test_memory_figures_follow_an_allocation_and_other_processes():
    import mmap
    import os
    import subprocess
    import sys

    rss0, anon0 = rss_mb(), anon_mb()
    # 40 MiB of fresh private anonymous pages, every one written. Mapped directly: a malloc'd block can
    # reuse pages the heap already holds (after TensorFlow's tests it did, and the figure rightly stayed
    # put); MAP_PRIVATE because a shared mapping counts as shmem, not Anonymous.
    block = mmap.mmap(-1, 40 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    np.frombuffer(block, np.uint8)[:] = 1
    assert anon_mb() - anon0 >= 38 and rss_mb() - rss0 >= 38
    assert rss_mb(os.getpid()) == pytest.approx(rss_mb(), abs=2)
    block.close()
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"  # started: its interpreter is in memory
        assert 1 < rss_mb(child.pid) < rss_mb() and 0 < anon_mb(child.pid) < anon_mb()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert np.isnan(rss_mb(child.pid)) and anon_mb(child.pid) == 0.0  # gone: no figure, no error


def test_runtime_config_checks():
    for bad in (dict(camera="a/b"), dict(camera=""), dict(num_threads=0), dict(stats_interval_s=-1)):
        with pytest.raises(ValueError):
            RuntimeConfig(**bad)


def test_camera_down_reported_and_stats_keep_coming(detector_json, classifier_json, tmp_path):
    """A camera that never opens: the loop keeps running, reports it down, and still sends stats."""
    pipe, buf = make(detector_json, classifier_json)
    src = open_source(SourceConfig(uri=str(tmp_path / "gone.avi"), live=True, reopen_min_s=0.05, reopen_max_s=0.1))
    stop = threading.Event()
    timer = threading.Timer(1.2, stop.set)
    timer.start()
    try:
        final = pipe.run(src, stop, stats_interval_s=0.3, read_timeout=0.1)
    finally:
        src.close()
        timer.cancel()
    lines = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    assert {"type": "camera", "up": False} in lines
    stats = [ln for ln in lines if ln["type"] == "stats"]
    assert len(stats) >= 2 and stats[-1]["camera_up"] is False and stats[-1]["camera_failures"] >= 2
    assert final["frames"] == 0


def test_preview_gets_every_frame_with_its_faces(detector_json, classifier_json, clip):
    import http.client

    from agent.service.preview import PreviewConfig, PreviewServer

    pipe, _ = make(detector_json, classifier_json)
    pipe.preview = PreviewServer(PreviewConfig(enabled=True, port=0), "door")
    seen = []

    class Stop(threading.Event):
        def is_set(self):  # stop after a few frames, then look at the preview before run() closes it
            if pipe.frames >= 20 and not seen:
                conn = http.client.HTTPConnection("127.0.0.1", pipe.preview.port, timeout=10)
                conn.request("GET", "/snapshot.jpg")
                seen.append(conn.getresponse().read())
                return True
            return bool(seen)

    pipe.run(open_source(SourceConfig(uri=str(clip.path))), Stop(), stats_interval_s=0)
    assert seen and seen[0][:2] == b"\xff\xd8"  # a JPEG of the newest frame
    assert pipe.preview.stopping  # closed with the run


def _config(detector_json, classifier_json, extra="", detector=""):
    from agent.config import parse

    return parse(f"runtime:\n  camera: door\n  stats_interval_s: 0\ndetector:\n  model: {detector_json}\n{detector}"
                 f"classifier:\n  model: {classifier_json}\n" + extra, "c.yaml")


def test_reconfigure_keeps_models_tracks_and_alert_memory(detector_json, classifier_json, astronaut):
    """New thresholds apply around the loaded models; live tracks and who was alerted carry over."""
    pipe, buf = make(detector_json, classifier_json, labels=("mask", "incorrect_mask", "no_mask"), min_score=0.0)
    pipe.policy.cfg.min_track_age = 1
    for i in range(4):
        pipe.process(Frame(astronaut, 1000.0 + i / 15, i))
    assert len(alerts(buf)) == 1 and len(pipe.tracker.tracks) == 1
    models = (pipe.detector.model, pipe.classifier.model)
    track = pipe.tracker.tracks[0]

    cfg = _config(detector_json, classifier_json,
                  "alerts:\n  labels: [mask, incorrect_mask, no_mask]\n  min_score: 0\n  min_track_age: 1\n"
                  "  cooldown_s: 3600\n")
    pipe.reconfigure(cfg)
    assert (pipe.detector.model, pipe.classifier.model) == models  # not reloaded
    for i in range(4, 8):
        pipe.process(Frame(astronaut, 1000.0 + i / 15, i))
    assert pipe.tracker.tracks[0] is track  # the same person, still followed
    assert len(alerts(buf)) == 1  # ... and not alerted again: the policy remembers

    pipe.reconfigure(_config(detector_json, classifier_json, detector="  min_face_px: 10000\n"))
    assert pipe.process(Frame(astronaut, 1001.0, 9)).faces == []  # the new threshold took effect


def test_reconfigure_refuses_labels_the_classifier_lacks(detector_json, classifier_json):
    from agent.pipeline.loop import ReconfigureError

    pipe, _ = make(detector_json, classifier_json)
    before = (pipe.detector, pipe.classifier, pipe.policy.cfg)
    with pytest.raises(ReconfigureError, match="alerts.labels"):
        pipe.reconfigure(_config(detector_json, classifier_json, "alerts:\n  labels: [no_mask, sunglasses]\n"))
    assert (pipe.detector, pipe.classifier, pipe.policy.cfg) == before  # nothing changed


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx f16c avx2 fma sse4a

processor\t: 1
model name\t: something else
flags\t\t: avx512f avx512_vnni
"""

PI_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def test_cpu_summary_names_the_cpu_and_its_int8_features(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text(X86_CPUINFO)
    # the first processor's block counts; AVX2 without AVX-512 VNNI is the slow int8 case
    assert cpu_summary(str(x86)) == {"name": "AMD EPYC (family 25 model 1)", "features": ["avx2", "fma"]}
    pi = tmp_path / "pi"
    pi.write_text(PI_CPUINFO)
    assert cpu_summary(str(pi)) == {"name": "Raspberry Pi 5 Model B Rev 1.0 (CPU part 0xd0b)",
                                    "features": ["asimd", "asimddp"]}
    assert cpu_summary(str(tmp_path / "missing")) == {"name": "unknown", "features": []}
    # this machine: a name and a list, whatever the host
    here = cpu_summary()
    assert isinstance(here["name"], str) and here["name"] and isinstance(here["features"], list)
