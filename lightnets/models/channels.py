"""Which channels must be pruned together, and a child network that keeps its parent's weights.

NetAdapt (Yang et al., 2018; MobileNetV3 section 4.2) shrinks one layer at a time and starts
each proposal from the previous network's weights. In a network with shortcuts a layer's
output channels are not its own: a residual chain shares one width, a depthwise conv's input
and output are the same channels, an SE block gates the channels it squeezes.
:func:`channel_groups` lists these sets for a spec, with every layer each one touches;
:func:`resize_group` changes one in the spec; :func:`inherit_weights` builds the child and copies
the parent's weights for the channels a rule keeps (default: largest L2 norm of the filters
that produce them, NetAdapt's choice).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .builder import ConvNet, _as_resolved, build
from .spec import BlockSpec, NetSpec, StemSpec

#: ``(site, field)`` pairs: where a group's width is written in a spec.
Field = tuple[str, str]


@dataclass(frozen=True)
class ChannelGroup:
    """A set of channels that one width describes, and every layer that reads or writes them.

    ``members`` are ``"module.path:role"`` with role ``out`` (a conv's output filters, and its
    bias), ``in`` (a conv's or the classifier's input), ``dw`` (a depthwise conv: its filters
    are its channels), ``gate`` (an SE expansion: one gate per channel, sliced like ``out`` but
    not a producer of the channels) or ``bn`` (a BatchNorm's four per-channel tensors). ``fields`` are the
    ``(site, field)`` pairs of the spec that state the width (see :func:`resize_group`).
    ``prunable`` is False where changing the width means more than slicing (``note`` says why).
    """

    name: str
    width: int
    members: tuple[str, ...]
    fields: tuple[Field, ...]
    multiple: int = 1
    prunable: bool = True
    note: str = ""

    def producers(self) -> list[str]:
        """Module paths of the layers whose output filters make these channels."""
        return [m.rsplit(":", 1)[0] for m in self.members if m.endswith(":out")]

    def __str__(self) -> str:
        flag = "" if self.prunable else f"  (not prunable: {self.note})"
        return f"{self.name}: {self.width} channels, {len(self.members)} members{flag}"


class _Group:
    def __init__(self, name: str, width: int) -> None:
        self.name, self.width = name, width
        self.members: list[str] = []
        self.fields: list[Field] = []
        self.multiple, self.prunable, self.note = 1, True, ""

    def add(self, *members: str) -> _Group:
        self.members.extend(members)
        return self

    def freeze(self, why: str) -> None:
        self.prunable = False
        self.note = self.note or why

    def done(self) -> ChannelGroup:
        return ChannelGroup(
            self.name, self.width, tuple(self.members), tuple(self.fields), self.multiple, self.prunable, self.note
        )


_SPLIT_NOTE = (
    "ShuffleNetV2's channel split, concat and shuffle tie these channels to every unit of the stage "
    "in interleaved order; change the stage width in the spec and train"
)
_GROUPED_NOTE = (
    "ShuffleNetV1's grouped 1x1 convs and channel shuffle need equal cuts per group in shuffled order, "
    "which slicing does not give; change the width in the spec and train"
)


def channel_groups(spec: NetSpec | str) -> list[ChannelGroup]:
    """The channel groups of a network, in order: stem, per block, head.

    - a residual chain is one group (the stem or first block's output and every block that
      adds to it: MobileNetV2 section 3.3);
    - an inverted residual's expansion (``blocks.i.j.mid``): its 1x1 expansion's output, the
      depthwise conv, the SE it feeds and the projection's input;
    - an SE bottleneck (``blocks.i.j.se``);
    - a ShuffleNet unit's bottleneck (``blocks.i.j.mid``); a ShuffleNetV2 stage's width and every
      ShuffleNetV1 group are listed but not prunable (see ``note``);
    - the head's last conv (``head``), whose input is the last group and output the classifier's.
    """
    spec = _as_resolved(spec)
    out: list[_Group] = []
    stem = _Group("stem", spec.stem.conv.out_chs).add("conv_stem:out", "bn1:bn")
    stem.fields.append(("stem", "out_chs"))
    out.append(stem)
    current = stem
    for path, block in spec.blocks():
        current = _block_groups(path, block, current, out)
    head = spec.head
    if head.conv_chs is None:
        current.add("classifier:in")
    else:
        current.add("conv_head:in")
        group = _Group("head", head.conv_chs).add("conv_head:out")
        if not head.pool_first:
            group.add("bn2:bn")
        group.add("classifier:in")
        group.fields.append(("head", "conv_chs"))
        out.append(group)
    return [g.done() for g in out]


def _block_groups(p: str, b: BlockSpec, current: _Group, out: list[_Group]) -> _Group:
    """Add block ``p``'s groups; return the group of its output channels."""

    def new_output(*members: str) -> _Group:
        group = _Group(p, b.out_chs).add(*members)
        group.fields.append((p, "out_chs"))
        out.append(group)
        return group

    def se_group(gated: _Group) -> None:
        if b.se:
            gated.add(f"{p}.se.conv_reduce:in", f"{p}.se.conv_expand:gate")
            se = _Group(f"{p}.se", b.se_chs).add(f"{p}.se.conv_reduce:out", f"{p}.se.conv_expand:in")
            se.fields.append((p, "se_chs"))
            out.append(se)

    def mid_group(*members: str) -> _Group:
        mid = _Group(f"{p}.mid", b.mid_chs).add(*members)
        mid.fields.append((p, "mid_chs"))
        out.append(mid)
        return mid

    if b.kind == "cn":
        current.add(f"{p}.conv:in")
        return new_output(f"{p}.conv:out", f"{p}.bn1:bn")
    if b.kind in ("ds", "dsa"):
        current.add(f"{p}.conv_dw:dw", f"{p}.bn1:bn")
        se_group(current)
        current.add(f"{p}.conv_pw:in")
        if b.residual:
            current.add(f"{p}.conv_pw:out", f"{p}.bn2:bn").fields.append((p, "out_chs"))
            return current
        return new_output(f"{p}.conv_pw:out", f"{p}.bn2:bn")
    if b.kind == "ir":
        current.add(f"{p}.conv_pw:in")
        mid = mid_group(f"{p}.conv_pw:out", f"{p}.bn1:bn", f"{p}.conv_dw:dw", f"{p}.bn2:bn")
        se_group(mid)
        mid.add(f"{p}.conv_pwl:in")
        if b.residual:
            current.add(f"{p}.conv_pwl:out", f"{p}.bn3:bn").fields.append((p, "out_chs"))
            return current
        return new_output(f"{p}.conv_pwl:out", f"{p}.bn3:bn")
    main = f"{p}.branch_main"
    branch = (f"{main}.conv_pw:out", f"{main}.bn1:bn", f"{main}.conv_dw:dw", f"{main}.bn2:bn", f"{main}.conv_pwl:in")
    if b.kind in ("sv2", "sv2o"):
        mid_group(*branch)
        main_out = (f"{main}.conv_pwl:out", f"{main}.bn3:bn")
        if b.stride == 2:
            proj = f"{p}.branch_proj"
            current.add(f"{proj}.conv_dw:dw", f"{proj}.bn1:bn", f"{proj}.conv_pw:in", f"{main}.conv_pw:in")
            if b.kind == "sv2o":
                # The authors' projection keeps the input width: the output's split depends on it.
                current.freeze(_SPLIT_NOTE)
            group = new_output(f"{proj}.conv_pw:out", f"{proj}.bn2:bn", *main_out)
        else:
            current.add(f"{main}.conv_pw:in", *main_out).fields.append((p, "out_chs"))
            group = current
        group.freeze(_SPLIT_NOTE)
        return group
    # ShuffleNetV1 units: the branch is b.conv_pw ... b.conv_pwl, as in the unit's own names.
    mid = mid_group(f"{p}.conv_pw:out", f"{p}.bn1:bn", f"{p}.conv_dw:dw", f"{p}.bn2:bn", f"{p}.conv_pwl:in")
    mid.multiple = b.groups
    mid.freeze(_GROUPED_NOTE)
    current.add(f"{p}.conv_pw:in")
    current.freeze(_GROUPED_NOTE)
    if b.stride == 2:
        # The output is the pooled input concatenated with the branch: both widths in one.
        group = new_output(f"{p}.conv_pwl:out", f"{p}.bn3:bn")
    else:
        group = current.add(f"{p}.conv_pwl:out", f"{p}.bn3:bn")
        group.fields.append((p, "out_chs"))
    group.multiple = b.groups
    group.freeze(_GROUPED_NOTE)
    return group


def resize_group(spec: NetSpec, name: str, width: int) -> NetSpec:
    """``spec`` with channel group ``name`` at ``width`` channels: every field that states it changes.

    Shrinking a residual chain changes the output width of every block on it at once, so the
    residuals stay possible (MobileNetV3 section 4.2: "reduce the size of bottleneck in all
    blocks that share the same bottleneck size"). The result is validated like any spec.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"a group width is an integer >= 1, got {width!r}")
    groups = {g.name: g for g in channel_groups(spec)}
    if name not in groups:
        raise ValueError(f"no channel group {name!r}; groups: {', '.join(groups)}")
    group = groups[name]
    if width % group.multiple:
        raise ValueError(f"group {name} needs a multiple of {group.multiple} channels, got {width}")
    stem, head = spec.stem, spec.head
    stages = [list(stage) for stage in spec.stages]
    for site, field in group.fields:
        if site == "stem":
            stem = StemSpec(stem.conv.replace(out_chs=width), stem.pool)
        elif site == "head":
            head = dataclasses.replace(head, conv_chs=width)
        else:
            _, i, j = site.split(".")
            stages[int(i)][int(j)] = stages[int(i)][int(j)].replace(**{field: width})
    return NetSpec(stem=stem, stages=tuple(tuple(s) for s in stages), head=head, settings=spec.settings)


#: ``keep(group, parent, width) -> indices``: which of the parent's channels a child keeps.
KeepRule = Callable[[ChannelGroup, nn.Module, int], Sequence[int]]


def keep_largest_l2(group: ChannelGroup, parent: nn.Module, width: int) -> list[int]:
    """The ``width`` channels whose producing filters have the largest L2 norm, in their order.

    NetAdapt's choice (Yang et al., 2018, section 4.2: "the filters with the largest L2-norm
    magnitude"). Where several layers write the same channels (a residual chain) their
    filters' squared norms are summed. Ties keep the lower index.
    """
    squares = torch.zeros(group.width, dtype=torch.float64)
    for path in group.producers():
        weight = parent.get_submodule(path).weight.detach().to(torch.float64)
        squares += weight.flatten(1).pow(2).sum(1)
    order = sorted(range(group.width), key=lambda c: (-squares[c].item(), c))
    return sorted(order[:width])


def inherit_weights(parent: ConvNet, child_spec: NetSpec | str, keep: KeepRule = keep_largest_l2) -> ConvNet:
    """Build ``child_spec`` and fill it with ``parent``'s weights.

    The child may differ from the parent in widths only (``out_chs``, ``mid_chs``, ``se_chs``,
    the stem's and the head conv's), as :func:`resize_group` changes them. For every channel
    group that narrows, ``keep`` picks the parent's channels to keep (default
    :func:`keep_largest_l2`), and every conv, BN, SE and classifier tensor that touches the group
    is sliced with the same indices; a group that widens keeps all the parent's channels first
    and leaves the new ones as initialised. With an unchanged spec the child equals the parent
    (in the parent's train / eval mode).
    """
    if not isinstance(parent, ConvNet):
        raise ValueError(
            f"inherit_weights needs a lightnets ConvNet parent (it reads parent.spec), got {type(parent).__name__}"
        )
    child_spec = NetSpec.parse(child_spec) if isinstance(child_spec, str) else child_spec
    child_spec.require_resolved("inherit_weights")
    _check_same_structure(parent.spec, child_spec)
    old = {g.name: g for g in channel_groups(parent.spec)}
    new = channel_groups(child_spec)
    kept: dict[str, torch.Tensor] = {}
    for group in new:
        before = old[group.name]
        if group.width == before.width:
            continue
        if not before.prunable:
            raise ValueError(f"channel group {group.name} changes {before.width} -> {group.width}, but {before.note}")
        if group.width > before.width:
            kept[group.name] = torch.arange(before.width)
        else:
            kept[group.name] = _checked(keep(before, parent, group.width), group.name, before.width, group.width)
    # Which group each (module, role) belongs to, for the slicing below.
    role_of: dict[tuple[str, str], str] = {}
    for group in new:
        for member in group.members:
            path, role = member.rsplit(":", 1)
            role_of[(path, role)] = group.name

    child = build(child_spec)
    source = parent.state_dict()
    with torch.no_grad():
        for module_path, module in child.named_modules():
            for key, target in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                full = f"{module_path}.{key}" if module_path else key
                value = source[full]
                for dim, group in _sliced_dims(module, module_path, key, role_of):
                    if group in kept:
                        value = value.index_select(dim, kept[group])
                if value.shape == target.shape:
                    target.copy_(value)
                    continue
                if value.dim() != target.dim() or any(v > t for v, t in zip(value.shape, target.shape, strict=True)):
                    raise AssertionError(
                        f"{full}: {tuple(value.shape)} -> {tuple(target.shape)} is not explained by a channel group"
                    )
                target[tuple(slice(0, n) for n in value.shape)].copy_(value)
    return child.train(parent.training)


def _sliced_dims(module: nn.Module, path: str, key: str, role_of: dict[tuple[str, str], str]) -> list[tuple[int, str]]:
    """``(dim, group)`` pairs of one tensor: which of its axes are which group's channels."""
    dims = []
    if isinstance(module, nn.Conv2d):
        out = role_of.get((path, "out")) or role_of.get((path, "dw")) or role_of.get((path, "gate"))
        if out:
            dims.append((0, out))
        if key == "weight" and (group := role_of.get((path, "in"))) and module.groups == 1:
            dims.append((1, group))
    elif isinstance(module, nn.BatchNorm2d):
        if key != "num_batches_tracked" and (group := role_of.get((path, "bn"))):
            dims.append((0, group))
    elif isinstance(module, nn.Linear):
        if key == "weight" and (group := role_of.get((path, "in"))):
            dims.append((1, group))
    return dims


def _checked(indices: Sequence[int], name: str, before: int, width: int) -> torch.Tensor:
    chosen = [int(i) for i in indices]
    if len(chosen) != width or len(set(chosen)) != width or not all(0 <= i < before for i in chosen):
        raise ValueError(
            f"the keep rule for group {name} must return {width} distinct channel indices in [0, {before}), "
            f"got {chosen[:10]}..."
        )
    return torch.tensor(sorted(chosen))


def _widthless(block: BlockSpec) -> BlockSpec:
    return block.replace(
        out_chs=1, mid_chs=None if block.mid_chs is None else 1, se_chs=None if block.se_chs is None else 1
    )


def _check_same_structure(parent: NetSpec, child: NetSpec) -> None:
    if parent.settings != child.settings:
        raise ValueError(f"the child's build settings differ from the parent's: {child.settings} vs {parent.settings}")
    same_head = all(
        getattr(parent.head, f) == getattr(child.head, f)
        for f in ("act", "pool_first", "dropout", "num_classes", "bias")
    )
    if not same_head or (parent.head.conv_chs is None) != (child.head.conv_chs is None):
        raise ValueError(
            f"the child's head differs from the parent's in more than its width: {child.head} vs {parent.head}"
        )
    if _widthless(parent.stem.conv) != _widthless(child.stem.conv) or parent.stem.pool != child.stem.pool:
        raise ValueError(
            f"the child's stem differs from the parent's in more than its width: {child.stem} vs {parent.stem}"
        )
    shape = [len(s) for s in parent.stages]
    if [len(s) for s in child.stages] != shape:
        raise ValueError(f"the child has stages of {[len(s) for s in child.stages]} blocks, the parent {shape}")
    for (path, a), (_, b) in zip(parent.blocks(), child.blocks(), strict=True):
        if _widthless(a) != _widthless(b):
            raise ValueError(f"{path} differs from the parent's in more than widths: {b} vs {a}")
