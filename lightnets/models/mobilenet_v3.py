"""MobileNetV3-Large and -Small (Howard et al., 2019, arXiv:1905.02244).

Paper Tables 1 and 2, one spec per row. The table's "exp size" column is written as the
expansion ratio of the row's input width (``e``), which is how the paper's TensorFlow
reference defines it (``expand_input_by_factor``), so widths scale correctly with alpha: 72 / 24
is ``e3``, 200 / 80 is ``e2.5``, 184 / 80 is ``e2.3``, 88 / 24 is ``e3.67``. ``se`` marks the
table's SE column, ``re`` / ``hs`` its NL column. Stages are grouped as timm groups them, so
timm's checkpoints load with unchanged keys.
"""

from __future__ import annotations

from .builder import ConvNet
from .resolve import resolve
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec, parse_stages

STEM = BlockSpec.parse("cn_k3_s2_c16_hs")  # conv2d 3x3 s2, 16, HS (both tables)

# fmt: off
TABLE_1_LARGE = parse_stages([
    ["ds_k3_s1_c16_re"],                                                 # 112^2: bneck 3x3, exp 16
    ["ir_k3_s2_e4_c24_re", "ir_k3_s1_e3_c24_re"],                        # exp 64, 72
    ["ir_k5_s2_e3_c40_se_re", "ir_r2_k5_s1_e3_c40_se_re"],               # exp 72, 120, 120
    ["ir_k3_s2_e6_c80_hs", "ir_k3_s1_e2.5_c80_hs", "ir_r2_k3_s1_e2.3_c80_hs"],  # exp 240, 200, 184, 184
    ["ir_r2_k3_s1_e6_c112_se_hs"],                                       # exp 480, 672
    ["ir_k5_s2_e6_c160_se_hs", "ir_r2_k5_s1_e6_c160_se_hs"],             # exp 672, 960, 960
    ["cn_k1_s1_c960_hs"],                                                # 7^2: conv2d 1x1, 960
])
TABLE_2_SMALL = parse_stages([
    ["ds_k3_s2_c16_se_re"],                                              # 112^2: bneck 3x3, exp 16
    ["ir_k3_s2_e4.5_c24_re", "ir_k3_s1_e3.67_c24_re"],                   # exp 72, 88
    ["ir_k5_s2_e4_c40_se_hs", "ir_r2_k5_s1_e6_c40_se_hs"],               # exp 96, 240, 240
    ["ir_r2_k5_s1_e3_c48_se_hs"],                                        # exp 120, 144
    ["ir_k5_s2_e6_c96_se_hs", "ir_r2_k5_s1_e6_c96_se_hs"],               # exp 288, 576, 576
    # The paper marks SE on this 1x1 conv; no reference implementation has it.
    ["cn_k1_s1_c576_hs"],                                                # 7^2: conv2d 1x1, 576
])
# fmt: on
LAST_CONV_LARGE = 1280  # conv2d 1x1, NBN, 1280 (after the pool)
LAST_CONV_SMALL = 1024  # conv2d 1x1, NBN, 1024


def minimalistic(stages: list[list[BlockSpec]]) -> list[list[BlockSpec]]:
    """The "minimalistic" variant of the TF reference: no SE, ReLU everywhere, 3x3 kernels."""
    return [
        [s.replace(se=False, act="re", kernel=3 if s.kind != "cn" else s.kernel) for s in stage] for stage in stages
    ]


SIZES = ("large", "small")


def mobilenet_v3_spec(
    size: str = "large",
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.2,
    minimal: bool = False,
    bn_eps: float = 1e-3,
    padding: str = "symmetric",
    reduced_tail: bool = False,
) -> NetSpec:
    """The resolved spec :func:`mobilenet_v3_large` / :func:`mobilenet_v3_small` build (``size``
    ``"large"``: Table 1, ``"small"``: Table 2), for builders that change it before building
    (the dilated LR-ASPP backbone, the SSDLite backbone).

    ``reduced_tail=True`` halves the widths after the last stride-2 block's expansion (section
    6.2: "we reduce the channels of the last block by a factor of 2"; Table 6's detection
    backbones): the last inverted-residual stage's outputs, its expansions (which stay 6x their
    input), the 1x1 conv after it, and the head's last conv, as torchvision's
    ``mobilenet_v3_large(reduced_tail=True)`` does (Large: 160 -> 80, 960 -> 480, 1280 -> 640).
    """
    if size not in SIZES:
        raise ValueError(f"MobileNetV3 size must be one of {', '.join(SIZES)}, got {size!r}")
    if not isinstance(reduced_tail, bool):
        raise ValueError(f"reduced_tail must be True or False, got {reduced_tail!r}")
    table, last_conv = (TABLE_1_LARGE, LAST_CONV_LARGE) if size == "large" else (TABLE_2_SMALL, LAST_CONV_SMALL)
    if reduced_tail:
        # The last two rows: the stride-32 inverted residuals and the 1x1 conv. Their expansion
        # ratios are of the (halved) input width, so the expansions halve with them; the first
        # block's expansion reads the unreduced stride-16 width and keeps its size.
        table = [*table[:-2], *([row.replace(out_chs=row.out_chs // 2) for row in stage] for stage in table[-2:])]
        last_conv //= 2
    spec = NetSpec(
        stem=StemSpec(STEM.replace(act="re") if minimal else STEM),
        stages=minimalistic(table) if minimal else table,
        # Pool first, then conv2d 1x1 NBN: the efficient last stage (section 5.1).
        head=HeadSpec(
            conv_chs=last_conv, act="re" if minimal else "hs", pool_first=True, dropout=dropout, num_classes=num_classes
        ),
        settings=BuildSettings(in_chans=in_chans, bn_eps=bn_eps, bn_momentum=0.01, padding=padding, act="re"),
    )
    return resolve(spec, width_mult)


def mobilenet_v3_large(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.2,
    minimal: bool = False,
    bn_eps: float = 1e-3,
    padding: str = "symmetric",
) -> ConvNet:
    """MobileNetV3-Large (Table 1) with width multiplier ``width_mult`` (alpha, section 6.1.2).

    The last 1x1 conv keeps 1280 channels for alpha < 1, as the paper's TensorFlow reference
    does, and grows with alpha > 1 (torchvision instead shrinks it with alpha, so its
    ``width_mult=0.75`` is a different network). BN uses eps 1e-3 and momentum 0.01, the
    reference's values, which torchvision keeps; timm's non-TF ports use eps 1e-5, so pass
    ``bn_eps=1e-5`` to load those. ``minimal=True`` builds the minimalistic variant.
    """
    return ConvNet(mobilenet_v3_spec(
        "large",
        num_classes=num_classes,
        width_mult=width_mult,
        in_chans=in_chans,
        dropout=dropout,
        minimal=minimal,
        bn_eps=bn_eps,
        padding=padding,
    ))


def mobilenet_v3_small(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.2,
    minimal: bool = False,
    bn_eps: float = 1e-3,
    padding: str = "symmetric",
) -> ConvNet:
    """MobileNetV3-Small (Table 2); the last 1x1 conv is 1024 wide. See :func:`mobilenet_v3_large`."""
    return ConvNet(mobilenet_v3_spec(
        "small",
        num_classes=num_classes,
        width_mult=width_mult,
        in_chans=in_chans,
        dropout=dropout,
        minimal=minimal,
        bn_eps=bn_eps,
        padding=padding,
    ))
