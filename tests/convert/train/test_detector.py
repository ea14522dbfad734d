"""Detector fine-tuning: the loss, the schedule, the hold-out split, and a tiny real training run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convert.data import detector as dd
from convert.train import detector as td
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT


def test_learning_rate_warms_up_then_decays():
    cfg = td.TrainConfig(lr=1e-3, warmup_steps=10, final_lr_fraction=0.1)
    lrs = [td.learning_rate(s, 100, cfg) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)


def test_holdout_split_is_disjoint_and_seeded():
    scenes = [dd.Scene(f"{i}.jpg", None, 10, 10, np.zeros((0, 4)), ()) for i in range(50)]
    tr, ho = td.split_holdout(scenes, 0.1, 0)
    assert len(ho) == 5 and len(tr) == 45
    assert not {s.image for s in tr} & {s.image for s in ho}
    assert [s.image for s in td.split_holdout(scenes, 0.1, 0)[1]] == [s.image for s in ho]


@pytest.mark.tf
def test_giou_loss_is_zero_on_target_and_grows_with_misfit():
    tf = pytest.importorskip("tensorflow")
    scale = (192.0, 144.0, 192.0, 144.0)
    t = np.zeros((1, 4, dd.TARGET_DIM), np.float32)
    t[0, :, dd.T_CLS] = [1, 1, 0, -1]  # two positives; a negative and an ignored anchor never count
    t[0, :, 2] = [40.0, 400.0, 10.0, 10.0]  # widths (raw units), a small and a large face
    t[0, :, 3] = [30.0, 300.0, 10.0, 10.0]
    reg = t[..., : dd.REG_DIM].copy()
    reg[0, 2:, :4] = 999.0  # far off, but not positive
    g = lambda r: float(td.giou_loss(tf, tf.constant(r), tf.constant(t), scale))  # noqa: E731
    assert g(reg) == pytest.approx(0.0, abs=1e-6)
    wide = reg.copy()
    wide[0, :2, 2] *= 1.5  # 50 % too wide, like the loose detections of turned faces
    shifted = reg.copy()
    shifted[0, :2, 0] += 0.25 * reg[0, :2, 2]  # a quarter width off: same IoU on the small and the large face
    assert 0.2 < g(wide) < 0.5 and 0.2 < g(shifted) < 0.5
    one = shifted.copy()
    one[0, 1, 0] = reg[0, 1, 0]
    assert g(one) == pytest.approx(g(shifted) / 2, rel=1e-5)
    apart = reg.copy()
    apart[0, :2, 0] += 3 * reg[0, :2, 2]  # no overlap: GIoU < 0, loss > 1
    assert g(apart) > 1.0


def test_loss_terms():
    tf = pytest.importorskip("tensorflow")
    n = 50
    t = np.zeros((2, n, dd.TARGET_DIM), np.float32)
    t[..., dd.T_SIZE] = 1.0
    t[0, :2, dd.T_CLS] = 1  # two positives in image 0, none in image 1
    t[0, 2:5, dd.T_CLS] = -1  # ignored
    t[0, :2, dd.T_SIZE] = 20.0
    t[0, :2, : dd.REG_DIM] = np.arange(dd.REG_DIM)
    t[0, 0, dd.T_KPW] = 1
    reg = t[..., : dd.REG_DIM].copy()
    logits = np.full((2, n, 1), -5.0, np.float32)
    logits[0, :2] = 5.0
    logits[0, 2:5] = 9.0  # ignored anchors never cost anything
    logits[1, 7] = 3.0  # one hard negative in image 1
    cfg = td.TrainConfig(neg_ratio=3, min_negatives=4)
    c, b, k = (float(v) for v in td.loss_terms(tf, tf.constant(reg), tf.constant(logits), tf.constant(t), cfg))
    assert b == pytest.approx(0.0) and k == pytest.approx(0.0)
    ce = lambda z, y: np.log1p(np.exp(-z)) if y else np.log1p(np.exp(z))  # noqa: E731
    # image 0: 2 positives + 6 hardest negatives (all at -5); image 1: 4 negatives incl. the 3.0 one
    want = (2 * ce(5, 1) + 6 * ce(-5, 0) + ce(3, 0) + 3 * ce(-5, 0)) / 2
    assert c == pytest.approx(want, rel=1e-4)
    # a box off by 10 % of the face costs the same for any face size
    reg2 = reg.copy()
    reg2[0, :2, 0] += 2.0  # 2 px on a 20 px face
    _, b2, _ = td.loss_terms(tf, tf.constant(reg2), tf.constant(logits), tf.constant(t), cfg)
    t3, reg3 = t.copy(), reg.copy()
    t3[0, :2, dd.T_SIZE] = 100.0
    reg3[0, :2, 0] += 10.0  # 10 px on a 100 px face
    _, b3, _ = td.loss_terms(tf, tf.constant(reg3), tf.constant(logits), tf.constant(t3), cfg)
    assert float(b2) == pytest.approx(float(b3)) and float(b2) > 0


@pytest.mark.tf
def test_iou_aware_score_targets_the_boxs_own_iou():
    """--iou-score: a positive whose box is 50 % too wide (IoU 2/3) is trained toward a score of 2/3,
    a tight one toward 1 (the plain loss); negatives are untouched."""
    tf = pytest.importorskip("tensorflow")
    scale = (192.0, 144.0, 192.0, 144.0)
    n = 20
    t = np.zeros((1, n, dd.TARGET_DIM), np.float32)
    t[..., dd.T_SIZE] = 1.0
    t[0, 0, dd.T_CLS] = 1
    t[0, 0, :4] = [5.0, -3.0, 40.0, 30.0]
    logits = np.full((1, n, 1), -5.0, np.float32)
    logits[0, 0] = 2.0
    wide = t[..., : dd.REG_DIM].copy()
    wide[0, 0, 2] *= 1.5
    sce = lambda z, y: max(z, 0) - z * y + np.log1p(np.exp(-abs(z)))  # noqa: E731
    cfg = td.TrainConfig(neg_ratio=3, min_negatives=4, iou_score=True)
    args = (tf.constant(logits), tf.constant(t), cfg, scale)
    c_wide = float(td.loss_terms(tf, tf.constant(wide), *args)[0])
    assert c_wide == pytest.approx(sce(2.0, 2 / 3) + 4 * sce(-5.0, 0), rel=1e-4)
    c_tight = float(td.loss_terms(tf, tf.constant(t[..., : dd.REG_DIM]), *args)[0])
    plain = float(td.loss_terms(tf, tf.constant(wide), tf.constant(logits), tf.constant(t), td.TrainConfig(neg_ratio=3, min_negatives=4))[0])
    assert c_tight == pytest.approx(plain, rel=1e-5)
    with pytest.raises(ValueError, match="scale"):
        td.loss_terms(tf, tf.constant(wide), tf.constant(logits), tf.constant(t), cfg)


def test_missing_inputs_are_one_clear_error(tmp_path, capsys):
    rc = td.main(["--data-root", str(tmp_path), "--steps", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "Traceback" not in err


def _data_root_without(tmp_path, missing: str):
    """A data root of links to ../shared/datasets with one part (``mask-templates`` or a faces/ folder) left out."""
    src = DEFAULT_DATA_ROOT
    if not (src / dd.SCENES / "boxes.csv").is_file():
        pytest.skip("datasets not available")
    root = tmp_path / "data"
    root.mkdir()
    for name in (dd.SCENES, "mask-templates"):
        if name != missing:
            (root / name).symlink_to(src / name)
    (root / "faces").mkdir()
    for folder in td.COMPOSITE_FOLDERS:
        if f"faces/{folder}" != missing:
            (root / "faces" / folder).parent.mkdir(parents=True, exist_ok=True)
            (root / "faces" / folder).symlink_to(src / "faces" / folder)
    return root


@pytest.mark.parametrize("missing, option, args", [("mask-templates", "--synthetic-masks 0", []),
                                                   ("faces/web/mask", "--composite 0", ["--composite", "0.3"])])
def test_missing_augmentation_data_is_one_clear_error(tmp_path, capsys, missing, option, args):
    root = _data_root_without(tmp_path, missing)
    labels = tmp_path / "labels.npz"
    labels.write_bytes(b"")  # present: the original model is not needed for keypoint labels
    rc = td.main(["--data-root", str(root), "--labels", str(labels), "--steps", "1", *args])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert missing in err and option in err


def test_baseline_scores_are_cached_by_content(tmp_path):
    """The original models' scores are reused only for the same model bytes, images and budget."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"one")
    scenes = [dd.Scene(f"{i}.jpg", None, 10, 10, np.zeros((0, 4)), ()) for i in range(6)]
    key = td.score_key([model], scenes[:2], scenes[2:], 0.05)
    assert key == td.score_key([model], scenes[:2], scenes[2:], 0.05)
    assert key != td.score_key([model], scenes[:3], scenes[3:], 0.05)
    assert key != td.score_key([model], scenes[:2], scenes[2:], 0.1)
    moved = [dd.Scene(s.image, None, 10, 10, np.array([[1.0, 1.0, 5.0, 5.0]]), ("mask",)) if i == 4 else s
             for i, s in enumerate(scenes)]
    assert key != td.score_key([model], moved[:2], moved[2:], 0.05)  # an annotation changed
    model.write_bytes(b"two")
    assert key != td.score_key([model], scenes[:2], scenes[2:], 0.05)

    calls = []

    def compute():
        calls.append(1)
        return {"threshold": 0.7, "curve": {"recall": np.arange(3.0)}}

    first = td.cached_score(key, compute, tmp_path / "c", log=lambda s: None)
    again = td.cached_score(key, compute, tmp_path / "c", log=lambda s: None)
    assert len(calls) == 1 and again["threshold"] == 0.7
    np.testing.assert_array_equal(again["curve"]["recall"], first["curve"]["recall"])
    (tmp_path / "c" / f"{key}.pkl").write_bytes(b"torn")  # an unreadable file is recomputed, not fatal
    assert td.cached_score(key, compute, tmp_path / "c", log=lambda s: None)["threshold"] == 0.7
    assert len(calls) == 2


