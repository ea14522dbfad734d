"""`maskwatch check-config`: loads the models; a bad sidecar is one clear error."""

from __future__ import annotations


import pytest

from agent.cli import main


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
    ("classifier", "labels", ["mask", "no_mask"], "`labels` has 2 names but the model's `logits` output gives 4 values"),
    ("classifier", "labels", ["mask", "mask", "no_mask", "not_face"], "must be distinct and hold every `non_face_labels`"),
    ("classifier", "non_face_labels", ["background"], "must be distinct and hold every `non_face_labels` ['background']"),
    ("classifier", "crop.shift_y", 5, "crop.shift_y must be <= 1"),
    ("classifier", "output", None, "missing key `output`"),
    ("face_detector_yunet", "decoding.type", "yolo", "'yolo' is not a known detector family"),
    ("face_detector_yunet", "decoding.nms", None, "missing key `decoding.nms`"),
    ("face_detector_yunet", "decoding.strides", [8, 16, 0], "decoding.strides"),
    ("face_detector_yunet", "decoding.strides", [8, 16], "the decoding gives 1600 cells at 320x256 but `outputs.scores` has 1680"),
    ("face_detector_yunet", "input.width", 300, "the model cannot run at `input.height` x `input.width` 256x300"),
    ("face_detector_yunet", "input.normalization.mean", [0, 0], "`input.normalization.mean` has 2 values; it needs 1 or `input.channels` (3)"),
    ("face_detector_yunet", "input.normalization.std", [0, 1, 1], "`input.normalization.std` has a 0"),
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


def test_alert_labels_the_classifier_never_gives_are_one_clear_error(tmp_path, capsys, models_config):
    """`alerts.labels` naming a label the classifier does not have would never alert: check-config
    says so (it was caught only when `run` built its pipeline)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(models_config.read_text() + "alerts:\n  labels: [no_mask, nomask]\n")
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "`alerts.labels`: ['nomask'] not among the classifier's labels" in err and "fix:" in err
    assert "Traceback" not in err
