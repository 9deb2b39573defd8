"""MobileNetV1 (Howard et al., 2017, arXiv:1704.04861).

Paper Table 1, one row per layer group. Every layer after the stem is a 3x3 depthwise
separable layer (``dsa``: depthwise -> BN -> ReLU -> 1x1 -> BN -> ReLU, Figure 3).
"""

from __future__ import annotations

from .builder import ConvNet
from .resolve import resolve
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec, parse_stages

STEM = BlockSpec.parse("cn_k3_s2_c32")  # Conv / s2, 3x3x3x32, 224 -> 112

# fmt: off
TABLE_1 = parse_stages([
    ["dsa_k3_s1_c64"],                      # Conv dw / s1 + Conv / s1, 112x112
    ["dsa_k3_s2_c128", "dsa_k3_s1_c128"],   # 56x56
    ["dsa_k3_s2_c256", "dsa_k3_s1_c256"],   # 28x28
    ["dsa_k3_s2_c512", "dsa_r5_k3_s1_c512"],  # 14x14; "5x" in the table
    # Table 1 prints s2 on the last depthwise layer, but its output size column stays 7x7 and
    # every reference implementation (TF-slim, Keras, timm) uses s1 there, which is what
    # gives the paper's 569 M multiply-adds. We follow the implementations.
    ["dsa_k3_s2_c1024", "dsa_k3_s1_c1024"],  # 7x7
])
# fmt: on


def mobilenet_v1(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.001,
    bn_eps: float = 1e-5,
    padding: str = "symmetric",
    activation: str = "re",
) -> ConvNet:
    """MobileNetV1 with width multiplier ``width_mult`` (alpha, section 3.3).

    Every layer's width is ``alpha * c`` rounded to a multiple of 8 (identical to the paper's
    widths for alpha in {1, 0.75, 0.5, 0.25}). The resolution multiplier rho (section 3.4) is
    the input size: the network accepts any H x W. Dropout defaults to the TF-slim reference's
    keep probability of 0.999. ``activation`` is ``"re"`` (ReLU, Figure 3, the default) or
    ``"r6"`` (ReLU6, as the TF reference, Keras and timm train it).
    """
    if activation not in ("re", "r6"):
        raise ValueError(f"MobileNetV1 activation must be 're' (ReLU) or 'r6' (ReLU6), got {activation!r}")
    table = NetSpec(
        stem=StemSpec(STEM),
        stages=TABLE_1,
        head=HeadSpec(dropout=dropout, num_classes=num_classes),  # Avg Pool, FC, Softmax: no last conv
        settings=BuildSettings(in_chans=in_chans, bn_eps=bn_eps, padding=padding, act=activation),
    )
    return ConvNet(resolve(table, width_mult))
