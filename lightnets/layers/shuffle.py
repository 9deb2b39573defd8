"""ShuffleNet building blocks: channel shuffle and the V1 and V2 units."""

from __future__ import annotations

import torch
from torch import nn

from .activations import make_activation
from .conv import DEFAULT_BN_EPS, DEFAULT_BN_MOMENTUM, batch_norm, conv2d


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across ``groups`` (ShuffleNetV1 section 3.1, Figure 1).

    Reshape to (N, g, C/g, H, W), swap the two channel axes, flatten back. Only reshape and
    transpose are used, so ONNX export keeps the batch and spatial axes dynamic.
    """
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`, so profilers see it as a layer of its own."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleV1Unit(nn.Module):
    """ShuffleNetV1 unit (paper section 3.2, Figure 2 (b) and (c)).

    1x1 group conv -> BN -> ReLU -> channel shuffle -> 3x3 depthwise -> BN (no ReLU, section
    3.2) -> 1x1 group conv -> BN, then add (stride 1) or concat with a 3x3 average-pooled
    shortcut (stride 2), then ReLU. The bottleneck ``mid_chs`` is 1/4 of the unit's output
    channels unless stated.
    ``first_pw_grouped=False`` is the first unit of stage 2, whose input is too narrow to group
    (section 3.3); the shuffle after it is kept, as in the authors' code.

    ``official=True`` shuffles as the authors' released code does (Megvii's ShuffleNet-Series):
    after the depthwise conv and its BN rather than before (per-channel layers commute with a
    permutation, so this only reorders their weights), and viewing the channels as (C/g, g)
    rather than (g, C/g): the inverse permutation, i.e. a shuffle with C/g groups. Either
    interleaves every group with every other; weights trained with one do not fit the other.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        groups: int = 3,
        first_pw_grouped: bool = True,
        act: str = "re",
        bn_eps: float = DEFAULT_BN_EPS,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        official: bool = False,
        mid_chs: int | None = None,
    ) -> None:
        super().__init__()
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"a stride-1 ShuffleNetV1 unit keeps its width, got {in_chs} -> {out_chs}")
        branch_chs = out_chs - in_chs if stride == 2 else out_chs
        mid_chs = out_chs // 4 if mid_chs is None else mid_chs
        pw_groups = groups if first_pw_grouped else 1
        if in_chs % pw_groups:
            raise ValueError(
                f"ShuffleNetV1 unit {in_chs}->{out_chs}: input width {in_chs} must be a multiple of groups={groups}"
            )
        for what, value in (("bottleneck", mid_chs), ("branch output", branch_chs)):
            if value <= 0 or value % groups:
                raise ValueError(
                    f"ShuffleNetV1 unit {in_chs}->{out_chs}: {what} width {value} must be a positive "
                    f"multiple of groups={groups}"
                )
        self.stride = stride
        self.official = official
        self.conv_pw = conv2d(in_chs, mid_chs, 1, groups=pw_groups)
        self.bn1 = batch_norm(mid_chs, bn_eps, bn_momentum)
        self.act1 = make_activation(act)
        shuffle_groups = mid_chs // groups if official else groups
        self.shuffle = ChannelShuffle(shuffle_groups) if groups > 1 else nn.Identity()
        self.conv_dw = conv2d(mid_chs, mid_chs, 3, stride, groups=mid_chs)
        self.bn2 = batch_norm(mid_chs, bn_eps, bn_momentum)
        self.conv_pwl = conv2d(mid_chs, branch_chs, 1, groups=groups)
        self.bn3 = batch_norm(branch_chs, bn_eps, bn_momentum)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.act = make_activation(act)

    def zero_init_last(self) -> None:
        """Start a stride-1 unit's branch at zero, so the unit begins as ReLU(x) (Goyal et al. 2017)."""
        if self.stride == 1:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        if self.official:
            out = self.shuffle(self.bn2(self.conv_dw(out)))
        else:
            out = self.bn2(self.conv_dw(self.shuffle(out)))
        out = self.bn3(self.conv_pwl(out))
        if self.stride == 2:
            # ReLU over the concat equals the authors' ReLU on the main branch only because the
            # shortcut pools a post-ReLU (or max-pooled) input, which is never negative.
            return self.act(torch.cat((self.shortcut(x), out), dim=1))
        return self.act(x + out)


