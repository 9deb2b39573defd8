"""ShuffleNetV1 (Zhang et al., 2018, arXiv:1707.01083).

Paper Table 1: a 3x3 stride-2 conv of 24 channels, a 3x3 max pool, then three stages of
ShuffleNet units, each starting with one stride-2 unit (repeat 1, then 3 / 7 / 3 stride-1
units). The output widths depend on the number of groups g (the table's columns).
"""

from __future__ import annotations

from .builder import ConvNet
from .resolve import check_width_mult, resolve
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec

STEM_CHS = 24  # Conv1, 3x3, stride 2, 24 channels, then MaxPool 3x3 stride 2
REPEATS = (4, 8, 4)  # Stage 2, 3, 4: one stride-2 unit, then 3 / 7 / 3 stride-1 units

#: Table 1, output channels of stages 2, 3, 4 for each number of groups g (ShuffleNet 1x).
TABLE_1: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
GROUPS = tuple(TABLE_1)
SCALES = (0.25, 0.5, 1.0, 1.5, 2.0)  # the scale factors s of Table 2

#: The authors' release (Megvii's ShuffleNet-Series) trained g = 3 and g = 8 at these scales.
#: Its stage widths are Table 1 scaled; its stems were picked by hand (24 at 1.5x, not 36).
OFFICIAL_GROUPS = (3, 8)
OFFICIAL_STEM_CHS = {0.5: {3: 12, 8: 16}, 1.0: {3: 24, 8: 24}, 1.5: {3: 24, 8: 24}, 2.0: {3: 48, 8: 48}}


def table_1(groups: int, official: bool = False) -> list[list[BlockSpec]]:
    """Table 1's column for ``groups`` groups (ShuffleNet 1x) as stages of specs.

    The first pointwise layer of stage 2 is not grouped (section 3.3, ``ug``).
    ``official=True`` gives the units of the authors' release (``sv1o``).
    """
    if isinstance(groups, bool) or groups not in TABLE_1:
        raise ValueError(f"ShuffleNetV1 groups must be one of {sorted(TABLE_1)}, got {groups!r}")
    kind = "sv1o" if official else "sv1"
    return [
        [
            BlockSpec(kind=kind, stride=2, out_chs=channels, groups=groups, first_pw_grouped=index > 0),
            BlockSpec(kind=kind, repeats=repeats - 1, stride=1, out_chs=channels, groups=groups),
        ]
        for index, (channels, repeats) in enumerate(zip(TABLE_1[groups], REPEATS, strict=True))
    ]


def shufflenet_v1(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.0,
    groups: int = 3,
    bn_eps: float = 1e-5,
    official: bool = False,
) -> ConvNet:
    """ShuffleNetV1 ``width_mult``x (the scale factor s) with ``groups`` groups g in {1, 2, 3, 4, 8}.

    Table 2 reports s in {0.25, 0.5, 1, 1.5, 2}; any s > 0 builds. g = 3 is the paper's
    default (Table 2's 1x, g = 3 row: 140 MFLOPs). ``official=True`` builds the authors'
    released network (g in {3, 8}, s in {0.5, 1, 1.5, 2}; their stems, their shuffle order,
    classifier without bias), whose checkpoints ``lightnets.convert.from_megvii`` loads.
    """
    check_width_mult(width_mult)
    if not isinstance(official, bool):
        raise ValueError(f"official must be True or False, got {official!r}")  # noqa: TRY004 - bad input is a ValueError here
    stages = table_1(groups, official)
    if official and (groups not in OFFICIAL_GROUPS or width_mult not in OFFICIAL_STEM_CHS):
        raise ValueError(
            f"the authors' ShuffleNetV1 release has groups in {OFFICIAL_GROUPS} and width_mult in "
            f"{tuple(OFFICIAL_STEM_CHS)}, got groups={groups!r}, width_mult={width_mult!r}"
        )
    table = NetSpec(
        stem=StemSpec(BlockSpec.parse(f"cn_k3_s2_c{STEM_CHS}"), pool=True),
        stages=stages,
        head=HeadSpec(dropout=dropout, num_classes=num_classes, bias=not official),  # GlobalPool, FC: no last conv
        # "ShuffleNet s x" scales every layer's filters by s (section 4.1.1); units round to
        # multiples of 4g (see resolve), the stem to a multiple of g, so that a stride-2 unit's
        # branch (output minus input) divides by g. At 1x this is Table 1 exactly.
        settings=BuildSettings(in_chans=in_chans, bn_eps=bn_eps, divisor=groups, act="re"),
    )
    spec = resolve(table, width_mult)
    if official:
        # The release picked its stems by hand (24 at 1.5x, not 36): a table fact, stated.
        conv = spec.stem.conv.replace(out_chs=OFFICIAL_STEM_CHS[width_mult][groups])
        spec = spec.replace(stem=StemSpec(conv, pool=True))
    return ConvNet(spec)
