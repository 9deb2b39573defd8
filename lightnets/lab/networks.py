"""The benchmark networks of ShuffleNetV2's guideline experiments (section 2, Tables 1-4).

Each is a stack of 10 identical blocks on 56x56 feature maps, built so that the variants of
one experiment have equal multiply-adds (the tests check +-2% with ``lightnets.cost``); only
the property under study differs. Plain convolutions without BatchNorm or ReLU unless the
experiment is about them (G4), so nothing else is measured.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BLOCKS = 10
MAP_SIZE = 56


def _conv1x1(in_chs: int, out_chs: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, groups=groups, bias=False)


class Stack(nn.Module):
    """``BLOCKS`` copies of a block; remembers its input channel count for the benchmark input."""

    def __init__(self, blocks: list[nn.Module], in_chs: int, label: str) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.in_chs = in_chs
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def g1_network(c1: int, c2: int, blocks: int = BLOCKS) -> Stack:
    """G1: each block is two 1x1 convs, c1 -> c2 -> c1 (section 2, G1)."""
    return Stack([nn.Sequential(_conv1x1(c1, c2), _conv1x1(c2, c1)) for _ in range(blocks)], c1, f"({c1}, {c2})")


def g2_network(channels: int, groups: int, blocks: int = BLOCKS) -> Stack:
    """G2: each block is one 1x1 group conv, c -> c with g groups (section 2, G2)."""
    if channels % groups:
        raise ValueError(f"channels {channels} must be divisible by groups {groups}")
    return Stack([_conv1x1(channels, channels, groups) for _ in range(blocks)], channels, f"c={channels}, g={groups}")


class _Parallel(nn.Module):
    """Fragments side by side on the same input, outputs concatenated.

    The paper does not say how parallel fragments merge; concatenation adds no arithmetic,
    so the comparison isolates fragmentation (G4 measures element-wise merges separately).
    """

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


G3_VARIANTS = ("1-fragment", "2-fragment-series", "4-fragment-series", "2-fragment-parallel", "4-fragment-parallel")


def g3_network(variant: str, channels: int, blocks: int = BLOCKS) -> Stack:
    """G3: 1, 2 or 4 1x1 convs per block, in series or in parallel, MAdds equal to 1-fragment.

    ``channels`` is c of the 1-fragment block (one c -> c conv). n fragments in series are n
    square convs of width round(c / sqrt(n)); n fragments in parallel are n branches
    c -> c / n, concatenated back to c. Both keep the block's multiply-adds at c^2 per pixel.
    """
    if variant not in G3_VARIANTS:
        raise ValueError(f"unknown G3 variant {variant!r}; allowed: {', '.join(G3_VARIANTS)}")
    fragments = int(variant[0])
    if variant.endswith("parallel"):
        if channels % fragments:
            raise ValueError(f"channels {channels} must be divisible by {fragments} fragments")
        def parallel() -> nn.Module:
            return _Parallel([_conv1x1(channels, channels // fragments) for _ in range(fragments)])

        return Stack([parallel() for _ in range(blocks)], channels,
                     f"{fragments} x {channels}->{channels // fragments}, concat")
    width = round(channels / math.sqrt(fragments))
    def series() -> nn.Module:
        return nn.Sequential(*[_conv1x1(width, width) for _ in range(fragments)])

    return Stack([series() for _ in range(blocks)], width, f"{fragments} x {width}->{width}")


class Bottleneck(nn.Module):
    """A ResNet bottleneck unit (He et al. 2016): 1x1 c -> c/4, 3x3 c/4 -> c/4, 1x1 c/4 -> c.

    ``relu`` toggles all ReLUs and ``shortcut`` the identity addition (ShuffleNetV2 Table 4).
    ``c`` is the unit's input and output width, the bottleneck a quarter of it, as in ResNet.
    """

    def __init__(self, channels: int, relu: bool, shortcut: bool) -> None:
        super().__init__()
        mid = channels // 4
        self.conv1 = _conv1x1(channels, mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.conv3 = _conv1x1(mid, channels)
        self.act = nn.ReLU() if relu else nn.Identity()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return self.act(out + x) if self.shortcut else self.act(out)


def g4_network(channels: int, relu: bool, shortcut: bool, blocks: int = BLOCKS) -> Stack:
    units = [Bottleneck(channels, relu, shortcut) for _ in range(blocks)]
    return Stack(units, channels, f"{channels}->{channels // 4}->{channels}")


def standard_conv(channels: int, kernel: int = 3) -> Stack:
    """One kxk standard convolution C -> C (the layer a depthwise separable one replaces)."""
    return Stack([nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)], channels, "standard")


def depthwise_separable(channels: int, kernel: int = 3) -> Stack:
    """kxk depthwise then 1x1 pointwise, C -> C (MobileNetV1 section 3.1), without BN/ReLU."""
    layer = nn.Sequential(
        nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False),
        _conv1x1(channels, channels),
    )
    return Stack([layer], channels, "depthwise separable")


def depthwise_only(channels: int, kernel: int = 3) -> Stack:
    conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False)
    return Stack([conv], channels, "depthwise")


def pointwise_only(channels: int) -> Stack:
    return Stack([_conv1x1(channels, channels)], channels, "pointwise")


__all__ = [
    "BLOCKS", "G3_VARIANTS", "MAP_SIZE", "Bottleneck", "Stack", "depthwise_only",
    "depthwise_separable", "g1_network", "g2_network", "g3_network", "g4_network", "pointwise_only", "standard_conv",
]
