"""convert.errors: the flag types that turn a bad number into a usage error (exit 2), not a traceback
or a run that silently does nothing."""

from __future__ import annotations

import argparse
import re

import pytest

from convert.errors import float_in, input_size_type, int_at_least, open_fraction


def test_int_at_least():
    assert int_at_least(1)("3") == 3 and int_at_least(0)("0") == 0
    for bad, says in (("0", "0 is below 1"), ("-2", "-2 is below 1"), ("2.5", "'2.5' is not a whole number")):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            int_at_least(1)(bad)


def test_open_fraction():
    assert open_fraction("0.5") == 0.5
    for bad in ("0", "1", "2", "nan", "-0.1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            open_fraction(bad)


def test_float_in():
    assert float_in(0, 1, high_open=True)("0") == 0.0 and float_in(0, low_open=True)("3e-4") == 3e-4
    for parse, bad, says in ((float_in(0, 1, high_open=True), "1", "1 is not in [0, 1)"),
                             (float_in(0, low_open=True), "0", "0 is not above 0"),
                             (float_in(0), "-0.5", "-0.5 is not at least 0"),
                             (float_in(-1, 1), "nan", "nan is not in [-1, 1]"),
                             (float_in(0), "x", "'x' is not a number")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(says)):
            parse(bad)


def test_input_size_type():
    """``WxH`` in positive multiples of a graph's largest stride (16 for BlazeFace, 32 for YuNet)."""
    parse = input_size_type(32, "320x256")
    assert parse("320x256") == (320, 256) and parse("448X352") == (448, 352)
    for bad, says in (("320", "expected WIDTHxHEIGHT"), ("300x256", "multiples of 32"), ("0x32", "multiples of 32"),
                      ("x", "expected WIDTHxHEIGHT")):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            parse(bad)


@pytest.mark.parametrize("argv, says", [
    (["classifier-data", "--size", "0"], "argument --size: 0 is below 8"),
    (["yunet", "--min-score", "2"], "argument --min-score: 2 is not between 0 and 1"),
    (["yunet", "--nms-iou", "1.5"], "argument --nms-iou: 1.5 is not between 0 and 1"),
    (["train-yunet", "--steps", "0"], "argument --steps: 0 is below 1"),
    (["landmark-classifier", "--crops", "x", "--epochs", "-1"], "argument --epochs: -1 is below 0"),
    (["float16", "--stem", "x", "--val-images", "-3"], "argument --val-images: -3 is below 1"),
    (["landmark-classifier", "--crops", "x", "--tune-fold", "1"], "argument --tune-fold: 1 is not in [0, 1)"),
    (["landmark-classifier", "--crops", "x", "--lr", "0"], "argument --lr: 0 is not above 0"),
    (["train-yunet", "--holdout", "0"], "argument --holdout: 0 is not between 0 and 1"),
    (["train-yunet", "--synthetic-masks", "1.5"], "argument --synthetic-masks: 1.5 is not in [0, 1]"),
    (["train-detector", "--max-false", "-1"], "argument --max-false: -1 is not at least 0"),
    (["classifier-data", "--shift-y", "2"], "argument --shift-y: 2 is not in [-1, 1]"),
    (["face-detector", "--calibration-images", "0"], "argument --calibration-images: 0 is below 1"),
    (["face-detector", "--trim-quantile", "0"], "argument --trim-quantile: 0 is not in (0, 1]"),
    (["yunet", "--calibration-images", "0"], "argument --calibration-images: 0 is below 1"),
    (["yunet", "--parity-images", "0"], "argument --parity-images: 0 is below 1"),
    (["quantize", "m.keras", "--stem", "x", "--images", "d", "--val-images", "0"], "argument --val-images: 0 is below 1"),
    (["train-yunet", "--input", "320x240"], "argument --input: "),
])
def test_commands_refuse_numbers_that_would_break_or_skip_the_work(argv, says, capsys):
    """Each used to start: --size 0 died in a ZeroDivisionError, --min-score 2 in a ModelError
    traceback after the export, --steps 0 and --epochs -1 trained nothing, --val-images -3 rebuilt
    the shipped float16 variant on a slice of val; a --tune-fold of 1 holds every image out of
    training, a --holdout of 0 or 1 leaves nothing to choose a threshold on or nothing to train, a
    rate of 0 trains nothing, a chance above 1 or a negative allowance means nothing."""
    from convert.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and says in capsys.readouterr().err
