"""The one error type convert/ raises for user-caused problems (bad file, bad data, bad flag).

The CLI turns it into one clear message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Optional, Sequence, Tuple

from convert.tf import settings


class ConvertError(Exception):
    """A user-caused conversion error; the message names the file, the key and the fix."""


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``; anything else is a usage error (exit 2) naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a number in the interval from ``low`` to ``high`` (either end open or closed);
    anything else, nan included, is a usage error (exit 2) naming the interval. For rates, weights and
    fractions that would otherwise train on nothing, or on everything held out, and fail after the work."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    if math.isinf(high):
        where = f"{'above' if low_open else 'at least'} {low:g}"
    elif low_open and high_open:
        where = f"between {low:g} and {high:g} (exclusive)"
    else:
        where = f"in {left}{low:g}, {high:g}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not inside:  # nan compares false everywhere
            raise argparse.ArgumentTypeError(f"{text} is not {where}")
        return value

    return parse


# A score or overlap threshold: a number strictly between 0 and 1.
open_fraction = float_in(0.0, 1.0, low_open=True, high_open=True)


def input_size_type(multiple: int, example: str) -> Callable[[str], Tuple[int, int]]:
    """argparse type: ``WxH`` -> (width, height), positive multiples of ``multiple`` (a graph's
    largest stride: 16 for BlazeFace, 32 for YuNet)."""

    def parse(text: str) -> Tuple[int, int]:
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. {example}") from None
        if w <= 0 or h <= 0 or w % multiple or h % multiple:
            raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive multiples of {multiple}"
                                             f" (e.g. {example})")
        return w, h

    return parse


def run_command(prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int], argv: Optional[Sequence[str]] = None) -> int:
    """A ``maskwatch-convert`` subcommand's ``main``: parse, run, and turn a user's error (a
    :class:`ConvertError` or a missing file) into one line on stderr and exit code 2."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(p)
    a = p.parse_args(argv)
    settings()
    try:
        return int(run(a) or 0)
    except (ConvertError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
