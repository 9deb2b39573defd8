"""Classify ATen operators into the kinds the cost tables report."""

from __future__ import annotations

import torch

aten = torch.ops.aten

CONV = {aten.convolution.default, aten._convolution.default, aten.conv2d.default}
LINEAR = {aten.addmm.default, aten.mm.default, aten.linear.default}
BATCHNORM = {
    aten.native_batch_norm.default,
    aten._native_batch_norm_legit.default,
    aten._native_batch_norm_legit_no_training.default,
    aten._native_batch_norm_legit_functional.default,
    aten.batch_norm.default,
    aten.cudnn_batch_norm.default,
}
ACTIVATION = {
    aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default,
    aten.hardswish.default, aten.hardswish_.default, aten.hardsigmoid.default, aten.hardsigmoid_.default,
    aten.sigmoid.default, aten.silu.default, aten.gelu.default, aten.clamp.default, aten.clamp_min.default,
}
POOL = {
    aten.max_pool2d_with_indices.default, aten.max_pool2d.default, aten.avg_pool2d.default,
    aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default, aten.mean.dim, aten.mean.default,
}
CONCAT = {aten.cat.default}
SPLIT = {aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.slice.Tensor, aten.narrow.default, aten.unbind.int}
ADD = {aten.add.Tensor, aten.add_.Tensor}
MULTIPLY = {aten.mul.Tensor, aten.mul_.Tensor}
#: A copy into a new memory layout: how reshape -> transpose -> reshape (channel shuffle)
#: materialises. Plain views move no data and are not rows.
LAYOUT_COPY = {aten.clone.default, aten.contiguous.default, aten.copy_.default, aten._reshape_copy.default}
#: Operators that neither compute nor move data (views, allocations, metadata).
IGNORED = {
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.transpose.int, aten.permute.default,
    aten.t.default, aten.expand.default, aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default,
    aten.flatten.using_ints, aten.detach.default, aten.alias.default, aten.empty.memory_format, aten.empty.default,
    aten.zeros.default, aten.ones.default, aten.randn.default, aten.lift_fresh.default, aten._to_copy.default,
    aten.as_strided.default, aten.dropout.default, aten.native_dropout.default, aten.sym_size.int,
}

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
