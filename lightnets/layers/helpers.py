"""Small helpers shared by every family."""

from __future__ import annotations

import math


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%.

    This is the rounding of the MobileNetV2/V3 TensorFlow reference (``_make_divisible`` in
    tf-models' ``mobilenet.py``); torchvision, timm and Keras use the same rule, which is why
    widths agree across them. ``min_value`` defaults to ``divisor``.
    """
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"make_divisible needs a positive finite value, got {value!r}")
    if divisor < 1:
        raise ValueError(f"make_divisible needs divisor >= 1, got {divisor!r}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
