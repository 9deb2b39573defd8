"""The one rounding path: a paper's table (ratios, alpha) -> a spec of channel counts.

A family file writes its table as the paper prints it and calls :func:`resolve` once. Every
width the built network has is decided here, and stated in the result: block outputs, every
expansion width, every SE width, every ShuffleNet bottleneck, the stem and the last conv.
Nothing downstream rounds a stated width again, so a pruned or searched spec builds exactly
as written.
"""

from __future__ import annotations

import math

from ..layers import make_divisible
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec


def check_width_mult(value: object) -> None:
    """Alpha must be a finite number > 0 (any such value builds; the papers report a few)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"width_mult must be a finite number > 0, got {value!r}")


def resolve(spec: NetSpec, width_mult: float = 1.0) -> NetSpec:
    """The network ``spec`` describes at width multiplier ``width_mult``, every width stated.

    Rules, each from its paper:

    - a block's output is ``make_divisible(alpha * c, d)`` (MobileNetV2/V3 reference; it gives
      MobileNetV1's ``int(alpha * c)`` for every alpha that paper reports), with ``d`` the
      settings' divisor, or ``4 * g`` for ShuffleNetV1 units, whose bottleneck is a quarter of
      the output and is split into ``g`` groups (ShuffleNetV1 section 3.2);
    - the stem is scaled the same way with the settings' divisor;
    - an inverted residual's expansion is ``make_divisible(e * input width, d)`` of its actual
      input (the reference's ``expand_input_by_factor``); with ``e = 1`` and no stated width the
      block is depthwise separable (``ds``), as in every reference: the 1x1 would map C to C;
    - SE squeezes to ``make_divisible(width / 4, d)`` of the channels it gates (MobileNetV3
      section 5.3: "fixed to be 1/4 of the number of channels in expansion layer");
    - a ShuffleNetV1 bottleneck is 1/4 of the unit's output (section 3.2), a ShuffleNetV2
      main branch's is half (section 3, Figure 3);
    - a residual is added where stride is 1 and widths are equal (MobileNetV2 section 3.3);
    - the last conv grows with alpha > 1 only (MobileNetV2 section 4; the V3 reference too);
    - blocks without an activation take the settings' default.

    Only the first repeat of a row strides (and only it takes ``ug``); repeats become one block each (stages stay
    grouped, so module names are ``blocks.i.j`` as in timm). A spec that is already resolved
    is returned unchanged (``width_mult`` must then be 1). In a table, output widths are always
    rounded; stated inner widths (``m``, ``se<n>``) are kept, which a width multiplier other
    than 1 would have to round, so that raises.
    """
    check_width_mult(width_mult)
    if not isinstance(spec, NetSpec):
        raise ValueError(f"resolve takes a NetSpec, got {type(spec).__name__}")
    if spec.is_resolved:
        if width_mult != 1:
            raise ValueError(
                f"this spec is already resolved (every width a channel count); width_mult must be 1, got {width_mult!r}"
            )
        return spec
    settings = spec.settings

    def scale(channels: int, divisor: int) -> int:
        return make_divisible(channels * width_mult, divisor)

    stem_conv = spec.stem.conv
    stem = StemSpec(
        stem_conv.replace(out_chs=scale(stem_conv.out_chs, settings.divisor), act=stem_conv.act or settings.act),
        spec.stem.pool,
    )
    chs = stem.conv.out_chs
    stages = []
    for i, stage in enumerate(spec.stages):
        blocks: list[BlockSpec] = []
        for row in stage:
            for repeat in range(row.repeats):
                name = f"blocks.{i}.{len(blocks)}"
                block = _resolve_block(name, row, chs, repeat, settings, width_mult)
                blocks.append(block)
                chs = block.out_chs
        stages.append(tuple(blocks))
    return NetSpec(
        stem=stem, stages=tuple(stages), head=_resolve_head(spec.head, settings, width_mult), settings=settings
    )


def _resolve_block(
    name: str, row: BlockSpec, in_chs: int, repeat: int, settings: BuildSettings, width_mult: float
) -> BlockSpec:
    stride = row.stride if repeat == 0 else 1
    if width_mult != 1 and (row.mid_chs is not None or row.se_chs is not None):
        raise ValueError(
            f"{name} ({row}) states a width (m / se<n>) that width_mult={width_mult!r} would have to round; "
            f"give it as a ratio (e) or resolve with width_mult=1"
        )
    divisor = 4 * row.groups if row.kind in ("sv1", "sv1o") else settings.divisor
    out = make_divisible(row.out_chs * width_mult, divisor)
    kind = row.kind
    if kind == "ir" and row.expand_ratio == 1.0 and row.mid_chs is None:
        kind = "ds"
    changes: dict[str, object] = {"kind": kind, "repeats": 1, "stride": stride, "out_chs": out}
    if repeat > 0:
        changes["first_pw_grouped"] = True  # 'ug' (ShuffleNetV1 section 3.3) is the first unit's only
    changes["act"] = row.act or settings.act
    mid = row.mid_chs
    if kind == "ir" and mid is None:
        mid = make_divisible(in_chs * row.expand_ratio, settings.divisor)
    elif kind in ("sv1", "sv1o") and mid is None:
        mid = out // 4
    elif kind in ("sv2", "sv2o") and mid is None:
        mid = out // 2
    if kind in ("ir", "sv1", "sv1o", "sv2", "sv2o"):
        changes["mid_chs"] = mid
    if kind == "ir":
        changes["expand_ratio"] = 1.0  # the width is stated now; the ratio was its recipe
    if row.se and row.se_chs is None:
        gated = mid if kind == "ir" else in_chs  # a ds block's SE gates the depthwise output
        changes["se_chs"] = make_divisible(gated / 4, settings.divisor)
    if kind in ("ir", "ds") and row.residual is None:
        changes["residual"] = stride == 1 and in_chs == out
    try:
        return row.replace(**changes)
    except ValueError as err:
        raise ValueError(f"{name} ({row}): {err}") from None


def _resolve_head(head: HeadSpec, settings: BuildSettings, width_mult: float) -> HeadSpec:
    if head.conv_chs is None:
        return head
    conv = max(head.conv_chs, make_divisible(head.conv_chs * width_mult, settings.divisor))
    return HeadSpec(
        conv_chs=conv,
        act=head.act or settings.act,
        pool_first=head.pool_first,
        dropout=head.dropout,
        num_classes=head.num_classes,
        bias=head.bias,
    )
