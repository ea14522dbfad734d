"""The maskwatch command: detect (JSON contract, exit codes), check-config, bench, run, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from agent.cli import main

FACE_LABELS = {"mask", "incorrect_mask", "no_mask"}


def check_record(obj):
    assert set(obj) >= {"image", "width", "height", "faces", "ms"}
    assert set(obj["ms"]) == {"detect", "classify", "total"}
    assert obj["ms"]["total"] >= obj["ms"]["detect"]
    for f in obj["faces"]:
        assert set(f) == {"box", "label", "score", "face_score", "scores"}
        assert f["label"] in FACE_LABELS and set(f["scores"]) == FACE_LABELS
        assert f["score"] == f["scores"][f["label"]]
        x1, y1, x2, y2 = f["box"]
        assert 0 <= x1 < x2 <= obj["width"] and 0 <= y1 < y2 <= obj["height"]


@pytest.fixture
def inputs(tmp_path, astronaut):
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "astro.jpg"), astronaut)
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    (d / "junk.jpg").write_bytes(b"\x00not an image at all")
    return d


def run_json(capsys, *args):
    rc = main(["detect", "--json", *args])
    out = capsys.readouterr().out
    return rc, [json.loads(ln) for ln in out.splitlines()]


def test_detect_json_contract_and_exit_1_on_junk(capsys, models_config, inputs):
    given = [str(inputs / "astro.jpg"), str(inputs / "junk.jpg"), str(inputs / "missing.jpg"), str(inputs / "gray.png")]
    rc, objs = run_json(capsys, "--config", str(models_config), *given)
    assert rc == 1
    assert [o["image"] for o in objs] == given  # one object per input, paths as given, in order
    astro, junk, missing, gray = objs
    check_record(astro)
    check_record(gray)
    assert (astro["width"], astro["height"]) == (512, 512) and len(astro["faces"]) == 1
    assert len(gray["faces"]) == 1
    assert set(junk) == {"image", "error"} and set(missing) == {"image", "error"}


def test_detect_all_readable_exit_0_and_folder(capsys, models_config, inputs):
    (inputs / "junk.jpg").unlink()
    rc, objs = run_json(capsys, "--config", str(models_config), str(inputs))
    assert rc == 0 and len(objs) == 2
    for o in objs:
        check_record(o)


def test_detect_video_one_object_per_frame(capsys, models_config, clip):
    rc, objs = run_json(capsys, "--config", str(models_config), str(clip.path))
    assert rc == 0 and len(objs) == clip.frames
    assert [o["frame"] for o in objs] == list(range(clip.frames))
    assert all(o["image"] == str(clip.path) for o in objs)
    assert sum(len(o["faces"]) > 0 for o in objs) > clip.frames // 2


def test_detect_annotate_and_text_output(capsys, models_config, inputs, tmp_path):
    out = tmp_path / "ann"
    rc = main(["detect", "--config", str(models_config), "--annotate", str(out), str(inputs / "astro.jpg")])
    text = capsys.readouterr().out
    assert rc == 0 and "astro.jpg: 1 face(s)" in text
    img = cv2.imread(str(out / "astro.jpg"))
    assert img is not None and img.shape == (512, 512, 3)
    assert np.abs(img.astype(int) - cv2.imread(str(inputs / "astro.jpg")).astype(int)).max() > 100  # drawn on


def test_usage_and_config_errors_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["detect"])
    assert e.value.code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  min_scroe: 0.5\n")
    assert main(["detect", "--config", str(bad), "x.jpg"]) == 2
    assert "did you mean `min_score`?" in capsys.readouterr().err
    missing_models = tmp_path / "m.yaml"
    missing_models.write_text("detector:\n  model: nowhere/det.json\n")
    assert main(["detect", "--config", str(missing_models), "x.jpg"]) == 2
    assert "sidecar not found" in capsys.readouterr().err


def test_no_traceback_from_the_console(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  window: many\n")
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "`tracker.window`" in r.stderr


def test_check_config_loads_models(capsys, models_config):
    assert main(["check-config", str(models_config)]) == 0
    out = capsys.readouterr().out
    assert ": ok" in out and "detector:" in out and "classifier:" in out
    assert main(["check-config", "--explain"]) == 0
    assert "tracker.window = 15" in capsys.readouterr().out


def _set(path, value):
    """change(meta) that sets a dotted key of a sidecar (None deletes it)."""
    def change(meta):
        *parents, last = path.split(".")
        for key in parents:
            meta = meta[key]
        if value is None:
            del meta[last]
        else:
            meta[last] = value
    return change


@pytest.mark.parametrize("kind,key,value,says", [
    ("classifier", "output.temperature", 0.0, "output.temperature must be > 0"),
    ("classifier", "output.name", "probs", "output.name 'probs' is not in"),
    ("classifier", "labels", None, "missing key `labels`"),
    ("classifier", "output", None, "missing key `output`"),
    ("face_detector_yunet", "decoding.type", "yolo", "'yolo' is not a known detector family"),
    ("face_detector_yunet", "decoding.nms", None, "missing key `decoding.nms`"),
    ("face_detector_yunet", "decoding.strides", [8, 16, 0], "decoding.strides"),
    ("face_detector_door", "decoding.num_boxes", 100, "`decoding.num_boxes` is 100"),
    ("face_detector_door", "decoding.anchors", None, "missing key `decoding.anchors`"),
])
def test_a_swapped_model_with_a_bad_sidecar_is_one_clear_error(tmp_path, capsys, copy_model, repo_root,
                                                               classifier_json, kind, key, value, says):
    """An engineer who swaps in a model with a wrong sidecar gets exit 2 and a message naming the
    sidecar, what is wrong and the fix, at check-config time (before the service would start); both
    detector families."""
    detector = repo_root / "models" / f"{'face_detector_yunet' if kind == 'classifier' else kind}.json"
    if not detector.is_file():
        pytest.skip(f"{detector} not built")
    kind = "classifier" if kind == "classifier" else "detector"
    models = {"detector": detector, "classifier": classifier_json}
    models[kind] = copy_model(models[kind], _set(key, value))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"runtime:\n  state_dir: {tmp_path}\ndetector:\n  model: {models['detector']}\n"
                   f"classifier:\n  model: {models['classifier']}\n")
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert says in err and str(models[kind]) in err and "fix:" in err and "Traceback" not in err


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


def test_bench_prints_a_table(capsys, models_config):
    assert main(["bench", "--config", str(models_config), "--frames", "5", "--warmup", "1", "--threads", "1", "2",
                 "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["threads", "faces"]
    rows = json.loads(out[-1])
    assert [r["threads"] for r in rows] == [1, 2]
    assert 1.0 <= rows[0]["faces"] <= 3.0  # the budget case: up to 3 faces in a 640x480 doorway
    assert rows[0]["ms"]["total"]["median"] > 0 and rows[0]["rss_mb"] > 0
    # figures carry the CPU they were measured on (int8 speed depends on its instruction set)
    assert out[-2].startswith("CPU: ") and rows[0]["cpu"]["name"] in out[-2]


def test_bench_times_real_frames_fitted_to_a_camera_with_at_most_n_faces(capsys, models_config, tmp_path, astronaut):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_face.png"), astronaut)  # one face
    cv2.imwrite(str(folder / "b_empty.png"), np.full((300, 500, 3), 90, np.uint8))  # none: left out
    assert main(["bench", "--config", str(models_config), "--source", str(folder), "--size", "640x480",
                 "--max-faces", "3", "--frames", "4", "--warmup", "1", "--threads", "1", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("maskwatch bench: 1 distinct frame(s) 640x480")
    assert json.loads(out[-1])[0]["faces"] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--size", "640"], "--size '640': expected WIDTHxHEIGHT"),
    (["--max-faces", "2"], "--max-faces needs --source"),
    (["--source", "x", "--max-faces", "0"], "--max-faces must be at least 1"),
])
def test_bench_usage_errors_name_the_option(capsys, models_config, argv, message):
    assert main(["bench", "--config", str(models_config), "--frames", "2", "--threads", "1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_fit_frame_cuts_the_centre_to_the_aspect():
    from agent.tools.bench import fit_frame

    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, 133:267] = 255  # the centre 4:3 part
    got = fit_frame(wide, (64, 48))
    assert got.shape == (48, 64, 3) and got[:, 2:-2].min() == 255
    tall = np.zeros((400, 120, 3), np.uint8)
    tall[155:245] = 255
    got = fit_frame(tall, (40, 30))
    assert got.shape == (30, 40, 3) and got[1:-1].min() == 255


def test_run_on_a_clip_prints_one_alert_per_person(capsys, models_config, clip):
    assert main(["run", "--config", str(models_config), "--source", str(clip.path)]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    got = [ln for ln in lines if ln["type"] == "alert"]
    assert [a["label"] for a in got] == ["no_mask"] * len(clip.people)


def test_demo_alerts_on_the_unmasked(capsys, models_config, tmp_path):
    from agent.tools.demo import DEFAULT_PEOPLE

    assert main(["demo", "--config", str(models_config), "--out", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    lines = [json.loads(ln) for ln in cap.out.splitlines()]
    assert {ln["type"] for ln in lines} == {"alert"}
    got = [ln for ln in lines if ln["type"] == "alert"]
    assert len(got) == sum(not p.masked for p in DEFAULT_PEOPLE)
    assert "demo:" in cap.err


def test_run_publishes_alerts_and_stats_over_mqtt(tmp_path, detector_json, classifier_json, clip):
    """`maskwatch run` with mqtt.enabled against a real mosquitto: one QoS 1 alert per person
    passing, and stats that follow the published schema."""
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after the repo: tests/agent must not shadow agent/
    import mosquitto as mq  # tests/mosquitto.py (the MQTT helper's broker fixture)

    if mq.skip_reason():
        pytest.skip(mq.skip_reason())
    broker = mq.Broker(tmp_path / "broker")
    broker.start()
    collector = None
    try:
        collector = mq.Collector(broker.port, ["maskwatch/#"])
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            f"runtime:\n  camera: door1\n  stats_interval_s: 1\n  state_dir: {tmp_path / 'state'}\n"
            f"source:\n  uri: {clip.path}\n"
            f"detector:\n  model: {detector_json}\n"
            f"classifier:\n  model: {classifier_json}\n"
            # Every label alerts: the test is about one message per person, whatever the model says.
            "alerts:\n  labels: [mask, incorrect_mask, no_mask]\n  min_score: 0\n"
            f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {broker.port}\n"
        )
        (tmp_path / "state").mkdir()
        r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
        assert r.returncode == 0, r.stderr
        assert r.stdout == ""  # alerts went to the broker, not stdout
        assert collector.wait_for(lambda c: len(c.payloads("maskwatch/door1/alert")) >= len(clip.people), 10)
        time.sleep(0.5)
        alerts = [json.loads(p) for p in collector.payloads("maskwatch/door1/alert")]
        assert len(alerts) == len(clip.people)
        stats = [json.loads(p) for p in collector.payloads("maskwatch/door1/stats")]
        assert stats, "no stats message"
        schema = json.loads((Path(__file__).resolve().parents[2] / "agent/schemas/stats.schema.json").read_text())
        jsonschema.validate(stats[-1], schema)
        assert stats[-1]["frames"] == clip.frames
    finally:
        if collector is not None:
            collector.close()
        broker.stop()


def test_detect_odd_images(capsys, tmp_path, detector_json, classifier_json, astronaut):
    """16-bit and RGBA files are converted; an image above source.max_pixels is an error line."""
    d = tmp_path / "odd"
    d.mkdir()
    cv2.imwrite(str(d / "deep.png"), astronaut.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "alpha.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA))
    big = np.zeros((600, 600, 3), np.uint8)
    cv2.imwrite(str(d / "huge.png"), big)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
                   "source:\n  max_pixels: 300000\n")
    rc, objs = run_json(capsys, "--config", str(cfg), str(d / "deep.png"), str(d / "alpha.png"), str(d / "huge.png"))
    assert rc == 1
    deep, alpha, huge = objs
    check_record(deep)
    check_record(alpha)
    assert huge == {"image": str(d / "huge.png"), "error": "unusable image (too large)"}


def test_run_under_systemd_notify_reload_and_stop(tmp_path, detector_json, classifier_json, clip):
    """`maskwatch run` as systemd runs it: READY=1 after the first frame, SIGHUP reloads (a broken
    config is refused and the old one kept), SIGTERM stops cleanly with STOPPING=1."""
    import signal
    import socket
    from pathlib import Path

    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    cfg = tmp_path / "config.yaml"

    def write_config(camera):
        cfg.write_text(f"runtime:\n  camera: {camera}\n  stats_interval_s: 0\n"
                       f"source:\n  uri: {clip.path}\n  live: true\n"  # the clip as a camera that loops
                       f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n")

    def expect(word):
        seen = []
        while True:
            msg = sock.recv(4096).decode()
            seen.append(msg)
            if word in msg:
                return seen

    write_config("door-a")
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, MASKWATCH_STATE_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)], env=env,
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        expect("READY=1")
        write_config("door-b")
        proc.send_signal(signal.SIGHUP)
        expect("RELOADING=1")
        expect("READY=1")
        cfg.write_text("tracker:\n  window: lots\n")  # broken: refused, door-b keeps running
        proc.send_signal(signal.SIGHUP)
        expect("RELOADING=1")
        expect("READY=1")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        expect("STOPPING=1")
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read()
        assert "camera 'door-b'" in err and "reload failed, keeping the running config" in err
        assert "`tracker.window`" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_alert_labels_must_be_classifier_labels(capsys, tmp_path, detector_json, classifier_json, clip):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
                   "alerts:\n  labels: [nomask]\n")
    assert main(["run", "--config", str(cfg), "--source", str(clip.path)]) == 2
    err = capsys.readouterr().err
    assert "`alerts.labels`" in err and "nomask" in err and "fix:" in err


def test_install_service_is_a_subcommand(capsys, tmp_path):
    rc = main(["install-service", "--dry-run", "--prefix", str(tmp_path)])
    out = capsys.readouterr()
    assert rc in (0, 2), out.err  # 2 only with a user-level reason printed
    assert (out.out if rc == 0 else out.err).strip()
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_mqtt_error_names_its_key_once(capsys, tmp_path, detector_json, classifier_json, clip):
    """A publisher problem found at start (an unreadable CA file) is one message with one key path."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"runtime:\n  state_dir: {tmp_path}\n"
                   f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
                   "mqtt:\n  enabled: true\n  tls: {enabled: true, ca_file: no-such-ca.pem}\n")
    assert main(["run", "--config", str(cfg), "--source", str(clip.path)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: `mqtt.tls.ca_file`: cannot load" in err, err
    assert err.count("mqtt.tls.ca_file") == 1 and "mqtt: mqtt" not in err
    assert "\n  fix: point it to the PEM file" in err


def test_publisher_error_message_without_a_key_path():
    from agent.assemble import publisher_error_message

    msg = publisher_error_message("c.yaml", "camera id 'a/b': must be non-empty, without '/', '+' or '#'")
    assert msg.startswith("c.yaml: `mqtt`: camera id 'a/b'") and "\n  fix: " in msg


def _alerts(lines):
    out = []
    for ln in list(lines):
        obj = json.loads(ln)
        if obj.get("type") == "alert":
            out.append(obj)
    return out


def test_sighup_applies_new_settings_without_reopening_the_camera(tmp_path, detector_json, classifier_json,
                                                                   mjpeg_camera, agent_process):
    """A live camera (MJPEG over HTTP) and `maskwatch run`: SIGHUP applies a new camera name, then a
    new min_face_px, between frames; the camera's stream is never reopened (the server sees one
    connection); a broken config is refused with one error line and the running one kept."""
    import signal

    camera = mjpeg_camera()
    cfg = tmp_path / "config.yaml"

    def write_config(name, min_face_px, port=camera.port):
        cfg.write_text(
            f"runtime:\n  camera: {name}\n  stats_interval_s: 0\n"
            f"source:\n  uri: http://127.0.0.1:{port}/cam.mjpg\n"
            f"detector:\n  model: {detector_json}\n  min_face_px: {min_face_px}\n"
            f"classifier:\n  model: {classifier_json}\n"
            # Every label, every 0.2 s: a steady flow of alerts from the one person in view.
            "alerts:\n  labels: [mask, incorrect_mask, no_mask]\n  min_score: 0\n  min_track_age: 1\n"
            "  cooldown_s: 0.2\n")

    write_config("door-a", 20)
    agent = agent_process(cfg)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 1), agent.stderr
    assert agent.wait_for(lambda: any(a["camera"] == "door-a" for a in _alerts(agent.stdout))), agent.stderr

    # 1: a new camera name: alerts go on, under the new name.
    write_config("door-b", 20)
    agent.signal(signal.SIGHUP)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 2), agent.notes
    assert agent.note_count("RELOADING=1") == 1
    assert agent.wait_for(lambda: any(a["camera"] == "door-b" for a in _alerts(agent.stdout))), agent.stderr

    # 2: a threshold: faces smaller than 10000 px are ignored, so the alerts stop.
    write_config("door-b", 10000)
    agent.signal(signal.SIGHUP)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 3), agent.notes
    agent.wait_for(lambda: False, 1.0)  # a frame or two already in the loop may still alert
    settled = len(_alerts(agent.stdout))
    agent.wait_for(lambda: False, 2.0)  # ~40 frames later
    assert len(_alerts(agent.stdout)) == settled, "alerts went on after min_face_px was raised"

    # 3: a broken config: refused, the running one kept.
    cfg.write_text("tracker:\n  window: lots\n")
    agent.signal(signal.SIGHUP)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 4), agent.notes
    assert agent.proc.poll() is None

    # 4: another camera: now the source is reopened (on the new one), and alerts flow again.
    other = mjpeg_camera()
    write_config("door-c", 20, port=other.port)
    agent.signal(signal.SIGHUP)
    assert agent.wait_for(lambda: any(a["camera"] == "door-c" for a in _alerts(agent.stdout))), agent.stderr

    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=20) == 0
    agent.close()
    assert camera.streams == 1, f"the camera was reopened ({camera.streams} streams)"
    assert other.streams == 1
    err = "\n".join(agent.stderr)
    assert err.count("reloaded ") == 3 and err.count("(settings only)") == 2, err
    assert "(source reopened)" in err
    failed = [ln for ln in agent.stderr if "reload failed, keeping the running config" in ln]
    assert len(failed) == 1 and "`tracker.window`" in failed[0] and " | " in failed[0], err  # one line
    assert "Traceback" not in err
    assert agent.note_count("STOPPING=1") >= 1


