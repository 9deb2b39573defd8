"""LR-ASPP, MobileNetV3's segmentation head (Howard et al., 2019, arXiv:1905.02244, section 6.3).

Lite Reduced Atrous Spatial Pyramid Pooling, Figure 10, on a backbone whose last stage is
dilated instead of strided (output stride 16):

    high (stride 16) -> 1x1 conv 128, BN, ReLU ------------------x--> bilinear to stride 8 -> 1x1 conv -> classes
    high (stride 16) -> global avg pool -> 1x1 conv 128 -> sigmoid ^                                        |
    low  (stride 8)  -> 1x1 conv -> classes ----------------------------------------------------------------+
                                                                           sum -> bilinear to the input size

The pooled branch gates the 1x1 branch channel by channel, as squeeze-and-excite does. The
paper pools with a large kernel and stride (49x49, stride (16, 20), on 1024x2048 Cityscapes
crops); torchvision, and this module, pool globally, which is the same on inputs no larger
than the kernel and needs no input size. The paper also halves the last block's filters for
segmentation (its "RF2" rows); torchvision's ``lraspp_mobilenet_v3_large`` keeps the 960
channels and so do we, so that its checkpoints load (3,221,538 parameters with 21 classes).

Facts taken from torchvision 0.29 (``torchvision/models/segmentation/lraspp.py``) for parity:
the backbone is ``mobilenet_v3_large(dilated=True)`` up to its 960-wide 1x1 conv; the low-level
map is the output of the block that strides to 8 (the first 40-wide block of Large, the first
24-wide block of Small), not the last map at stride 8; the head's BatchNorm has PyTorch's
defaults (eps 1e-5, momentum 0.1) while the backbone keeps MobileNetV3's (1e-3, 0.01); the
classifier convs have biases, the other two convs none; both resizes are bilinear with
``align_corners=False``. torchvision's model returns ``{"out": logits}`` (and refuses
``aux_loss``); ours returns the logits tensor, as our classifiers return theirs.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import batch_norm, conv2d
from .builder import Backbone, FeatureInfo, check_positive_int, init_weights
from .mobilenet_v3 import mobilenet_v3_spec

INTER_CHANNELS = 128  # Figure 10: "1x1 Conv, 128"
OUTPUT_STRIDE = 16  # section 6.3: atrous convolution on the last block, features at 1/16
LOW_STRIDE = 8  # Figure 10: the 1/8 low-level features
_BLOCK_OUTPUT = re.compile(r"blocks\.\d+\.\d+")


class LRASPPHead(nn.Module):
    """The head of Figure 10 on a low-level and a high-level map; returns logits at the low map's size.

    Modules, in torchvision's tensor order: ``conv``, ``bn``, ``act`` (the 1x1 branch),
    ``pool``, ``conv_gate``, ``gate`` (the pooled gating branch), ``low_classifier``,
    ``high_classifier``.
    """

    def __init__(self, low_chs: int, high_chs: int, num_classes: int, inter_chs: int = INTER_CHANNELS) -> None:
        super().__init__()
        for name, value in (("low_chs", low_chs), ("high_chs", high_chs), ("num_classes", num_classes),
                            ("inter_channels", inter_chs)):
            check_positive_int(name, value)
        self.conv = conv2d(high_chs, inter_chs, 1)
        self.bn = batch_norm(inter_chs)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_gate = conv2d(high_chs, inter_chs, 1)
        self.gate = nn.Sigmoid()
        self.low_classifier = conv2d(low_chs, num_classes, 1, bias=True)
        self.high_classifier = conv2d(inter_chs, num_classes, 1, bias=True)
        init_weights(self)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(high)))
        x = x * self.gate(self.conv_gate(self.pool(high)))
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPP(nn.Module):
    """A segmentation network: a :class:`Backbone` and an :class:`LRASPPHead` on two of its maps.

    ``low`` and ``high`` are taps of the backbone (a stride, or a module path from
    ``backbone.available_taps()``); ``low`` must be at a finer stride than ``high``.
    ``forward(x)`` returns per-pixel class logits of shape ``(N, num_classes, H, W)``, the
    input's size. ``low_tap`` and ``high_tap`` state where the maps come from.
    """

    task = "segmentation"  # what lightnets.train.fit trains it for

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        low: int | str,
        high: int | str,
        inter_channels: int = INTER_CHANNELS,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise ValueError(
                f"LRASPP needs a lightnets Backbone (its taps feed the head), got {type(backbone).__name__}"
            )
        check_positive_int("num_classes", num_classes)
        low_tap, high_tap = backbone.tap(low), backbone.tap(high)
        if low_tap.reduction >= high_tap.reduction:
            raise ValueError(
                f"the low-level tap must be at a finer stride than the high-level one; got low {low_tap.module} at "
                f"stride {low_tap.reduction}, high {high_tap.module} at stride {high_tap.reduction}"
            )
        self.backbone = backbone
        self.head = LRASPPHead(low_tap.channels, high_tap.channels, num_classes, inter_channels)
        self.num_classes = num_classes
        self.in_chans = backbone.in_chans
        self.low_tap, self.high_tap = low_tap, high_tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone.feature_maps(x, [self.low_tap.module, self.high_tap.module])
        return F.interpolate(self.head(low, high), size=x.shape[-2:], mode="bilinear", align_corners=False)


def first_block_at(backbone: Backbone, reduction: int) -> FeatureInfo:
    """The output of the block that first reaches ``reduction`` (torchvision's low-level tap, "C2")."""
    for tap in backbone.available_taps():
        if tap.reduction == reduction and _BLOCK_OUTPUT.fullmatch(tap.module):
            return tap
    strides = sorted({t.reduction for t in backbone.available_taps()})
    raise ValueError(f"no block output at stride {reduction}; this backbone has strides {strides}")


def _lraspp_mobilenet_v3(
    size: str, num_classes: int, width_mult: float, in_chans: int, bn_eps: float, inter_channels: int
) -> LRASPP:
    check_positive_int("num_classes", num_classes)  # before the backbone is built
    check_positive_int("inter_channels", inter_channels)
    spec = mobilenet_v3_spec(size, width_mult=width_mult, in_chans=in_chans, bn_eps=bn_eps)
    backbone = Backbone(spec.with_output_stride(OUTPUT_STRIDE))
    low = first_block_at(backbone, LOW_STRIDE).module
    return LRASPP(backbone, num_classes, low=low, high=OUTPUT_STRIDE, inter_channels=inter_channels)


def lraspp_mobilenet_v3_large(
    *,
    num_classes: int = 21,
    width_mult: float = 1.0,
    in_chans: int = 3,
    bn_eps: float = 1e-3,
    inter_channels: int = INTER_CHANNELS,
) -> LRASPP:
    """LR-ASPP on MobileNetV3-Large at output stride 16 (section 6.3), torchvision's layout.

    The last stage (the 160-wide blocks) is dilated by 2 instead of strided; the high-level map
    is the 960-wide 1x1 conv (``blocks.6``), the low-level map the first 40-wide block
    (``blocks.2.0``, stride 8). 21 classes by default, as torchvision (Pascal VOC's 20 and
    background). ``width_mult`` scales the backbone only.
    """
    return _lraspp_mobilenet_v3("large", num_classes, width_mult, in_chans, bn_eps, inter_channels)


def lraspp_mobilenet_v3_small(
    *,
    num_classes: int = 21,
    width_mult: float = 1.0,
    in_chans: int = 3,
    bn_eps: float = 1e-3,
    inter_channels: int = INTER_CHANNELS,
) -> LRASPP:
    """LR-ASPP on MobileNetV3-Small, built by the same rule as :func:`lraspp_mobilenet_v3_large`.

    The paper reports LR-ASPP on Small too; torchvision ships only Large. High-level map: the
    576-wide 1x1 conv (``blocks.5``) with the 96-wide stage dilated; low-level map: the first
    24-wide block (``blocks.1.0``, stride 8).
    """
    return _lraspp_mobilenet_v3("small", num_classes, width_mult, in_chans, bn_eps, inter_channels)