@pytest.mark.slow
def test_tiny_training_run(tmp_path):
    """A few real steps on a few real scenes, scored by the one scorer (needs the Keras rebuild)."""
    pytest.importorskip("tensorflow")
    if not list(td.KERAS_DIR.glob("*full_range*.keras")):
        pytest.skip("Keras rebuild of BlazeFace full range not built")
    baseline = REPO_ROOT / "models" / "face_detector.json"
    if not baseline.is_file():
        pytest.skip("baseline detector not built")
    out = tmp_path / "ft.keras"
    report = tmp_path / "report.json"
    rc = td.main(["--steps", "4", "--batch", "2", "--limit", "12", "--holdout", "0.25", "--out", str(out),
                  "--labels", str(tmp_path / "labels.npz"), "--report", str(report),
                  "--score-cache", str(tmp_path / "scores")])
    assert rc == 0 and out.is_file()
    rep = json.loads(report.read_text())
    assert rep["train"]["steps"] == 4
    ft = rep["val"]["fine-tuned float"]["at_threshold"]
    assert 0 < ft["threshold"] < 1 and ft["images"] == 12
    assert (tmp_path / f"{td.STEM}_pr.png").is_file()


def test_input_size_option():
    import argparse

    assert td._wh("192x144") == (192, 144) and td._wh("256X192") == (256, 192)
    for bad in ("192", "190x144", "x", "0x16"):
        with pytest.raises(argparse.ArgumentTypeError, match="192x144|multiples of 16"):
            td._wh(bad)
    assert td.default_input("full") == (192, 192) and td.default_input("short") == (128, 128)


