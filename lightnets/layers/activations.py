"""Activation names used by block specs.

MobileNetV3 (section 5.2) uses h-swish ``x * ReLU6(x + 3) / 6`` in the deep half of the
network and hard-sigmoid ``ReLU6(x + 3) / 6`` as the SE gate; torch's own ``nn.Hardswish``
and ``nn.Hardsigmoid`` compute exactly these and export to ONNX as single operators.
"""

from __future__ import annotations

from torch import nn

#: Spec token -> activation module class.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "re": nn.ReLU,
    "r6": nn.ReLU6,
    "hs": nn.Hardswish,
}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for a spec token (``re``, ``r6`` or ``hs``)."""
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}") from None
    # In place: every activation here follows a BN, a conv or an addition whose output
    # nothing else reads, and training saves one allocation and one pass over memory per
    # layer (torchvision and timm do the same).
    return cls(inplace=True)
