"""convert.train.yunet: box coding, the teacher-guided assignment of positives, and a short run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.pipeline.detectors.yunet import decode_boxes, grid
from convert.data import detector as dd
from convert.train import yunet as ty

CELLS, STEPS = grid(320, 256, [8, 16, 32])
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"


def test_encode_inverts_decode():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, (len(CELLS), 4))
    boxes = decode_boxes(raw, CELLS, STEPS)
    np.testing.assert_allclose(ty.encode_boxes(boxes, CELLS, STEPS), raw, atol=1e-9)


def _teacher_with(box_at: dict) -> np.ndarray:
    """Teacher boxes: far away everywhere, ``box_at`` {cell: box} where given."""
    t = np.tile([[-100.0, -100.0, -90.0, -90.0]], (len(CELLS), 1))
    for c, b in box_at.items():
        t[c] = b
    return t


def test_positives_are_cells_inside_the_face_whose_teacher_box_fits_and_the_best_loose_ones():
    gt = np.array([[40.0, 40.0, 88.0, 100.0]])
    inside = [i for i, (c, s) in enumerate(zip(CELLS, STEPS)) if s == 16 and 40 <= (c[0] + 0.5) * 16 <= 88
              and 40 <= (c[1] + 0.5) * 16 <= 100]
    good, loose, bad = inside[0], inside[1], inside[2]
    teacher = _teacher_with({good: [42, 42, 88, 98], loose: [30, 50, 80, 110], bad: [0, 0, 10, 10],
                             0: [40, 40, 88, 100]})  # cell 0 is outside the face: never positive
    cfg = ty.TrainConfig()
    pos, face, skip = ty.assign(teacher, CELLS, STEPS, gt, np.array([False]), cfg)
    assert set(pos.tolist()) == {good, loose} and face.tolist() == [0, 0]
    assert not skip.any()
    # an ignored face: no positives, and its overlapping cells get no score loss
    pos, _, skip = ty.assign(teacher, CELLS, STEPS, gt, np.array([True]), cfg)
    assert pos.size == 0 and skip[good] and skip[loose] and not skip[bad]
    # no face, nothing
    assert ty.assign(teacher, CELLS, STEPS, np.zeros((0, 4)), np.zeros(0, bool), cfg)[0].size == 0


def test_targets_raise_positives_and_keep_the_teacher_elsewhere():
    gt = np.array([[40.0, 40.0, 88.0, 100.0]], np.float32)
    c = next(i for i, (cc, s) in enumerate(zip(CELLS, STEPS)) if s == 16 and tuple(cc) == (3, 4))
    t_boxes = np.zeros((1, len(CELLS), 4), np.float32)
    t_boxes[0, c] = ty.encode_boxes(gt, CELLS[c:c + 1], STEPS[c:c + 1])[0]
    t_scores = np.full((1, len(CELLS), 2), 0.1, np.float32)
    ex = dd.Example(np.zeros((256, 320, 3), np.uint8), gt, np.zeros((1, 6, 2)), np.zeros(1, bool), np.zeros(1, bool))
    t = ty.targets([t_scores, t_boxes, np.zeros((1, len(CELLS), 10))], [ex], CELLS, STEPS, ty.TrainConfig())
    assert t["pos"][0, c] == 1 and t["pos"].sum() >= 1
    assert (t["score_t"][0, c] == 1).all() and np.allclose(t["score_t"][0, t["pos"][0] == 0], 0.1)
    np.testing.assert_allclose(decode_boxes(t["box_t"][0, c:c + 1], CELLS[c:c + 1], STEPS[c:c + 1]), gt, atol=1e-4)


def test_batches_draw_scenes_by_their_weights_and_evenly_without():
    scenes = [dd.Scene(f"s{i}", Path(f"s{i}.jpg"), 10, 10, np.zeros((0, 4)), ()) for i in range(3)]

    class Draw(ty.Batches):  # the draws alone, no augmentation
        def __call__(self):
            return self.rng.choice(len(self.scenes), size=self.batch, p=self.p) if self.p is not None else None

    counts = np.bincount(Draw(scenes, [], None, 6000, 0, weights=np.array([1.0, 1.0, 4.0]))(), minlength=3)
    assert counts[2] == pytest.approx(4000, rel=0.06) and counts[0] == pytest.approx(1000, rel=0.15)
    assert ty.Batches(scenes, [], None, 4, 0).p is None  # even: the shipped recipe's own draws


@pytest.mark.tf
@pytest.mark.skipif(not (SHARED / "scenes-ilc2021").is_dir(), reason="../shared datasets not there")
def test_missed_faces_counts_what_the_untouched_model_does_not_find():
    pytest.importorskip("tensorflow")
    pytest.importorskip("onnx")
    from convert.ports import yunet_keras as yk

    scenes = [s for s in dd.read_scenes(SHARED, "train") if len(s.boxes)][:6]
    images = [dd.load_rgb(s.path) for s in scenes]
    model, _ = yk.build_keras(yk.DEFAULT_ONNX, (256, 320))
    missed = ty.missed_faces(model, scenes, images)
    big = [int(((s.boxes[:, 3] - s.boxes[:, 1]) >= 20).sum()) for s in scenes]
    assert missed.shape == (6,) and (missed >= 0).all() and (missed <= big).all() and sum(big) > missed.sum()
    # a face nobody could find: an annotation moved onto empty sky is always missed
    s0 = scenes[0]
    moved = dd.Scene(s0.image, s0.path, s0.width, s0.height, np.array([[0.0, 0.0, 30.0, 30.0]]), ("no_mask",))
    assert ty.missed_faces(model, [moved], images[:1]).tolist() == [1]


@pytest.mark.tf
@pytest.mark.skipif(not (SHARED / "scenes-ilc2021").is_dir(), reason="../shared datasets not there")
def test_a_short_run_trains_saves_and_names_the_next_command(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    pytest.importorskip("onnx")
    out = tmp_path / "ft.keras"
    rc = ty.main(["--steps", "2", "--batch", "2", "--log-every", "1", "--holdout", "0.005", "--out", str(out),
                  "--data-root", str(SHARED)])
    assert rc == 0 and out.is_file()
    info = json.loads(out.with_suffix(".train.json").read_text())
    assert info["steps"] == 2 and len(info["history"]) == 2 and np.isfinite(info["history"][-1]["loss"])
    assert 0 < info["threshold"] <= 1
    assert f"maskwatch-convert yunet --keras {out}" in capsys.readouterr().out
    assert info["command"] == "maskwatch-convert train-yunet --steps 2 --batch 2 --holdout 0.005"


def test_rebuild_command_names_the_options_that_change_the_weights():
    """The line the .train.json records (and the model card prints): options off their defaults that
    change what is trained, not paths, threads or logging; parsed again it trains the same run."""
    import argparse

    p = argparse.ArgumentParser()
    ty.add_arguments(p)
    assert ty.rebuild_command(p.parse_args([])) == "maskwatch-convert train-yunet"
    a = p.parse_args(["--steps", "500", "--synthetic-masks", "0.4", "--hard-examples", "1", "--threads", "1",
                      "--out", "x.keras", "--log-every", "5", "--input", "448x352"])
    line = ty.rebuild_command(a)
    assert line == "maskwatch-convert train-yunet --input 448x352 --steps 500 --synthetic-masks 0.4 --hard-examples 1.0"
    again = p.parse_args(line.split()[2:])
    assert all(getattr(again, k) == getattr(a, k) for k in ty.REBUILD_OPTIONS)


def test_the_cards_rebuild_line_is_the_recorded_training_command():
    from convert.export import yunet_detector as yd

    train = {"steps": 2000, "seconds": 1320, "train_images": 1219, "held_out_images": 135,
             "config": {"steps": 2000, "batch": 16, "lr": 0.0001, "seed": 0, "box_loss": "smooth_l1", "box_weight": 2.0},
             "command": "maskwatch-convert train-yunet --hard-examples 1.0"}
    line = yd._rebuild({"training": train}, 0.5)
    assert "`maskwatch-convert train-yunet --hard-examples 1.0` then `maskwatch-convert yunet --keras" in line
    del train["command"]  # a run from before the command was recorded: its config, spelled out
    line = yd._rebuild({"training": train}, 0.5)
    assert ("`maskwatch-convert train-yunet --steps 2000 --batch 16 --lr 0.0001 --seed 0 --box-loss smooth_l1"
            " --box-weight 2.0` then") in line


@pytest.mark.skipif(not (SHARED / "scenes-ilc2021").is_dir(), reason="../shared datasets not there")
def test_train_faces_get_the_untouched_models_keypoints_inside_their_boxes():
    from convert.ports import yunet_keras as yk

    if not yk.DEFAULT_ONNX.is_file():
        pytest.skip(f"{yk.DEFAULT_ONNX} not there (../shared)")
    scenes = [s for s in dd.read_scenes(SHARED, "train") if len(s.boxes)][:12]
    images = [dd.load_rgb(s.path) for s in scenes]
    info = ty.label_keypoints(scenes, images, yk.DEFAULT_ONNX, log=lambda _m: None)
    assert info["faces"] == sum(len(s.boxes) for s in scenes) and info["with_keypoints"] >= 0.8 * info["faces"]
    for s in scenes:
        assert s.keypoints.shape == (len(s.boxes), 5, 2)
        for box, kps, ok in zip(s.boxes, s.keypoints, s.keypoints_ok):
            if not ok:
                assert np.isnan(kps).all()
                continue
            w, h = box[2:] - box[:2]
            # in the face's box (annotators' boxes are narrower than YuNet's: a margin), eyes above the mouth
            assert (kps[:, 0] > box[0] - 0.3 * w).all() and (kps[:, 0] < box[2] + 0.3 * w).all()
            assert (kps[:, 1] > box[1] - 0.2 * h).all() and (kps[:, 1] < box[3] + 0.2 * h).all()
            assert kps[:2, 1].mean() < kps[3:, 1].mean()


def test_synthetic_masks_without_templates_name_the_file_and_the_fix(tmp_path, capsys):
    (tmp_path / "scenes-ilc2021").mkdir()
    for name, header in (("images.csv", "image,split,width,height"), ("boxes.csv", "image,xmin,ymin,xmax,ymax,label")):
        (tmp_path / "scenes-ilc2021" / name).write_text(header + "\n")
    assert ty.main(["--synthetic-masks", "0.4", "--data-root", str(tmp_path), "--out", str(tmp_path / "m.keras")]) == 2
    err = capsys.readouterr().err
    assert "masks.cfg" in err and "--synthetic-masks 0" in err and "Traceback" not in err
    assert not (tmp_path / "m.keras").exists()


def test_bad_input_size_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        ty.main(["--input", "320x240"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --input" in err and "multiples of 32" in err


def test_giou_of_codes_is_the_giou_of_the_decoded_boxes():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 0.5, (1, len(CELLS), 4)), rng.normal(0, 0.5, (1, len(CELLS), 4))
    got = ty.giou(tf, tf.constant(a, tf.float32), tf.constant(b, tf.float32), tf.constant(CELLS, tf.float32),
                  tf.constant(STEPS[:, None], tf.float32)).numpy()[0]
    from agent.pipeline.boxes import iou_matrix

    ba, bb = decode_boxes(a[0], CELLS, STEPS), decode_boxes(b[0], CELLS, STEPS)
    for i in (0, 500, len(CELLS) - 1):
        iou = iou_matrix(ba[i:i + 1], bb[i:i + 1])[0, 0]
        hull = np.prod(np.maximum(ba[i, 2:], bb[i, 2:]) - np.minimum(ba[i, :2], bb[i, :2]))
        inter = iou / (1 + iou) * (np.prod(ba[i, 2:] - ba[i, :2]) + np.prod(bb[i, 2:] - bb[i, :2]))
        union = np.prod(ba[i, 2:] - ba[i, :2]) + np.prod(bb[i, 2:] - bb[i, :2]) - inter
        assert got[i] == pytest.approx(iou - (hull - union) / hull, abs=1e-4)
    same = ty.giou(tf, tf.constant(a, tf.float32), tf.constant(a, tf.float32), tf.constant(CELLS, tf.float32),
                   tf.constant(STEPS[:, None], tf.float32)).numpy()
    assert np.allclose(same, 1.0, atol=1e-5)
