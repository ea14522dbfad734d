"""The config loader: one validated object, clear errors with file, key path, line and fix."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional

import pytest

from agent.config import Config, ConfigError, describe, load, load_dataclass, parse
from agent.pipeline.detect import DetectorConfig


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_repo_config_loads_with_doorway_defaults(repo_root):
    cfg = load(repo_root / "config.yaml")
    assert isinstance(cfg, Config)
    assert cfg.runtime.camera == "doorway" and cfg.runtime.num_threads == 1
    assert cfg.mqtt.enabled is False
    assert cfg.alerts.labels == ["no_mask", "incorrect_mask"]
    # Model paths resolve against the config file's folder.
    assert cfg.detector.model == str(repo_root / "models" / "face_detector_yunet.json")
    assert cfg.classifier.model == str(repo_root / "models" / "mask_classifier.json")


def test_repo_config_comments_tell_the_shipped_detectors_input(repo_root):
    """The comments that name the detector's input size say what its sidecar says (they went stale once)."""
    import json
    import re

    cfg = load(repo_root / "config.yaml")
    meta = json.loads(Path(cfg.detector.model).read_text())
    size = f"{meta['input']['width']}x{meta['input']['height']}"
    text = (repo_root / "config.yaml").read_text()
    # "sees at most" / "input up to": an adaptive detector shrinks its input to the frame's letterbox
    named = re.findall(r"detector sees (?:at most )?(\d+x\d+)|input up to (\d+x\d+)|(\d+x\d+) input", text)
    assert named and all(size in pair for pair in named), (size, named)


def test_repo_config_names_and_comments_every_key(repo_root):
    """config.yaml writes every key the loader knows, each with a comment on its line."""
    import yaml

    from agent.config import _key_lines

    text = (repo_root / "config.yaml").read_text()
    lines = text.splitlines()
    where: dict = {}
    _key_lines(yaml.compose(text), (), where)
    for entry in describe():
        key = entry.split(" ", 1)[0].rstrip(":")
        path = tuple(key.split("."))
        assert path in where, f"config.yaml lacks `{key}`"
        if not entry.endswith("#") and ":  #" not in entry:  # a leaf, not a section header
            assert "#" in lines[where[path] - 1], f"config.yaml: `{key}` has no comment"


def test_empty_file_gives_defaults(tmp_path):
    cfg = load(write(tmp_path, ""))
    assert cfg.tracker.window == 15
    assert cfg.detector.model == str(tmp_path / "models" / "face_detector_yunet.json")


