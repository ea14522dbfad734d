"""Shared fixtures: the shipped models, real images and a generated doorway clip.

Tests that need a model use the shipped pair in ``models/`` and skip, saying why, while it is
absent. ``MASKWATCH_TEST_MODELS=DIR`` points them at another folder holding
``face_detector.json`` / ``mask_classifier.json`` (to try a candidate model before shipping it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    return Path(os.environ.get("MASKWATCH_TEST_MODELS") or REPO / "models")


def _model(name: str, who: str) -> Path:
    sidecar = models_dir() / f"{name}.json"
    if not sidecar.is_file():
        pytest.skip(f"{sidecar} is not there yet (built by {who}); this test needs the shipped model")
    return sidecar


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def detector_json() -> Path:
    """The shipped detector's sidecar (skips while models/ has none)."""
    return _model("face_detector", "convert/ (detector conversion)")


@pytest.fixture(scope="session")
def classifier_json() -> Path:
    """The shipped classifier's sidecar (skips while models/ has none)."""
    return _model("mask_classifier", "convert/ (classifier training)")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (one real frontal unmasked face), BGR uint8 512x512."""
    pytest.importorskip("skimage")
    from agent.demo import astronaut_bgr

    return astronaut_bgr()


@pytest.fixture(scope="session")
def astronaut_face():
    """Where the astronaut's face is (pixels, x1 y1 x2 y2), checked by eye on the photo."""
    return (172.0, 62.0, 278.0, 180.0)


def _copy_model(src_json: Path, dst: Path, change: Callable[[Dict[str, Any]], None] = lambda m: None) -> Path:
    meta = json.loads(Path(src_json).read_text())
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(src_json).parent / meta["model_file"], dst / meta["model_file"])
    change(meta)
    out = dst / Path(src_json).name
    out.write_text(json.dumps(meta))
    return out


@pytest.fixture
def copy_model(tmp_path):
    """copy_model(sidecar, change=fn) -> a sidecar copy (with its model) in a temp folder, after
    ``change(meta)`` edited its metadata: for bad-model cases made from a real model."""
    count = [0]

    def make(src_json: Path, change: Callable[[Dict[str, Any]], None] = lambda m: None) -> Path:
        count[0] += 1
        return _copy_model(src_json, tmp_path / f"model{count[0]}", change)

    return make


@pytest.fixture(scope="session")
def models_config(tmp_path_factory, detector_json, classifier_json) -> Path:
    """A config file using the shipped models, alerts on stdout, no stats."""
    d = tmp_path_factory.mktemp("cfg")
    p = d / "config.yaml"
    p.write_text(
        "runtime:\n  camera: test-door\n  stats_interval_s: 0\n  state_dir: " + str(d) + "\n"
        f"detector:\n  model: {detector_json}\n"
        f"classifier:\n  model: {classifier_json}\n"
    )
    return p


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """A generated doorway clip: 3 unmasked people walking past one after another."""
    pytest.importorskip("skimage")
    from agent.demo import Person, make_clip

    people = [Person(masked=False, height=230), Person(masked=False, height=200, left_to_right=False),
              Person(masked=False, height=250)]
    return make_clip(tmp_path_factory.mktemp("clip") / "doorway.avi", people)