def test_sigterm_delivers_alerts_publishes_stopped_and_exits_0(tmp_path, detector_json, classifier_json,
                                                               mjpeg_camera, agent_process, broker, collector):
    """`maskwatch run` on a live camera, alerting over MQTT: SIGTERM ends it with exit 0 within
    systemd's budget (5 s), every alert raised reached the broker, availability is a retained
    `stopped`. (The 5 s is the shutdown contract: publisher close <= 3 s, grabber join <= 1 s.)"""
    import signal

    camera = mjpeg_camera()
    sub = collector(["maskwatch/#"])
    cfg = tmp_path / "config.yaml"

    def write_config(cooldown_s):
        cfg.write_text(
            "runtime:\n  camera: door1\n  stats_interval_s: 1\n"
            f"source:\n  uri: http://127.0.0.1:{camera.port}/cam.mjpg\n"
            f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
            "alerts:\n  labels: [mask, incorrect_mask, no_mask]\n  min_score: 0\n  min_track_age: 1\n"
            f"  cooldown_s: {cooldown_s}\n"  # alerts keep coming: some are in flight at SIGTERM
            f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {broker.port}\n")

    write_config(0.1)
    agent = agent_process(cfg)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 1), agent.stderr
    assert sub.wait_for(lambda c: len(c.payloads("maskwatch/door1/alert")) >= 3, 30), agent.stderr
    # A reload that leaves `mqtt` alone keeps the connection: no `stopped`, no second `online`.
    write_config(0.15)
    agent.signal(signal.SIGHUP)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 2), agent.notes
    n = len(sub.payloads("maskwatch/door1/alert"))
    assert sub.wait_for(lambda c: len(c.payloads("maskwatch/door1/alert")) >= n + 3, 30), agent.stderr
    assert sub.payloads("maskwatch/door1/availability") == [b"online"]
    t0 = time.monotonic()
    agent.signal(signal.SIGTERM)
    rc = agent.proc.wait(timeout=30)
    took = time.monotonic() - t0
    agent.close()
    assert rc == 0, agent.stderr
    print(f"shutdown after SIGTERM took {took:.2f} s")
    assert took < 5.0, f"shutdown took {took:.1f} s"
    assert agent.note_count("STOPPING=1") >= 1
    assert sub.wait_for(lambda c: c.payloads("maskwatch/door1/availability")[-1] == b"stopped", 5)
    stats = [json.loads(p) for p in sub.payloads("maskwatch/door1/stats")]
    ids = {json.loads(p)["id"] for p in sub.payloads("maskwatch/door1/alert")}
    assert stats[-1]["alerts"] == len(ids), "an alert raised before SIGTERM did not reach the broker"
    assert stats[-1]["spool"]["depth"] <= stats[-1]["alerts"]
    assert "Traceback" not in "\n".join(agent.stderr)


