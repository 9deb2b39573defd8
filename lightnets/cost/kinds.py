"""Classify ATen operators into the kinds the cost tables report."""

from __future__ import annotations

import torch

aten = torch.ops.aten


def _ops(*names: str) -> frozenset:
    """Operator overloads by name; overloads this torch build lacks are left out."""
    found = set()
    for name in names:
        packet, overload = name.split(".")
        try:
            found.add(getattr(getattr(aten, packet), overload))
        except AttributeError:
            continue
    return frozenset(found)

CONV = _ops("convolution.default", "_convolution.default", "conv2d.default")
LINEAR = _ops("addmm.default", "mm.default", "linear.default")
BATCHNORM = _ops(
    "native_batch_norm.default", "_native_batch_norm_legit.default", "_native_batch_norm_legit_no_training.default",
    "_native_batch_norm_legit_functional.default", "batch_norm.default", "cudnn_batch_norm.default",
)
ACTIVATION = _ops(
    "relu.default", "relu_.default", "hardtanh.default", "hardtanh_.default", "hardswish.default", "hardswish_.default",
    "hardsigmoid.default", "hardsigmoid_.default", "sigmoid.default", "silu.default", "gelu.default", "clamp.default",
    "clamp_min.default",
)
POOL = _ops(
    "max_pool2d_with_indices.default", "max_pool2d.default", "avg_pool2d.default", "_adaptive_avg_pool2d.default",
    "adaptive_avg_pool2d.default", "mean.dim", "mean.default",
)
CONCAT = _ops("cat.default")
SPLIT = _ops(
    "split.Tensor", "split_with_sizes.default", "chunk.default", "slice.Tensor", "narrow.default", "unbind.int",
)
ADD = _ops("add.Tensor", "add_.Tensor")
MULTIPLY = _ops("mul.Tensor", "mul_.Tensor")
#: A copy into a new memory layout: how reshape -> transpose -> reshape (channel shuffle)
#: materialises. Plain views move no data and are not rows.
LAYOUT_COPY = _ops("clone.default", "contiguous.default", "copy_.default", "_reshape_copy.default")
#: Operators that neither compute nor move data (views, allocations, metadata).
IGNORED = _ops(
    "view.default", "_unsafe_view.default", "reshape.default", "transpose.int", "permute.default", "t.default",
    "expand.default", "squeeze.dim", "squeeze.dims", "unsqueeze.default", "flatten.using_ints", "detach.default",
    "alias.default", "empty.memory_format", "empty.default", "zeros.default", "ones.default", "randn.default",
    "lift_fresh.default", "_to_copy.default", "as_strided.default", "dropout.default", "native_dropout.default",
    "sym_size.int",
)

KINDS = (
    "standard conv", "depthwise conv", "grouped conv", "pointwise conv", "linear", "batchnorm", "activation",
    "pool", "channel shuffle", "split", "concat", "add", "multiply", "other",
)


def conv_kind(weight: torch.Tensor, groups: int) -> str:
    """Standard / depthwise / grouped / pointwise, from the weight (O, I/g, kh, kw) and groups."""
    out_chs, in_per_group, *kernel = weight.shape
    if groups > 1 and in_per_group == 1 and out_chs % groups == 0:
        return "depthwise conv"
    if groups > 1:
        return "grouped conv"
    if all(k == 1 for k in kernel):
        return "pointwise conv"
    return "standard conv"


def conv_groups(func: torch._ops.OpOverload, args: tuple) -> int:
    """The ``groups`` argument of a convolution operator (its position differs by overload)."""
    position = 6 if func is aten.conv2d.default else 8
    return int(args[position]) if len(args) > position else 1


def op_kind(func: torch._ops.OpOverload, args: tuple) -> str | None:
    """The report kind of an operator, or None for operators that are not rows."""
    if func in IGNORED:
        return None
    if func in CONV:
        return conv_kind(args[1], conv_groups(func, args))
    for kind, ops in (
        ("linear", LINEAR), ("batchnorm", BATCHNORM), ("activation", ACTIVATION), ("pool", POOL),
        ("concat", CONCAT), ("split", SPLIT), ("add", ADD), ("multiply", MULTIPLY),
        ("channel shuffle", LAYOUT_COPY),
    ):
        if func in ops:
            return kind
    return "other"
