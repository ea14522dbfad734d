"""bench/ scripts print figures, not pass/fail; these tests keep them runnable: every project name
they import (most lazily, inside main) still exists, each answers --help, and the ensemble bench
gives the figures it claims on the shipped classifier."""

from __future__ import annotations

import ast
import importlib
import json
import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted((REPO / "bench").glob("*.py"))
PROJECT = ("agent", "convert")


def project_imports(path: Path):
    """(module, name, line) of every ``from agent... / convert... import name`` in ``path``, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


@pytest.mark.parametrize("path", BENCHES + sorted((REPO / "agent").rglob("*.py")) + sorted((REPO / "convert").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_lazy_project_import_resolves(path):
    """A function moved or renamed breaks imports inside functions only when that code runs; this
    finds them all without running it (bench/ and lazily imported code paths are not all tested)."""
    missing = []
    for module, name, line in project_imports(path):
        mod = importlib.import_module(module)
        submodule = hasattr(mod, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None
        if not hasattr(mod, name) and not submodule:
            missing.append(f"{path.name}:{line}: from {module} import {name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: p.name)
def test_bench_answers_help(path):
    r = subprocess.run([sys.executable, str(path), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage:")


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ensemble_of_one_model_twice_is_that_model(tmp_path, classifier_json, astronaut, astronaut_face, capsys):
    """Real crops (the astronaut's face at a few framings, and background): a model listed twice has
    no spread and its ensemble scores what it scores alone."""
    import cv2

    from convert.data import classifier as cd

    size = int(json.loads(classifier_json.read_text())["input"]["height"])
    x1, y1, x2, y2 = (int(v) for v in astronaut_face)
    crops, labels = [], []
    for d in (-12, 0, 12):
        face = astronaut[max(0, y1 + d): y2 + d, max(0, x1 - d): x2 + d]
        crops.append(cv2.resize(face, (size, size))[..., ::-1])
        labels.append(cd.LABELS.index("no_mask"))
    for x, y in ((0, 400), (400, 0), (380, 400)):
        crops.append(cv2.resize(astronaut[y: y + 100, x: x + 100], (size, size))[..., ::-1])
        labels.append(cd.LABELS.index("not_face"))
    n = len(crops)
    x = np.ascontiguousarray(np.stack(crops))
    split = cd.CropSet(x, np.asarray(labels), np.asarray(["test"] * n), np.asarray(["astronaut.png"] * n), np.full(n, 100.0))
    crops_path = tmp_path / "crops.npz"
    cd.save_crops(crops_path, split, split, {})
    bench = _load(REPO / "bench" / "classifier_ensemble.py")
    model = str(classifier_json.with_suffix(".tflite"))
    assert bench.main([model, model, "--crops", str(crops_path)]) == 0
    out = capsys.readouterr().out
    spread = next(line for line in out.splitlines() if line.startswith("spread"))
    assert set(spread.split()[5:]) == {"0.0"}
    lines = [line for line in out.splitlines() if line.startswith(model[-48:].strip()) or line.startswith("mean of")]
    assert len(lines) == 3 and lines[0].split()[1:] == lines[2].split()[5:]
    # One cache per model (models of other input sizes): the same faces pass, other faces are refused.
    other = tmp_path / "other.npz"
    cd.save_crops(other, split, split, {})
    assert bench.main([model, model, "--crops", str(crops_path), "--crops", str(other)]) == 0
    assert capsys.readouterr().out == out
    shuffled = cd.CropSet(x[::-1].copy(), split.y[::-1].copy(), split.source, split.image, split.box_h)
    cd.save_crops(other, shuffled, shuffled, {})
    with pytest.raises(SystemExit) as stop:
        bench.main([model, model, "--crops", str(crops_path), "--crops", str(other)])
    assert stop.value.code == 2 and "not the same faces" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main([model, model, model, "--crops", str(crops_path), "--crops", str(other)])
    # Same labels and image names, two faces swapped: only the box heights tell them apart.
    heights = np.arange(n, dtype=np.float32) + 50
    swapped = heights.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    mine = cd.CropSet(x, split.y, split.source, split.image, heights)
    cd.save_crops(crops_path, mine, mine, {})
    theirs = cd.CropSet(x, split.y, split.source, split.image, swapped)
    cd.save_crops(other, theirs, theirs, {})
    with pytest.raises(SystemExit) as stop:
        bench.main([model, model, "--crops", str(crops_path), "--crops", str(other)])
    assert stop.value.code == 2 and "not the same faces" in capsys.readouterr().err


def test_prior_shift_is_chosen_on_one_half_and_scored_on_the_other():
    """A shift that fixes a class is found from either half and scores on the other; with nothing
    to fix, the zero shift (listed first) is kept."""
    bench = _load(REPO / "bench" / "classifier_prior_shift.py")
    y = np.array([0] * 40 + [1] * 40 + [2] * 40)
    plain = y.copy()
    plain[40:60] = 0  # half the incorrect_mask faces called mask without the shift
    shifted, plain_rows = bench.cross_fit([plain, y.copy()], y, reps=5, seed=0)
    np.testing.assert_allclose(shifted.mean(0), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(plain_rows.mean(0)[[0, 2]], [1.0, 1.0])
    assert plain_rows.mean(0)[1] == pytest.approx(0.5, abs=0.15)
    worse = y.copy()
    worse[:10] = 2
    shifted, _ = bench.cross_fit([y.copy(), worse], y, reps=3, seed=0)
    np.testing.assert_allclose(shifted.mean(0), [1.0, 1.0, 1.0])
    logp = np.log(np.array([[0.5, 0.4, 0.05, 0.05]]))
    assert [int(p[0]) for p in bench.shifted_predictions(logp, [(0.0, 0.0), (0.0, 0.5)])] == [0, 1]
    assert bench.margin(np.array([0.98, np.nan, 0.99])) == pytest.approx(0.01)


def test_masked_photo_variants_paste_masks_where_the_placement_says(astronaut, astronaut_face):
    """The masked-photos bench on the astronaut: keypoints from the shipped original detector, each
    placement changes the lower face, a lowered mask leaves the nose tip as it was, and the photo
    itself is the first variant, untouched."""
    from convert.data.masks import load_mask_templates
    from convert.paths import DEFAULT_DATA_ROOT

    root = DEFAULT_DATA_ROOT
    if not (root / "mask-templates" / "masks.cfg").is_file():
        pytest.skip("../shared/datasets/mask-templates not here")
    bench = _load(REPO / "bench" / "masked_photos.py")
    (kps,) = bench.face_keypoints(astronaut, [astronaut_face], [REPO / "models" / "face_detector.json"])
    assert kps is not None and kps.shape == (6, 2)
    templates = load_mask_templates(root, names=("surgical",))
    out = bench.variants(astronaut, [kps], templates, seed=0)
    assert [(p, t) for p, t, _ in out] == [("none", "-"), ("correct", "surgical"), ("under_nose", "surgical"), ("chin", "surgical")]
    assert out[0][2] is astronaut
    nose = tuple(int(v) for v in kps[2])
    mouth = tuple(int(v) for v in kps[3])
    changed = {p: np.abs(img.astype(int) - astronaut.astype(int)).sum(axis=2) > 30 for p, _, img in out[1:]}
    assert changed["correct"][nose[1], nose[0]] and changed["correct"][mouth[1], mouth[0]]
    assert not changed["under_nose"][nose[1] - 3, nose[0]]
    assert not changed["chin"][nose[1], nose[0]]
    assert all(m.sum() > 500 for m in changed.values())


def test_annotator_agreement_pairs_a_photo_stored_twice_and_maps_its_boxes(tmp_path):
    """The same picture at half size is a pair (boxes scaled onto the first copy), another is not."""
    aa = _load(REPO / "bench" / "annotator_agreement.py")
    from convert.data.detector import Scene

    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (9, 9), 3)
    other = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (9, 9), 3)
    for name, img in (("a.png", big), ("b.png", cv2.resize(big, (160, 120), interpolation=cv2.INTER_AREA)), ("c.png", other)):
        cv2.imwrite(str(tmp_path / name), img)
    face = np.array([[100, 60, 160, 140]], np.float32)
    a = Scene("a.png", tmp_path / "a.png", 320, 240, face, ("mask",))
    b = Scene("b.png", tmp_path / "b.png", 160, 120, (face + [0, 10, 0, 10]) / 2, ("incorrect_mask",))  # 10 px lower
    c = Scene("c.png", tmp_path / "c.png", 320, 240, face, ("mask",))
    pairs = aa.duplicate_pairs([a, b, c], coarse=0.97, fine=0.95)
    assert [(x.image, y.image) for x, y in pairs] == [("a.png", "b.png")]
    (v, la, lb), = aa.face_pairs(a, b, min_height=40)
    assert v == pytest.approx(70 / 90) and (la, lb) == ("mask", "incorrect_mask")
    assert aa.face_pairs(a, b, min_height=100) == []  # the face is 80 px tall
