"""Post-training static int8 quantization through ONNX Runtime (QDQ, per-channel weights)."""

from __future__ import annotations

import copy
import itertools
import os
import tempfile
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from .onnx import _require, export_onnx


class _Reader:
    """ONNX Runtime's calibration interface over an iterable of input batches."""

    def __init__(self, batches: Iterable[torch.Tensor], input_name: str) -> None:
        self.batches = iter(batches)
        self.input_name = input_name

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch.detach().cpu().numpy()}


class _HardswishForInt8(nn.Module):
    """h-swish written as ``x * (clamp(x + 3, 0, 6) * (1/6))``, for export to the int8 graph only.

    The same function as ``nn.Hardswish``. Exported as one ``HardSwish`` (or as ``x *
    HardSigmoid(x)``) it has no int8 kernel in ONNX Runtime and runs as dequantize ->
    float HardSigmoid -> quantize -> int8 Mul, four passes over the feature map, three of
    them in float. Written this way it is an int8 Add whose Clip the quantizer folds into
    the output range, a multiply by 1/6 that :func:`_fold_constant_scales` turns into a
    scale, and an int8 Mul: two int8 passes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.clamp(x + 3.0, 0.0, 6.0) * (1.0 / 6.0))


class _HardsigmoidForInt8(nn.Module):
    """The SE gate, hard-sigmoid, as ``clamp(x + 3, 0, 6) * (1/6)``, for the int8 graph only.

    As one ``HardSigmoid`` node it runs in float between a dequantize and a quantize; written
    so, it is an int8 Add whose Clip folds into the output range, and the 1/6 becomes a scale.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + 3.0, 0.0, 6.0) * (1.0 / 6.0)


