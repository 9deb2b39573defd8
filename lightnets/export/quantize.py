"""Post-training static int8 quantization through ONNX Runtime (QDQ, per-channel weights)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

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


def quantize_int8(
    model: nn.Module,
    path: str,
    calibration: Iterable[torch.Tensor],
    *,
    resolution: int = 224,
    per_channel: bool = True,
) -> str:
    """Export ``model`` to ONNX and quantize it to int8 at ``path``.

    Weights are quantized per output channel (``per_channel=True``, the default: a
    per-tensor scale is what makes MobileNetV3's depthwise layers collapse), activations per
    tensor from min/max statistics over the ``calibration`` batches, in QDQ format so any
    ONNX runtime can run it. BatchNorm is folded before quantization. The batch axis stays
    dynamic; the spatial size is fixed at ``resolution``.
    """
    ort_quant = _require("onnxruntime.quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    del ort_quant
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, os.path.join(tmp, "fp32.onnx"), resolution=resolution, dynamic_size=False)
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, path, _Reader(calibration, "input"), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    return path
