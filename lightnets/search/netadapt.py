"""NetAdapt's proposals: which channel groups to shrink, and by how much, to save a latency step.

MobileNetV3 section 4.2 (NetAdapt, Yang et al. 2018, with MobileNetV3's changes): at each
step, every proposal must cut the measured latency by at least ``delta`` (0.01 |L| of the
seed's latency L); MobileNetV3 uses two kinds of proposal, "reduce the size of any expansion
layer" and "reduce bottleneck in all blocks that share the same bottleneck size - to
maintain residual connections". Here an expansion is a ``blocks.i.j.mid`` channel group and a
shared bottleneck is a residual chain group (one width written by several blocks), both from
:func:`~lightnets.models.channel_groups`; latencies come from a :class:`LatencyTable`, whose
missing entries are measured, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import ChannelGroup, NetSpec, channel_groups, resize_group
from .lut import LatencyTable

KINDS = ("expansion", "bottleneck")


def proposal_kind(group: ChannelGroup) -> str | None:
    """``expansion``, ``bottleneck`` or None (a group NetAdapt's MobileNetV3 proposals do not shrink)."""
    if not group.prunable:
        return None
    if group.name.endswith(".mid"):
        return "expansion"
    if sum(field == "out_chs" for _, field in group.fields) > 1:
        return "bottleneck"  # a residual chain: every block on it writes the same width
    return None


@dataclass(frozen=True)
class Proposal:
    """One candidate of a NetAdapt step: ``group`` shrunk to ``width`` channels."""

    kind: str
    group: str
    width_before: int
    width: int
    spec: NetSpec
    predicted_ms: float


def shrink_to_save(
    table: LatencyTable,
    spec: NetSpec,
    group: ChannelGroup,
    delta_ms: float,
    input_size: int = 224,
    step: int = 8,
) -> Proposal | None:
    """The widest shrink of ``group`` (in multiples of ``step``) that saves at least ``delta_ms``.

    Widths are tried from the current one downwards, each predicted from measured entries (a
    width the table lacks is measured); None when even ``step`` channels do not save enough.
    NetAdapt's "choose the number of filters": the fewest removed that meet the constraint.
    """
    if delta_ms <= 0:
        raise ValueError(f"delta_ms must be > 0, got {delta_ms!r}")
    kind = proposal_kind(group)
    if kind is None:
        raise ValueError(f"channel group {group.name} is not an expansion or a shared bottleneck NetAdapt shrinks")
    before = table.predict(spec, input_size).total_ms
    multiple = max(step, group.multiple)
    width = (group.width - 1) // multiple * multiple
    while width >= multiple:
        child = resize_group(spec, group.name, width)
        predicted = table.predict(child, input_size).total_ms
        if before - predicted >= delta_ms:
            return Proposal(kind, group.name, group.width, width, child, predicted)
        width -= multiple
    return None


def proposals(
    table: LatencyTable,
    spec: NetSpec,
    delta_ms: float,
    input_size: int = 224,
    kinds: tuple[str, ...] = KINDS,
    step: int = 8,
) -> list[Proposal]:
    """Every proposal of one NetAdapt step: for each expansion and shared bottleneck, its widest
    shrink that saves ``delta_ms`` (groups that cannot save it are left out)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown proposal kinds {sorted(unknown)}; allowed: {', '.join(KINDS)}")
    found = []
    for group in channel_groups(spec):
        if proposal_kind(group) in kinds:
            proposal = shrink_to_save(table, spec, group, delta_ms, input_size, step)
            if proposal is not None:
                found.append(proposal)
    return found
