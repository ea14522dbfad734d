"""`maskwatch run`: alerts on a clip, MQTT, systemd notify, reload on SIGHUP, shutdown on SIGTERM, a camera absent at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from agent.cli import main


def test_run_on_a_clip_prints_one_alert_per_person(capsys, models_config, clip):
    assert main(["run", "--config", str(models_config), "--source", str(clip.path)]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    got = [ln for ln in lines if ln["type"] == "alert"]
    assert [a["label"] for a in got] == ["no_mask"] * len(clip.people)


def test_run_publishes_alerts_and_stats_over_mqtt(tmp_path, detector_json, classifier_json, clip):
    """`maskwatch run` with mqtt.enabled against a real mosquitto: one QoS 1 alert per person
    passing, and stats that follow the published schema."""
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    sys.path.append(str(Path(__file__).resolve().parents[2]))  # after the repo: tests/agent must not shadow agent/
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
                           text=True, timeout=120, cwd=Path(__file__).resolve().parents[3])
        assert r.returncode == 0, r.stderr
        assert r.stdout == ""  # alerts went to the broker, not stdout
        assert collector.wait_for(lambda c: len(c.payloads("maskwatch/door1/alert")) >= len(clip.people), 10)
        time.sleep(0.5)
        alerts = [json.loads(p) for p in collector.payloads("maskwatch/door1/alert")]
        assert len(alerts) == len(clip.people)
        stats = [json.loads(p) for p in collector.payloads("maskwatch/door1/stats")]
        assert stats, "no stats message"
        schema = json.loads((Path(__file__).resolve().parents[3] / "agent/schemas/stats.schema.json").read_text())
        jsonschema.validate(stats[-1], schema)
        assert stats[-1]["frames"] == clip.frames
    finally:
        if collector is not None:
            collector.close()
        broker.stop()


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
                            cwd=Path(__file__).resolve().parents[3], stdout=subprocess.DEVNULL,
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
