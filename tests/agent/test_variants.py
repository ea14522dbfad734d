"""runtime.precision: a sidecar's pinned variants, the timed auto choice, explicit choices, refusals."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.model import ModelError, load_model
from agent.variants import choose_model

PROBE_S = 0.05  # short: the fake slow variant sleeps far longer than any real difference


def fp16_of(sidecar: Path) -> Path:
    """The float16 variant's sidecar the shipped int8 one pins (skips while models/ has none)."""
    meta = json.loads(sidecar.read_text())
    pin = (meta.get("variants") or {}).get("float16")
    if not pin:
        pytest.skip(f"{sidecar} pins no float16 variant yet (maskwatch-convert float16 --stem {sidecar.stem})")
    return sidecar.parent / pin["sidecar"]


@pytest.fixture
def model_copy(tmp_path, detector_json):
    """The detector's int8 and float16 files, copied to a temp folder, for spoiling one of them."""
    meta = json.loads(detector_json.read_text())
    variant = fp16_of(detector_json)
    for side in (detector_json, variant):
        shutil.copy(side, tmp_path / side.name)
        shutil.copy(side.parent / json.loads(side.read_text())["model_file"], tmp_path)
    assert meta["variants"]["float16"]["sidecar"] == variant.name
    return tmp_path / detector_json.name, tmp_path / variant.name


class SlowInterpreter:
    """An interpreter whose invoke sleeps first: a variant that runs slowly on this host."""

    def __init__(self, interpreter, delay_s: float = 0.02) -> None:
        self._it = interpreter
        self._delay = delay_s

    def __getattr__(self, name):
        return getattr(self._it, name)

    def invoke(self) -> None:
        time.sleep(self._delay)
        self._it.invoke()


def slow_loader(slow_precision: str):
    """load_model, with the ``slow_precision`` model's invoke made slow."""
    def load(sidecar, **kwargs):
        model = load_model(sidecar, **kwargs)
        if model.precision == slow_precision:
            model.interpreter = SlowInterpreter(model.interpreter)
        return model
    return load


@pytest.mark.parametrize("slow, kept", [("float16", "int8"), ("int8", "float16")])
def test_auto_times_both_variants_and_the_slow_one_loses(detector_json, slow, kept):
    fp16_of(detector_json)
    choice = choose_model(detector_json, "detector", precision="auto", probe_s=PROBE_S, load=slow_loader(slow))
    assert choice.model.precision == kept
    assert set(choice.timings_ms) == {"int8", "float16"}
    assert choice.timings_ms[slow] >= 20.0 and choice.timings_ms[slow] > choice.timings_ms[kept]  # the 20 ms sleep
    text = choice.describe()
    assert text.startswith(f"{kept} ({choice.model.model_path.name}): auto (2 timed for 0.05 s at 320x256, 1 thread(s)):"
                           " the fastest; median invoke int8 ")  # the choice and both times, for the log
    assert f"float16 {choice.timings_ms['float16']:.2f} ms" in text


def test_the_auto_choice_is_logged_with_both_times(caplog, detector_json):
    fp16_of(detector_json)
    with caplog.at_level(logging.DEBUG, logger="maskwatch.model"):
        choice = choose_model(detector_json, "detector", probe_s=PROBE_S)
        choose_model(detector_json, "detector", precision="int8")  # the config decided: debug only
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "maskwatch.model"]
    assert records[0] == (logging.INFO, f"detector: {choice.describe()}")
    assert "median invoke int8 " in records[0][1] and ", float16 " in records[0][1]
    assert records[1][0] == logging.DEBUG and "runtime.precision: int8" in records[1][1]


def test_auto_on_the_classifier_times_both_too(classifier_json):
    fp16_of(classifier_json)
    choice = choose_model(classifier_json, "classifier", precision="auto", probe_s=PROBE_S, load=slow_loader("int8"))
    assert choice.model.precision == "float16" and choice.model.model_path.name == "mask_classifier.fp16.tflite"