def test_skip_blocks_option_lists_add_layers():
    import argparse

    p = argparse.ArgumentParser()
    td.add_arguments(p)
    assert p.parse_args(["--skip-blocks", "a_Relu,b_Relu"]).skip_blocks == ["a_Relu", "b_Relu"]
    assert p.parse_args([]).skip_blocks == []


def test_target_sidecar_follows_variant_and_size():
    base = json.loads((REPO_ROOT / "models" / "face_detector.json").read_text())
    side = td.target_sidecar(base, "short", (192, 144))
    assert (side["input"]["width"], side["input"]["height"]) == (192, 144)
    dec = side["decoding"]
    assert dec["scale"] == [192, 144, 192, 144] and dec["num_boxes"] == 1512
    assert (dec["anchors"]["input_size_width"], dec["anchors"]["input_size_height"]) == (192, 144)
    assert side["outputs"]["regressors"]["shape"] == [1, 1512, 16]
    assert side["input"]["normalization"] == base["input"]["normalization"]
    assert "short_range" in side["provenance"]["source_model"]
    ft = td.ft_sidecar(side, 0.61234, {"steps": 1}, {})
    assert ft["decoding"]["default_min_score"] == 0.6123 and ft["decoding"]["box_adjust"]["sw"] == 1.0
    assert ft["name"].endswith("-ft") and "192x144" in ft["name"]
    # the square full-range default is the baseline's own contract
    full = td.target_sidecar(base, "full", (192, 192))
    assert full["decoding"]["anchors"] == base["decoding"]["anchors"] and full["decoding"]["scale"] == [192] * 4