def test_unknown_key_suggests_the_right_one(tmp_path):
    p = write(tmp_path, "runtime:\n  camera: door\ndetector:\n  min_scroe: 0.4\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert f"{p}:4:" in msg and "`detector.min_scroe`" in msg and "did you mean `min_score`?" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"`detectr`.*\n.*did you mean `detector`"):
        load(write(tmp_path, "detectr: {}\n"))


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("tracker:\n  window: ten\n", "tracker.window", "whole number"),
        ("tracker:\n  window: 2.5\n", "tracker.window", "whole number"),
        ("tracker:\n  velocity: 1\n", "tracker.velocity", "true or false"),
        ("detector:\n  min_score: yes\n", "detector.min_score", "number"),
        ("tracker:\n  aggregate: medain\n", "tracker.aggregate", "did you mean `median`"),
        ("alerts:\n  labels: no_mask\n", "alerts.labels", "list"),
        ("alerts:\n  labels: [no_mask, [x]]\n", "alerts.labels.1", "text"),
        ("classifier:\n  thresholds: {no_mask: high}\n", "classifier.thresholds.no_mask", "number"),
        ("detector: 3\n", "detector", "mapping"),
        ("runtime:\n  camera:\n", "runtime.camera", "empty"),
    ],
)
def test_wrong_types_name_key_line_and_fix(tmp_path, text, key, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert f"`{key}`" in msg, msg
    assert re.search(rf"{re.escape(str(p))}:\d+:", msg), msg
    assert words in msg and "fix:" in msg, msg


def test_section_check_points_at_the_field_line(tmp_path):
    p = write(tmp_path, "alerts:\n  labels: [no_mask]\n  min_score: 2\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    assert f"{p}:3: `alerts.min_score`" in str(e.value)


def test_roi_checked(tmp_path):
    with pytest.raises(ConfigError, match="roi"):
        load(write(tmp_path, "detector:\n  roi: [0.5, 0, 0.2, 1]\n"))
    cfg = load(write(tmp_path, "detector:\n  roi: [0.1, 0, 0.9, 1]\n"))
    assert cfg.detector.roi == [0.1, 0.0, 0.9, 1.0]


def test_mqtt_section_is_the_mqtt_helpers_dataclass(tmp_path):
    from agent.pipeline.publish.mqtt import MqttConfig

    cfg = load(write(tmp_path, "mqtt:\n  enabled: true\n  host: broker\n  tls:\n    enabled: true\n"))
    assert isinstance(cfg.mqtt, MqttConfig) and cfg.mqtt.enabled and cfg.mqtt.port == 8883
    with pytest.raises(ConfigError, match=r"`mqtt.qos`"):
        load(write(tmp_path, "mqtt:\n  qos: 0\n"))


def test_yaml_syntax_error_has_line(tmp_path):
    p = write(tmp_path, "runtime:\n  camera: [door\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(p))}:\d+: not valid YAML"):
        load(p)


def test_duplicate_key_rejected(tmp_path):
    p = write(tmp_path, "tracker:\n  window: 5\n  window: 6\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(p))}:3: `tracker.window`: written twice"):
        load(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "nope.yaml")


def test_paths_resolve_against_config_folder(tmp_path):
    (tmp_path / "cams").mkdir()
    p = tmp_path / "cams" / "c.yaml"
    p.write_text("detector:\n  model: ../m/det.json\nsource:\n  uri: picamera2\n")
    cfg = load(p)
    assert Path(cfg.detector.model) == tmp_path / "cams" / ".." / "m" / "det.json"
    assert cfg.source.uri == "picamera2"  # a name, not a file
    p.write_text("source:\n  uri: 0\n")
    assert load(p).source.uri == "0"
    p.write_text("source:\n  uri: rtsp://cam/stream\n")
    assert load(p).source.uri == "rtsp://cam/stream"
    p.write_text("source:\n  uri: clip.mp4\n")
    assert load(p).source.uri == str(tmp_path / "cams" / "clip.mp4")
    p.write_text("source:\n  uri: /abs/clip.mp4\n")
    assert load(p).source.uri == "/abs/clip.mp4"


@dataclass
class _Inner:
    k: Literal["a", "b"] = "a"


@dataclass
class _Section:
    """A made-up section: the loader is generic over any dataclass of supported fields."""

    flag: bool = False
    n: int = 1
    x: float = 0.5
    name: str = "s"
    maybe: Optional[int] = None
    items: List[float] = field(default_factory=list)
    table: Dict[str, int] = field(default_factory=dict)
    inner: _Inner = field(default_factory=_Inner)
    nested: List[_Inner] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must be >= 0")


def test_generic_loader_all_field_types():
    s = load_dataclass(_Section, {"flag": True, "n": 3, "x": 2, "name": 7, "maybe": None, "items": [1, 2.5],
                                  "table": {"a": 1}, "inner": {"k": "b"}, "nested": [{"k": "a"}, {}]})
    assert s == _Section(True, 3, 2.0, "7", None, [1.0, 2.5], {"a": 1}, _Inner("b"), [_Inner("a"), _Inner("a")])
    assert isinstance(s.x, float)
    with pytest.raises(ConfigError, match=r"`n`: n must be >= 0"):
        load_dataclass(_Section, {"n": -1})
    with pytest.raises(ConfigError, match=r"`nested.1.k`"):
        load_dataclass(_Section, {"nested": [{}, {"k": "c"}]})
    with pytest.raises(ConfigError, match=r"`table.a`"):
        load_dataclass(_Section, {"table": {"a": "x"}})


def test_describe_lists_keys_with_help():
    lines = describe()
    assert any(ln.startswith("detector.min_face_px = 20.0") and "ignored" in ln for ln in lines)
    assert any(ln.startswith("mqtt.enabled = False") for ln in lines)


def test_section_defaults_are_valid():
    assert DetectorConfig().min_score is None
    parse("{}")


def test_check_config_cli_reports_without_traceback(tmp_path):
    p = write(tmp_path, "detector:\n  min_scroe: 0.4\n")
    r = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "did you mean `min_score`?" in r.stderr and f"{p}:2" in r.stderr


@pytest.mark.parametrize("text,key", [
    ("tracker:\n  window: 0\n", "tracker.window"),
    ("tracker:\n  min_hits: 0\n", "tracker.min_hits"),
    ("tracker:\n  max_missed: -1\n", "tracker.max_missed"),
    ("source:\n  height: 0\n", "source.height"),
])
def test_a_section_check_points_at_the_key_it_is_about(tmp_path, text, key):
    """A section's own check names the key at fault (tracker.window 0 was reported as max_missed)."""
    p = tmp_path / "config.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(p)
    assert f"`{key}`" in str(exc.value)