def test_an_explicit_precision_or_file_wins_untimed(detector_json):
    variant = fp16_of(detector_json)
    slow_fp16 = slow_loader("float16")
    pinned = choose_model(detector_json, "detector", precision="float16", load=slow_fp16)
    assert pinned.model.precision == "float16" and pinned.timings_ms == {}
    assert "runtime.precision: float16" in pinned.describe()
    # naming the variant's own sidecar: it pins no variants, so it runs as named even under auto
    named = choose_model(variant, "detector", precision="auto", load=slow_fp16)
    assert named.model.sidecar_path == variant and named.timings_ms == {}
    int8 = choose_model(detector_json, "detector", precision="int8")
    assert int8.model.model_path.name == "face_detector_yunet.tflite" and int8.timings_ms == {}


def test_a_variant_whose_file_is_not_the_pinned_build_is_refused_naming_it(model_copy):
    primary, variant = model_copy
    tflite = variant.parent / json.loads(variant.read_text())["model_file"]
    tflite.write_bytes(tflite.read_bytes() + b"\0")  # the file no longer matches any sidecar
    with pytest.raises(ModelError) as e:
        choose_model(primary, "detector", precision="auto", probe_s=PROBE_S)
    assert str(tflite) in str(e.value) and "sha256" in str(e.value) and "fix:" in str(e.value)


def test_a_variant_sidecar_of_another_build_is_refused_naming_the_pin(model_copy):
    primary, variant = model_copy
    meta = json.loads(primary.read_text())
    meta["variants"]["float16"]["model_sha256"] = "0" * 64  # pinned a build that is not there
    primary.write_text(json.dumps(meta))
    with pytest.raises(ModelError) as e:
        choose_model(primary, "detector", precision="float16")
    msg = str(e.value)
    assert "face_detector_yunet.fp16.tflite" in msg and "`variants.float16.model_sha256`" in msg
    assert "maskwatch-convert float16 --stem face_detector_yunet" in msg


def test_a_missing_pinned_variant_names_it_and_the_fix(model_copy):
    primary, variant = model_copy
    variant.unlink()
    with pytest.raises(ModelError) as e:
        choose_model(primary, "detector", precision="auto")
    msg = str(e.value)
    assert msg.startswith(f"{variant}: missing, pinned by {primary} as `variants.float16`")
    assert "runtime.precision: int8" in msg


def test_a_precision_the_model_lacks_names_the_key_and_the_fix(model_copy):
    primary, _ = model_copy
    meta = json.loads(primary.read_text())
    del meta["variants"]
    primary.write_text(json.dumps(meta))
    with pytest.raises(ModelError) as e:
        choose_model(primary, "detector", precision="float16")
    msg = str(e.value)
    assert str(primary) in msg and "`runtime.precision` is float16" in msg and "it has: int8" in msg
    assert "fix: build it (maskwatch-convert float16 --stem face_detector_yunet)" in msg


def config_for(tmp_path: Path, detector: Path, classifier: Path, precision: str) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"runtime:\n  state_dir: {tmp_path}\n  precision: {precision}\ndetector:\n  model: {detector}\n"
                   f"classifier:\n  model: {classifier}\n")
    return cfg


def test_check_config_reports_the_variant_run_and_those_pinned(capsys, tmp_path, detector_json, classifier_json):
    fp16_of(detector_json)
    assert main(["check-config", str(config_for(tmp_path, detector_json, classifier_json, "float16"))]) == 0
    out = capsys.readouterr().out
    assert "runs float16 (face_detector_yunet.fp16.tflite): runtime.precision: float16" in out
    assert "variants" in out and "int8 face_detector_yunet.json, float16 face_detector_yunet.fp16.json" in out
    assert "int8 mask_classifier.json, float16 mask_classifier.fp16.json" in out


def test_check_config_refuses_a_spoiled_variant_without_a_traceback(capsys, tmp_path, model_copy, classifier_json):
    primary, variant = model_copy
    tflite = variant.parent / json.loads(variant.read_text())["model_file"]
    tflite.write_bytes(b"not the model")
    assert main(["check-config", str(config_for(tmp_path, primary, classifier_json, "auto"))]) == 2
    err = capsys.readouterr().err
    assert str(tflite) in err and "fix:" in err and "Traceback" not in err


def test_runtime_precision_is_checked_by_the_config_loader(capsys, tmp_path, detector_json, classifier_json):
    assert main(["check-config", str(config_for(tmp_path, detector_json, classifier_json, "fp16"))]) == 2
    err = capsys.readouterr().err
    assert "`runtime.precision`" in err and "'fp16' is not one of" in err and "fix:" in err
