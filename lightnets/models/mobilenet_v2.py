"""MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381).

Paper Table 2, one stage per row: ``t`` is the expansion ``e``, ``c`` the output channels,
``n`` the repeats ``r`` and ``s`` the stride of the first repeat. A row with t = 1 is a
depthwise separable block with a linear 1x1 (``ds``): there is nothing to expand.
"""

from __future__ import annotations

from .builder import ConvNet
from .resolve import resolve
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec, parse_stages

STEM = BlockSpec.parse("cn_k3_s2_c32")  # conv2d 3x3, 224^2 x 3 -> 112^2 x 32
LAST_CONV = 1280  # conv2d 1x1, 7^2 x 320 -> 7^2 x 1280

# fmt: off
TABLE_2 = parse_stages([
    #  t    c   n  s
    ["ds_k3_s1_c16"],           # t=1, c=16,  n=1, s=1
    ["ir_r2_k3_s2_e6_c24"],     # t=6, c=24,  n=2, s=2
    ["ir_r3_k3_s2_e6_c32"],     # t=6, c=32,  n=3, s=2
    ["ir_r4_k3_s2_e6_c64"],     # t=6, c=64,  n=4, s=2
    ["ir_r3_k3_s1_e6_c96"],     # t=6, c=96,  n=3, s=1
    ["ir_r3_k3_s2_e6_c160"],    # t=6, c=160, n=3, s=2
    ["ir_r1_k3_s1_e6_c320"],    # t=6, c=320, n=1, s=1
])
# fmt: on


def mobilenet_v2_spec(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.2,
    bn_eps: float = 1e-5,
    padding: str = "symmetric",
) -> NetSpec:
    """The resolved spec :func:`mobilenet_v2` builds, for builders that change it before building
    (the SSDLite backbone)."""
    table = NetSpec(
        stem=StemSpec(STEM),
        stages=TABLE_2,
        head=HeadSpec(conv_chs=LAST_CONV, dropout=dropout, num_classes=num_classes),
        settings=BuildSettings(in_chans=in_chans, bn_eps=bn_eps, padding=padding, act="r6"),
    )
    return resolve(table, width_mult)


def mobilenet_v2(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.2,
    bn_eps: float = 1e-5,
    padding: str = "symmetric",
) -> ConvNet:
    """MobileNetV2 with width multiplier ``width_mult`` (alpha), ReLU6 throughout.

    Widths are ``make_divisible(alpha * c, 8)``. The last 1x1 conv keeps 1280 channels for
    alpha <= 1 and is scaled only for alpha > 1 (section 4: "we apply width multiplier to all
    layers except the very last convolutional layer"; the reference scales it up for
    multipliers above one). The dropout of 0.2 is torchvision's.
    """
    return ConvNet(mobilenet_v2_spec(
        num_classes=num_classes, width_mult=width_mult, in_chans=in_chans, dropout=dropout, bn_eps=bn_eps,
        padding=padding,
    ))
