"""argparse types for the numbers the subcommands take, one rule and one error text for all:
`expected <what>, got '<text>'`. Not-a-number and infinities are refused everywhere (a lead, a
time scale or a timeout of `nan` or `inf` means nothing)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["count", "non_negative", "positive", "probability"]


def non_negative(text: str) -> float:
    """A finite number >= 0 (seconds, rates)."""
    return _number(text, "a finite number >= 0", lambda v: v >= 0)


def positive(text: str) -> float:
    """A finite number > 0 (time scales, timeouts, lifetimes)."""
    return _number(text, "a finite number > 0", lambda v: v > 0)


def probability(text: str) -> float:
    """A number within 0..1."""
    return _number(text, "a probability within 0..1", lambda v: 0.0 <= v <= 1.0)


def count(text: str) -> int:
    """A whole number >= 0."""
    what = "a whole number >= 0"
    try:
        value = int(text)
    except ValueError:
        raise _refused(what, text) from None
    if value < 0:
        raise _refused(what, text)
    return value


def _number(text: str, what: str, holds: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _refused(what, text) from None
    if not math.isfinite(value) or not holds(value):
        raise _refused(what, text)
    return value


def _refused(what: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
