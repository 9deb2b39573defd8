"""Argument types for the command line: every numeric and list option is checked where it is parsed.

Each is an argparse ``type=``, so a bad value is argparse's usage error naming the option and
what it allows (exit 2), before any work starts: ``--workers -1``, ``--seconds inf`` and
``--models ''`` used to be accepted, or to fail much later with a traceback.
"""

from __future__ import annotations

import argparse
import math

#: The smallest --resolution: the built-in digits' own size. Every network here divides its
#: input by 32, so anything smaller is one pixel wide after the first stages.
MIN_RESOLUTION = 8
#: Seeds go to torch.manual_seed and Python's random, and are combined with epochs; keep them in 32 bits.
MAX_SEED = 2**32 - 1


def _number(text: str, kind: type, what: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def seed(text: str) -> int:
    value = _number(text, int, f"a seed, an integer in [0, {MAX_SEED}]")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer in [0, {MAX_SEED}], got {text!r}")
    return value


def resolution(text: str) -> int:
    value = _number(text, int, f"an input size in pixels, an integer >= {MIN_RESOLUTION}")
    if value < MIN_RESOLUTION:
        raise argparse.ArgumentTypeError(
            f"expected an input size in pixels, an integer >= {MIN_RESOLUTION} (the networks divide it by 32), "
            f"got {text!r}"
        )
    return value


def finite_float(text: str) -> float:
    value = _number(text, float, "a finite number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_finite_float(text: str) -> float:
    value = _number(text, float, "a finite number > 0")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A share in (0, 1]: of the training images, of the seed's latency."""
    value = _number(text, float, "a fraction in (0, 1]")
    if not 0 < value <= 1:  # false for nan too
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def probability(text: str) -> float:
    """A dropout rate: in [0, 1)."""
    value = _number(text, float, "a probability in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
    return value


def nonempty_list(text: str) -> list[str]:
    """Comma-separated names; empty items are dropped, and none at all is refused (not "every one")."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected one or more comma-separated names, got {text!r}")
    return items


def width_list(text: str) -> list[float]:
    """Comma-separated width multipliers, each in (0, 4]."""
    try:
        widths = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected width multipliers such as 0.5,0.75, got {text!r}") from None
    if not widths or any(not 0 < w <= 4 for w in widths):
        raise argparse.ArgumentTypeError(f"expected width multipliers in (0, 4] such as 0.5,0.75, got {text!r}")
    return widths


def family_widths(text: str) -> tuple[str, list[float]]:
    """``NAME:W1,W2``: a registered network and width multipliers of its family."""
    name, sep, widths = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:WIDTHS such as mobilenet_v2:0.35,0.5, got {text!r}")
    return name.strip(), width_list(widths)


def workers(text: str) -> int | str:
    """``auto`` or a positive number of processes."""
    return "auto" if text == "auto" else positive_int(text)