def test_camera_absent_at_start_reports_ready_anyway_and_keeps_retrying(tmp_path, detector_json, classifier_json,
                                                                      mjpeg_camera, agent_process):
    """No camera at start: READY=1 with STATUS=camera down after runtime.ready_timeout_s (so systemd
    does not restart-loop); it keeps retrying, and frames flow once the camera appears."""
    import signal

    camera = mjpeg_camera()
    camera.go_down()  # answers 503: the port is held, but no stream
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "runtime:\n  stats_interval_s: 0\n  ready_timeout_s: 1\n"
        f"source:\n  uri: http://127.0.0.1:{camera.port}/cam.mjpg\n  reopen_min_s: 0.2\n  reopen_max_s: 0.5\n"
        f"detector:\n  model: {detector_json}\nclassifier:\n  model: {classifier_json}\n"
        "alerts:\n  labels: [mask, incorrect_mask, no_mask]\n  min_score: 0\n  min_track_age: 1\n")
    agent = agent_process(cfg)
    assert agent.wait_for(lambda: agent.note_count("READY=1") >= 1, 60), agent.stderr
    ready = next(n for n in agent.notes if "READY=1" in n)
    assert "STATUS=camera down: http://127.0.0.1:" in ready
    assert agent.proc.poll() is None
    camera.come_back()
    assert agent.wait_for(lambda: any("STATUS=processing" in n for n in agent.notes), 30), agent.notes
    assert agent.wait_for(lambda: len(_alerts(agent.stdout)) >= 1, 30), agent.stderr
    assert agent.note_count("READY=1") == 1  # READY once; later changes are STATUS= only
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=20) == 0
