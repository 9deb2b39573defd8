"""ShuffleNetV2 (Ma et al., 2018, arXiv:1807.11164).

Paper Table 5: Conv1 3x3 stride 2 (24), MaxPool 3x3 stride 2, three stages of units (one
stride-2 unit, then 3 / 7 / 3 stride-1 units), Conv5 1x1, global pool, FC. The columns are
the four output-channel settings 0.5x, 1x, 1.5x, 2x.

The downsampling unit is torchvision's (both branches see the whole input and each yields
half of the output), so ShuffleNetV2 1x counts 145.0 M multiply-adds at 224; the paper's
146 M comes from the authors' released unit, whose projection branch keeps the input
width and whose main branch gives the rest.
"""

from __future__ import annotations

from .builder import ConvNet
from .resolve import resolve
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec

STEM = BlockSpec.parse("cn_k3_s2_c24")
REPEATS = (4, 8, 4)

#: Table 5: width -> output channels of Stage2, Stage3, Stage4 and Conv5.
TABLE_5: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
WIDTHS = tuple(TABLE_5)


def stages_for(width_mult: float, kind: str = "sv2") -> tuple[list[list[BlockSpec]], int]:
    """The stages of ShuffleNetV2 ``width_mult``x as specs (``kind``: sv2 or sv2o), and the Conv5 width."""
    if width_mult not in TABLE_5:
        raise ValueError(
            f"ShuffleNetV2 width_mult must be one of {', '.join(map(str, WIDTHS))} (paper Table 5), got {width_mult!r}"
        )
    *channels, conv5 = TABLE_5[width_mult]
    stages = [
        [BlockSpec(kind=kind, stride=2, out_chs=c), BlockSpec(kind=kind, repeats=n - 1, stride=1, out_chs=c)]
        for c, n in zip(channels, REPEATS, strict=True)
    ]
    return stages, conv5


def shufflenet_v2(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.0,
    bn_eps: float = 1e-5,
    official: bool = False,
) -> ConvNet:
    """ShuffleNetV2 ``width_mult``x, width in {0.5, 1.0, 1.5, 2.0} (Table 5's columns).

    ``official=True`` builds the unit of the authors' released code (Megvii's ShuffleNet-Series:
    146 M MAdds at 1x, the paper's figure; classifier without bias), whose checkpoints
    ``lightnets.convert.from_megvii`` loads; the default is torchvision's unit (145 M).
    """
    if not isinstance(official, bool):
        raise ValueError(f"official must be True or False, got {official!r}")  # noqa: TRY004 - bad input is a ValueError here
    stages, conv5 = stages_for(width_mult, "sv2o" if official else "sv2")
    table = NetSpec(
        stem=StemSpec(STEM, pool=True),
        stages=stages,
        head=HeadSpec(conv_chs=conv5, dropout=dropout, num_classes=num_classes, bias=not official),
        # Table 5's columns are the widths themselves: resolved at width 1, nothing is scaled.
        # Divisor 2: the channel split needs even widths.
        settings=BuildSettings(in_chans=in_chans, bn_eps=bn_eps, divisor=2, act="re"),
    )
    return ConvNet(resolve(table))
