"""Convolution blocks of the MobileNet family.

Module names follow timm's (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se``, ``conv_pwl``,
``bn3``) and stay the same whether or not a block has SE (``se`` is then ``nn.Identity``), so a
checkpoint's keys never depend on a block's options.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import make_activation
from .helpers import make_divisible

DEFAULT_BN_EPS = 1e-5
DEFAULT_BN_MOMENTUM = 0.1


def batch_norm(channels: int, eps: float = DEFAULT_BN_EPS, momentum: float = DEFAULT_BN_MOMENTUM) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


PADDINGS = ("symmetric", "tf_same")


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding, computed from the input size.

    TF pads ``max((ceil(H / s) - 1) * s + k - H, 0)`` rows, the extra one at the bottom (and
    right), which for a stride-2 layer on an even input is *not* the symmetric ``k // 2`` of
    PyTorch; a dilated kernel spans ``(k - 1) * d + 1`` rows. Weights trained in TensorFlow
    (Keras, TF-slim, timm's ``tf_`` ports) need it to reproduce their outputs. The parameters
    are an ordinary ``nn.Conv2d``'s.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        spans = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True)]
        for size, k, s in zip(x.shape[-1:-3:-1], spans[::-1], self.stride[::-1], strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(nn.functional.pad(x, pads))


def conv2d(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "symmetric",
    dilation: int = 1,
) -> nn.Conv2d:
    """A convolution with 'same' padding: symmetric ``d * (k // 2)`` (PyTorch), or TF's (``"tf_same"``).

    ``dilation`` spaces the kernel's taps ``d`` apart (atrous convolution, DeepLab), so a layer
    sees a wider window with the same weights.
    """
    if padding == "tf_same" and stride > 1:
        return Conv2dSame(in_chs, out_chs, kernel_size, stride, padding=0, dilation=dilation, groups=groups, bias=bias)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    # For stride 1 and an odd kernel TF's SAME padding is symmetric too.
    return nn.Conv2d(
        in_chs, out_chs, kernel_size, stride, padding=dilation * (kernel_size // 2), dilation=dilation, groups=groups,
        bias=bias,
    )


class ConvBnAct(nn.Module):
    """Convolution -> BatchNorm -> activation; no bias, since BN supplies the shift."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "re",
        bn_eps: float = DEFAULT_BN_EPS,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        padding: str = "symmetric",
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv = conv2d(in_chs, out_chs, kernel_size, stride, groups, padding=padding, dilation=dilation)
        self.bn1 = batch_norm(out_chs, bn_eps, bn_momentum)
        self.act = make_activation(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as MobileNetV3 uses it (paper section 5.3).

    The bottleneck is 1/4 of the *expansion* channels, rounded with ``make_divisible(.., 8)``;
    the squeeze activation is ReLU and the gate is hard-sigmoid. ``reduced_chs`` states the
    bottleneck width exactly (a resolved network spec always does); it is then not rounded.
    """

    def __init__(
        self, channels: int, reduce_ratio: float = 0.25, divisor: int = 8, reduced_chs: int | None = None
    ) -> None:
        super().__init__()
        reduced = make_divisible(channels * reduce_ratio, divisor) if reduced_chs is None else reduced_chs
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = nn.ReLU()
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.gate(self.conv_expand(self.act1(self.conv_reduce(scale))))
        return x * scale


def _residual(skip: bool | None, in_chs: int, out_chs: int, stride: int, block: str) -> bool:
    """Whether a block adds its input: stated (``True`` / ``False``) or, with ``None``, the rule
    "stride 1 and equal widths". A stated residual the widths cannot carry raises."""
    possible = stride == 1 and in_chs == out_chs
    if skip is None:
        return possible
    if skip and not possible:
        raise ValueError(
            f"{block} {in_chs}->{out_chs} stride {stride} cannot add its input: a residual needs stride 1 "
            f"and equal input and output widths"
        )
    return bool(skip)


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk -> BN -> act -> [SE] -> pointwise 1x1 -> BN [-> act].

    With ``pw_act=True`` and no skip this is MobileNetV1's layer (MobileNetV1 Figure 3). With
    ``pw_act=False`` it is the inverted residual with expansion 1 of MobileNetV2 Table 2 /
    MobileNetV3 Tables 1-2, where the 1x1 expansion is dropped because it would map C to C.
    ``skip``: ``None`` adds the input when stride is 1 and widths are equal; ``True`` requires
    it (raising if impossible); ``False`` never adds it. ``se_chs`` is the SE bottleneck width.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str = "re",
        se: bool = False,
        pw_act: bool = False,
        skip: bool | None = None,
        bn_eps: float = DEFAULT_BN_EPS,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        padding: str = "symmetric",
        se_chs: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.has_skip = _residual(skip, in_chs, out_chs, stride, "depthwise separable block")
        self.conv_dw = conv2d(in_chs, in_chs, kernel_size, stride, groups=in_chs, padding=padding, dilation=dilation)
        self.bn1 = batch_norm(in_chs, bn_eps, bn_momentum)
        self.act1 = make_activation(act)
        self.se = SqueezeExcite(in_chs, reduced_chs=se_chs) if se else nn.Identity()
        self.conv_pw = conv2d(in_chs, out_chs, 1)
        self.bn2 = batch_norm(out_chs, bn_eps, bn_momentum)
        self.act2 = make_activation(act) if pw_act else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero, so the block begins as the identity (Goyal et al. 2017)."""
        if self.has_skip:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.act1(self.bn1(self.conv_dw(x))))
        out = self.act2(self.bn2(self.conv_pw(out)))
        return x + out if self.has_skip else out


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2 section 3.3, Table 1).

    1x1 expansion -> BN -> act -> depthwise kxk -> BN -> act -> [SE] -> linear 1x1 projection
    -> BN. The projection has no activation: MobileNetV2 section 3.2 shows that a
    non-linearity in the narrow layer destroys information. The residual is possible only when
    the block keeps both resolution and width (stride 1, in == out); ``skip`` states it (see
    :class:`DepthwiseSeparable`). ``se_chs`` is the SE bottleneck width (default: 1/4 of
    ``mid_chs``, rounded to 8). ``dilation`` applies to the depthwise conv, the block's only
    kxk one.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str = "re",
        se: bool = False,
        bn_eps: float = DEFAULT_BN_EPS,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        padding: str = "symmetric",
        se_chs: int | None = None,
        skip: bool | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.has_skip = _residual(skip, in_chs, out_chs, stride, "inverted residual")
        self.conv_pw = conv2d(in_chs, mid_chs, 1)
        self.bn1 = batch_norm(mid_chs, bn_eps, bn_momentum)
        self.act1 = make_activation(act)
        self.conv_dw = conv2d(
            mid_chs, mid_chs, kernel_size, stride, groups=mid_chs, padding=padding, dilation=dilation
        )
        self.bn2 = batch_norm(mid_chs, bn_eps, bn_momentum)
        self.act2 = make_activation(act)
        self.se = SqueezeExcite(mid_chs, reduced_chs=se_chs) if se else nn.Identity()
        self.conv_pwl = conv2d(mid_chs, out_chs, 1)
        self.bn3 = batch_norm(out_chs, bn_eps, bn_momentum)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero, so the block begins as the identity (Goyal et al. 2017)."""
        if self.has_skip:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.se(self.act2(self.bn2(self.conv_dw(out))))
        out = self.bn3(self.conv_pwl(out))
        # Not in place: a forward hook on bn3 (or on conv_pwl after fuse) may keep ``out``.
        return x + out if self.has_skip else out