class ShuffleV2Branch(nn.Module):
    """The right branch of a ShuffleNetV2 unit: 1x1 -> BN -> ReLU -> 3x3 dw -> BN -> 1x1 -> BN -> ReLU.

    The 1x1 convolutions are dense and, in torchvision's unit, of equal width (guidelines G1
    and G2 of ShuffleNetV2 section 3); the depthwise conv has no activation. ``mid_chs``
    (default ``out_chs``) differs only in the authors' downsampling unit.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        act: str,
        bn_eps: float,
        bn_momentum: float,
        mid_chs: int | None = None,
    ) -> None:
        super().__init__()
        mid_chs = mid_chs or out_chs
        self.conv_pw = conv2d(in_chs, mid_chs, 1)
        self.bn1 = batch_norm(mid_chs, bn_eps, bn_momentum)
        self.act1 = make_activation(act)
        self.conv_dw = conv2d(mid_chs, mid_chs, 3, stride, groups=mid_chs)
        self.bn2 = batch_norm(mid_chs, bn_eps, bn_momentum)
        self.conv_pwl = conv2d(mid_chs, out_chs, 1)
        self.bn3 = batch_norm(out_chs, bn_eps, bn_momentum)
        self.act3 = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_dw(self.act1(self.bn1(self.conv_pw(x)))))
        return self.act3(self.bn3(self.conv_pwl(x)))


class ShuffleV2Projection(nn.Module):
    """The left branch of a stride-2 ShuffleNetV2 unit: 3x3 dw stride 2 -> BN -> 1x1 -> BN -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int, act: str, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.conv_dw = conv2d(in_chs, in_chs, 3, 2, groups=in_chs)
        self.bn1 = batch_norm(in_chs, bn_eps, bn_momentum)
        self.conv_pw = conv2d(in_chs, out_chs, 1)
        self.bn2 = batch_norm(out_chs, bn_eps, bn_momentum)
        self.act2 = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv_pw(self.bn1(self.conv_dw(x)))))


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 unit (paper section 3, Figure 3 (c) and (d)).

    Stride 1: channel split into halves; the left half passes unchanged (``branch_proj`` is
    ``nn.Identity``), the right goes through :class:`ShuffleV2Branch`; concat; channel shuffle
    with 2 groups. Stride 2: no split; both branches see the whole input and each gives half of
    the (doubled) output. This is torchvision's downsampling unit; the authors' released code
    differs (see ``lightnets.models.shufflenet_v2``). ``mid_chs`` is the main branch's
    bottleneck, ``out_chs / 2`` (its output width) unless stated.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        act: str = "re",
        bn_eps: float = DEFAULT_BN_EPS,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        mid_chs: int | None = None,
    ) -> None:
        super().__init__()
        if out_chs % 2:
            raise ValueError(f"a ShuffleNetV2 unit needs an even output width, got {out_chs}")
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"a stride-1 ShuffleNetV2 unit keeps its width, got {in_chs} -> {out_chs}")
        half = out_chs // 2
        self.stride = stride
        if stride == 2:
            self.branch_proj: nn.Module = ShuffleV2Projection(in_chs, half, act, bn_eps, bn_momentum)
            self.branch_main = ShuffleV2Branch(in_chs, half, 2, act, bn_eps, bn_momentum, mid_chs=mid_chs)
        else:
            self.branch_proj = nn.Identity()
            self.branch_main = ShuffleV2Branch(half, half, 1, act, bn_eps, bn_momentum, mid_chs=mid_chs)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
        else:
            left = right = x
        return self.shuffle(torch.cat((self.branch_proj(left), self.branch_main(right)), dim=1))


class ShuffleV2OfficialUnit(nn.Module):
    """ShuffleNetV2 unit as the authors released it (Megvii's ShuffleNet-Series), 146 M MAdds at 1x.

    Stride 1: the input is split into its even and odd channels (the channel shuffle of the
    previous unit, done here); the even half passes, the odd half goes through the branch;
    concat. Stride 2: the projection branch keeps the input width (dw 3x3 stride 2, 1x1
    ``in -> in``) and the main branch (bottleneck ``out / 2``) gives the remaining
    ``out - in`` channels; concat. No shuffle after the concat. ``mid_chs`` (the main branch's
    bottleneck) is ``out / 2`` unless stated.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        act: str = "re",
        bn_eps: float = DEFAULT_BN_EPS,
        bn_momentum: float = DEFAULT_BN_MOMENTUM,
        mid_chs: int | None = None,
    ) -> None:
        super().__init__()
        if out_chs % 2 or (stride == 1 and in_chs != out_chs):
            raise ValueError(f"a ShuffleNetV2 unit needs an even width kept at stride 1, got {in_chs} -> {out_chs}")
        if stride == 2 and out_chs <= in_chs:
            raise ValueError(f"a stride-2 ShuffleNetV2 unit (authors' release) must widen, got {in_chs} -> {out_chs}")
        self.stride = stride
        mid = out_chs // 2 if mid_chs is None else mid_chs
        if stride == 2:
            self.branch_proj: nn.Module = ShuffleV2Projection(in_chs, in_chs, act, bn_eps, bn_momentum)
            self.branch_main = ShuffleV2Branch(in_chs, out_chs - in_chs, 2, act, bn_eps, bn_momentum, mid_chs=mid)
        else:
            self.branch_proj = nn.Identity()
            self.branch_main = ShuffleV2Branch(
                in_chs // 2, out_chs - in_chs // 2, 1, act, bn_eps, bn_momentum, mid_chs=mid
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            n, c, h, w = x.shape
            halves = x.reshape(n, c // 2, 2, h, w)
            return torch.cat((halves[:, :, 0], self.branch_main(halves[:, :, 1])), dim=1)
        return torch.cat((self.branch_proj(x), self.branch_main(x)), dim=1)
