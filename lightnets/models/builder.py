"""One builder for every family: specs in, modules out.

Family files describe a network as data (a stem, stages of :class:`BlockSpec`, a head) and
call :class:`ConvNet`. Width scaling is :func:`scale_stages`, a pure function on specs, so a
searched or pruned network is just another list of specs. The builder applies strides (only
the first repeat of a row strides), computes expansion widths from the actual input width,
and records each stage's channels and reduction for :meth:`ConvNet.feature_maps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import (
    ConvBnAct,
    DepthwiseSeparable,
    InvertedResidual,
    ShuffleV1Unit,
    ShuffleV2OfficialUnit,
    ShuffleV2Unit,
    batch_norm,
    conv2d,
    make_activation,
    make_divisible,
)
from ..layers.conv import DEFAULT_BN_EPS, DEFAULT_BN_MOMENTUM
from .spec import BlockSpec

FEATURE_STRIDES = (4, 8, 16, 32)


def scale_stages(
    stages: list[list[BlockSpec]], width_mult: float, round_chs: Callable[[float], int] | None = None
) -> list[list[BlockSpec]]:
    """Scale every spec's output width by ``width_mult``, rounded by ``round_chs``.

    ``round_chs`` defaults to ``make_divisible(c, 8)``, the rule of the MobileNetV2/V3
    reference (and of torchvision, timm and Keras); MobileNetV1 uses it too, which gives the
    same widths as the V1 paper's ``int(alpha * c)`` for every alpha the paper reports.
    """
    check_width_mult(width_mult)
    round_chs = round_chs or (lambda c: make_divisible(c, 8))
    return [[spec.replace(out_chs=round_chs(spec.out_chs * width_mult)) for spec in stage] for stage in stages]


@dataclass(frozen=True)
class FeatureInfo:
    """Where a feature map comes from: module path, channels, and reduction from the input."""

    module: str
    channels: int
    reduction: int


class _BlockContext:
    """Build-time settings shared by every block of a network."""

    def __init__(self, default_act: str, bn_eps: float, bn_momentum: float, divisor: int, padding: str) -> None:
        self.default_act = default_act
        self.bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.conv = {**self.bn, "padding": padding}
        self.divisor = divisor
        self.padding = padding

    def build(self, spec: BlockSpec, in_chs: int, stride: int) -> nn.Module:
        act = spec.act or self.default_act
        out = spec.out_chs
        if spec.kind == "cn":
            return ConvBnAct(in_chs, out, spec.kernel, stride, act=act, **self.conv)
        if spec.kind == "ds" or (spec.kind == "ir" and spec.expand_ratio == 1.0):
            # An expansion-1 inverted residual is a depthwise separable block: the 1x1
            # expansion would map C to C, so the references (TF, torchvision, timm) drop it.
            return DepthwiseSeparable(in_chs, out, spec.kernel, stride, act=act, se=spec.se, **self.conv)
        if spec.kind == "dsa":
            return DepthwiseSeparable(in_chs, out, spec.kernel, stride, act=act, pw_act=True, skip=False, **self.conv)
        if spec.kind == "ir":
            mid = make_divisible(in_chs * spec.expand_ratio, self.divisor)
            return InvertedResidual(in_chs, mid, out, spec.kernel, stride, act=act, se=spec.se, **self.conv)
        if self.padding != "symmetric":
            raise ValueError(f"{spec.kind} blocks support symmetric padding only, got {self.padding!r}")
        if spec.kind in ("sv1", "sv1o"):
            return ShuffleV1Unit(
                in_chs, out, stride, spec.groups, spec.first_pw_grouped, act=act, official=spec.kind == "sv1o", **self.bn
            )
        if spec.kind == "sv2":
            return ShuffleV2Unit(in_chs, out, stride, act=act, **self.bn)
        if spec.kind == "sv2o":
            return ShuffleV2OfficialUnit(in_chs, out, stride, act=act, **self.bn)
        raise AssertionError(spec.kind)  # BlockSpec validation makes this unreachable


class ConvNet(nn.Module):
    """The network every family builds: stem, stages of blocks, head, classifier.

    Layout and names follow timm so its checkpoints load unchanged where the network is the
    same: ``conv_stem, bn1, [stem_pool], blocks.i.j, [conv_head, bn2], classifier``.

    ``head_chs`` with ``head_after_pool=False`` is a 1x1 conv-BN-act on the last feature map
    (MobileNetV2, ShuffleNetV2 conv5). With ``head_after_pool=True`` it is MobileNetV3's
    efficient last stage (paper section 5.1): pool first, then a 1x1 conv with bias and no
    BN, which costs 1280 x 960 multiply-adds instead of 49 times that.
    """

    def __init__(
        self,
        stages: list[list[BlockSpec]],
        *,
        stem: BlockSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_pool: bool = False,
        head_chs: int | None = None,
        head_after_pool: bool = False,
        head_act: str | None = None,
        dropout: float = 0.0,
        default_act: str = "re",
        bn_eps: float = DEFAULT_BN_EPS,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        divisor: int = 8,
        padding: str = "symmetric",
        classifier_bias: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if stem.kind != "cn":
            raise ValueError(f"the stem must be a 'cn' spec, got {stem}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.stem_spec = stem
        self.stage_specs = [list(stage) for stage in stages]
        context = _BlockContext(default_act, bn_eps, bn_momentum, divisor, padding)
        bn = {"eps": bn_eps, "momentum": bn_momentum}

        self.conv_stem = conv2d(in_chans, stem.out_chs, stem.kernel, stem.stride, padding=padding)
        self.bn1 = batch_norm(stem.out_chs, **bn)
        self.act1 = make_activation(stem.act or default_act)
        reduction = stem.stride
        info = [FeatureInfo("act1", stem.out_chs, reduction)]
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        if stem_pool:
            reduction *= 2
            info.append(FeatureInfo("stem_pool", stem.out_chs, reduction))

        chs = stem.out_chs
        stage_modules = []
        for i, stage in enumerate(self.stage_specs):
            blocks = []
            for spec in stage:
                for repeat in range(spec.repeats):
                    stride = spec.stride if repeat == 0 else 1
                    blocks.append(context.build(spec, chs, stride))
                    reduction *= stride
                    chs = spec.out_chs
            stage_modules.append(nn.Sequential(*blocks))
            info.append(FeatureInfo(f"blocks.{i}", chs, reduction))
        self.blocks = nn.Sequential(*stage_modules)

        head_act = head_act or default_act
        self.head_after_pool = head_after_pool
        if head_chs is None:
            self.conv_head: nn.Module = nn.Identity()
            self.bn2: nn.Module = nn.Identity()
            self.act2: nn.Module = nn.Identity()
        elif head_after_pool:
            self.conv_head = nn.Conv2d(chs, head_chs, 1, bias=True)
            self.bn2 = nn.Identity()
            self.act2 = make_activation(head_act)
        else:
            self.conv_head = conv2d(chs, head_chs, 1)
            self.bn2 = batch_norm(head_chs, **bn)
            self.act2 = make_activation(head_act)
            info.append(FeatureInfo("act2", head_chs, reduction))
        self.num_features = head_chs or chs
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier_bias = classifier_bias
        self.classifier = nn.Linear(self.num_features, num_classes, bias=classifier_bias)

        self.feature_info = self._select_features(info)
        self.feature_channels = [f.channels for f in self.feature_info]
        self._init_weights()

    @staticmethod
    def _select_features(info: list[FeatureInfo]) -> list[FeatureInfo]:
        """The last map at each of the strides 4, 8, 16, 32."""
        chosen = []
        for stride in FEATURE_STRIDES:
            at_stride = [f for f in info if f.reduction == stride]
            if not at_stride:
                raise ValueError(f"the network has no feature map at stride {stride}: {info}")
            chosen.append(at_stride[-1])
        return chosen

    def _init_weights(self) -> None:
        # The initialisation torchvision and timm use for these families: He-normal fan-out
        # for convolutions, N(0, 0.01) for the classifier, BN to identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (N, {self.in_chans}, H, W), "
                f"got {tuple(x.shape)}"
            )

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))

    def _pre_pool_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_after_pool:
            return x
        return self.act2(self.bn2(self.conv_head(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before global pooling."""
        self.check_input(x)
        # One stage at a time, rebinding ``x``, so that a feature map is freed once the next
        # stage has consumed it. ``self.blocks(stem_output)`` kept its argument alive for the
        # whole call: for MobileNetV2 the 32 x 112 x 112 stem output then stayed allocated
        # through all 17 blocks, which changed the allocator's reuse pattern and doubled the
        # page faults per forward pass (2,650 -> 6,100), 1.13-1.33x torchvision's eager time
        # for the same operators on the same weights. Hooks on each stage still fire; a hook
        # on the ``blocks`` container itself does not.
        x = self._stem(x)
        x = self.stem_pool(x)
        for stage in self.blocks:
            x = stage(x)
        return self._pre_pool_head(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, [efficient last stage], dropout, classifier."""
        x = self.global_pool(x)
        if self.head_after_pool:
            x = self.act2(self.conv_head(x))
        x = self.dropout(self.flatten(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 4, 8, 16 and 32, in that order (channels: ``feature_channels``).

        Each is the last map at its stride; the stride-32 map equals ``forward_features(x)``.
        These are what SSDLite and LR-ASPP heads (MobileNetV3 section 6.3-6.4) consume.
        """
        self.check_input(x)
        outputs: dict[str, torch.Tensor] = {}
        x = self._stem(x)
        outputs["act1"] = x
        x = self.stem_pool(x)
        outputs["stem_pool"] = x
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            outputs[f"blocks.{i}"] = x
        if not self.head_after_pool and not isinstance(self.conv_head, nn.Identity):
            outputs["act2"] = self._pre_pool_head(x)
        return [outputs[f.module] for f in self.feature_info]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` classes."""
        check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes, bias=self.classifier_bias)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def architecture(self) -> list[str]:
        """The network as spec strings: the stem, then one line per stage."""
        return [f"stem: {self.stem_spec}"] + [
            f"stage {i}: " + " ".join(str(s) for s in stage) for i, stage in enumerate(self.stage_specs)
        ]


def check_width_mult(value: object) -> None:
    """Alpha must be a finite number > 0 (any such value builds; the papers report a few)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"width_mult must be a finite number > 0, got {value!r}")


def check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