def _for_int8_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with h-swish and hard-sigmoid written as int8-friendly arithmetic."""
    net = copy.deepcopy(model)
    for module in list(net.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, nn.Hardswish):
                setattr(module, child_name, _HardswishForInt8())
            elif isinstance(child, nn.Hardsigmoid):
                setattr(module, child_name, _HardsigmoidForInt8())
    return net


def _constant(graph, name: str):
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def _global_pools(model) -> int:
    """Rewrite ``ReduceMean`` over H and W (keepdims) as the equal ``GlobalAveragePool``.

    The exporter writes ``x.mean((2, 3), keepdim=True)`` and ``AdaptiveAvgPool2d(1)`` as
    ReduceMean, which the quantizer leaves in float: every SE block then dequantized its
    whole input for the pool, and ONNX Runtime reduced it strided in its NHWC int8 layout.
    GlobalAveragePool is quantized and runs as one int8 ``QLinearGlobalAveragePool``.
    """
    from onnx import helper, shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.input, *inferred.value_info)
             if v.type.tensor_type.HasField("shape")}
    count = 0
    for node in model.graph.node:
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = _constant(model.graph, node.input[1])
        if axes is None or sorted(int(a) % 4 for a in list(axes)) != [2, 3] or attrs.get("keepdims", 1) != 1:
            continue
        if attrs.get("noop_with_empty_axes", 0):
            continue
        data = node.input[0]
        del node.input[:]
        node.input.append(data)
        del node.attribute[:]
        node.op_type = "GlobalAveragePool"
        count += 1
    return count


def _fold_constant_scales(model) -> int:
    """Remove int8 multiplies by a positive scalar constant by folding it into a scale.

    In QDQ form ``Q(DQ(t) * c)`` equals ``t`` read with scale ``c * scale(t)`` whenever the Q's
    range holds every value ``DQ(t) * c`` can take (then the Q neither clamps nor, the grids
    being the same up to rounding, moves a value by more than half a step): the same values
    without a pass over the tensor. Only that case is folded; anything else (a product that
    is a graph output or read by a float op, a per-channel or non-scalar constant, a Q range
    narrower than the product's) is left as it is.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    removed: set[int] = set()
    new_inits = []

    def dq_params(dq):
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) != 3:
            return None
        if any(name not in inits for name in dq.input[1:]):
            return None
        return inits[dq.input[1]], inits[dq.input[2]]

    for mul in graph.node:
        if mul.op_type != "Mul" or len(mul.input) != 2 or mul.output[0] in outputs:
            continue
        dqs = [producer.get(name) for name in mul.input]
        if any(dq_params(d) is None for d in dqs) or dqs[0] is dqs[1]:
            continue
        const = [d for d in dqs if d.input[0] in inits]
        if len(const) != 1:
            continue
        c_dq = const[0]
        t_dq = dqs[1] if dqs[0] is c_dq else dqs[0]
        raw = inits[c_dq.input[0]]
        if raw.ndim > 1 or raw.size != 1:  # a scalar or shape [1]: broadcasting keeps t's shape
            continue
        c_scale, c_zero = dq_params(c_dq)
        c_value = float(
            (raw.astype("float64") - c_zero.astype("float64")).reshape(-1)[0] * float(c_scale.reshape(-1)[0])
        )
        t_scale, t_zero = dq_params(t_dq)
        if t_scale.size != 1 or not c_value > 0:
            continue
        readers = consumers.get(mul.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or readers[0].output[0] in outputs:
            continue
        quant = readers[0]
        if len(quant.input) != 3 or any(name not in inits for name in quant.input[1:]):
            continue
        dequants = consumers.get(quant.output[0], [])
        if not dequants or any(dq_params(d) is None for d in dequants):
            continue
        # every value t can hold, times c, must be representable by the Q (no clamping lost)
        t_info, q_zero = np.iinfo(t_zero.dtype), inits[quant.input[2]]
        q_info, q_scale = np.iinfo(q_zero.dtype), float(inits[quant.input[1]].reshape(-1)[0])
        t_lo, t_hi = (
            (t_info.min - float(t_zero)) * float(t_scale) * c_value,
            (t_info.max - float(t_zero)) * float(t_scale) * c_value,
        )
        q_lo, q_hi = (q_info.min - float(q_zero)) * q_scale, (q_info.max - float(q_zero)) * q_scale
        if t_lo < q_lo - q_scale / 2 or t_hi > q_hi + q_scale / 2:
            continue
        scale_name = f"{mul.name or mul.output[0]}_folded_scale"
        new_inits.append(numpy_helper.from_array((t_scale * c_value).astype(t_scale.dtype), scale_name))
        for dq in dequants:
            dq.input[0], dq.input[1], dq.input[2] = t_dq.input[0], scale_name, t_dq.input[2]
        removed.update({id(mul), id(quant)})
    graph.initializer.extend(new_inits)
    kept = [n for n in graph.node if id(n) not in removed]
    # constant and tensor DequantizeLinear nodes that fed only folded multiplies are now unread
    read = {name for n in kept for name in n.input} | outputs
    kept = [n for n in kept if n.op_type != "DequantizeLinear" or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(kept)
    return len(new_inits)


def _graph_reads(graph) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads, and the graph's outputs.

    Subgraphs (If, Loop, Scan bodies) may read the outer graph's initializers by name, so they count.
    """
    from onnx import AttributeProto

    read = {o.name for o in graph.output}
    for node in graph.node:
        read.update(node.input)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                read |= _graph_reads(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    read |= _graph_reads(sub)
    return read


def drop_unused_initializers(model) -> int:
    """Remove the initializers no node reads, in place; returns how many.

    Quantization leaves the float weights it replaced, and scale folding the scales it replaced:
    59 in MobileNetV3-Small, each a "Removing initializer" warning from ONNX Runtime at every
    load. Initializers that are also graph inputs stay: they are part of the interface.
    """
    graph = model.graph
    keep = _graph_reads(graph) | {i.name for i in graph.input}
    kept = [init for init in graph.initializer if init.name in keep]
    dropped = len(graph.initializer) - len(kept)
    if dropped:
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return dropped


def quantize_int8(
    model: nn.Module,
    path: str,
    calibration: Iterable[torch.Tensor],
    *,
    resolution: int | tuple[int, int] = 224,
    per_channel: bool = True,
) -> str:
    """Export ``model`` to ONNX and quantize it to int8 at ``path``.

    Weights are quantized per output channel (``per_channel=True``, the default: a
    per-tensor scale is what makes MobileNetV3's depthwise layers collapse), activations per
    tensor from min/max statistics over the ``calibration`` batches, in QDQ format so any
    ONNX runtime can run it. BatchNorm is folded before quantization. The batch axis stays
    dynamic; the spatial size is fixed at ``resolution`` (an int, or (height, width)).

    The graph is written so that ONNX Runtime keeps MobileNetV3 in int8 from end to end:
    global pools as GlobalAveragePool (quantized) rather than ReduceMean (float), h-swish as
    an int8 Add and Mul and the SE gate as an int8 Add (see :class:`_HardswishForInt8`), the
    constant 1/6 folded into quantization scales. Without this, MobileNetV3's int8 model was
    no faster than its float one (0.8x-1.0x); see benchmarks/deploy.py. Initializers nothing
    reads are removed, so ONNX Runtime loads the file without a warning. The file is checked
    with ``onnx.checker`` and written only when complete.
    """
    onnx = _require("onnx")
    _require("onnxruntime.quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter(calibration)
    first = next(batches, None)
    if first is None or first.dim() != 4:
        raise ValueError("calibration must yield at least one (N, C, H, W) batch")
    calibration = itertools.chain([first], batches)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(
            _for_int8_export(model), os.path.join(tmp, "fp32.onnx"), resolution=resolution,
            in_chans=first.shape[1], dynamic_size=False,
        )
        graph = onnx.load(fp32)
        if _global_pools(graph):
            drop_unused_initializers(graph)  # the ReduceMean axes; else calibration's session warns of them
            onnx.save(graph, fp32)
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        int8 = os.path.join(tmp, "int8.onnx")
        quantize_static(
            prepared, int8, _Reader(calibration, "input"), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
        quantized = onnx.load(int8)
        _fold_constant_scales(quantized)
        drop_unused_initializers(quantized)
        onnx.checker.check_model(quantized, full_check=True)  # before anything reaches ``path``
        partial = f"{path}.tmp-{os.getpid()}"
        onnx.save(quantized, partial)
        os.replace(partial, path)
    return path
