"""Value types of the ``fastsam`` command line, and the parser class that turns argparse's errors
into one line.

Every value is checked here, at parse time, as far as it can be without opening a file: numbers
are finite, counts positive, points and boxes parse (negative coordinates included), so that a bad
option costs nothing and ends in one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DEFAULT_MAX_IMGSZ",
    "DEFAULT_MAX_PIXELS",
    "UsageError",
    "box",
    "finite",
    "normalise_argv",
    "point",
    "positive_int",
    "size",
]

#: Largest image the CLI decodes by default (width x height): a 48 MP phone photo fits. Its RGB
#: array is 150 MB; overlay and label map take about 10x that at this size.
DEFAULT_MAX_PIXELS = 50_000_000
#: Largest network input side by default. Activations grow with its square: FastSAM-x at 4096
#: needs several GB; at 100000 the allocation alone would exhaust any machine.
DEFAULT_MAX_IMGSZ = 4096

# a value that starts with "-" but is a number (or a list of them): argparse would take "-1,10" or
# "-inf" for an option; "-0.5" alone it already accepts
_NEGATIVE_VALUE = re.compile(r"^-([0-9.]|inf|nan)", re.IGNORECASE)


class UsageError(Exception):
    """A command line argparse refuses; ``main`` prints it as one line and exits with 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (no usage block), exit code 2."""

    def error(self, message: str) -> Any:  # argparse's NoReturn hook
        raise UsageError(f"{message} (see {self.prog} --help)")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings (of the parser and all its sub-commands) that take a value."""
    out: set[str] = set()
    for action in parser._actions:  # argparse has no public walk over its actions
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                out |= _value_options(child)
        elif action.option_strings and action.nargs != 0:
            out.update(action.option_strings)
    return out


def normalise_argv(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--point -1,10`` -> ``--point=-1,10`` (and ``--conf -inf`` -> ``--conf=-inf``) for options that
    take a value, so that negative numbers parse (and are then validated) instead of being mistaken
    for an unknown option."""
    takes_value = _value_options(parser)
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i:])
            break
        if a in takes_value and i + 1 < len(args) and _NEGATIVE_VALUE.match(args[i + 1]):
            out.append(f"{a}={args[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def finite(text: str) -> float:
    """A finite float (``nan`` and ``inf`` are refused: they compare false with every bound)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _whole(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a number >= {low}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    return _whole(text, 0)


def _numbers(text: str, counts: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [finite(v) for v in text.split(",")]
    except argparse.ArgumentTypeError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"expected {what} (finite numbers), got {text!r}")
    return values


def point(text: str) -> list[float]:
    v = _numbers(text, (2, 3), "X,Y or X,Y,LABEL")
    if len(v) == 3 and v[2] not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"point label must be 0 or 1, got {text!r}")
    return v if len(v) == 3 else [*v, 1.0]


def box(text: str) -> list[float]:
    return _numbers(text, (4,), "X1,Y1,X2,Y2")


def size(text: str) -> int | tuple[int, int]:
    """``N`` or ``H,W`` (pixels, each >= 32)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 32:
        raise argparse.ArgumentTypeError(f"expected N or H,W (whole numbers >= 32), got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])
