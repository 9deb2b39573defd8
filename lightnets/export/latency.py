"""The ONNX Runtime backends of :func:`lightnets.cost.measure_latency`, registered by ``lightnets.export``.

Timing ONNX Runtime means exporting the model first, which is this package's job; cost sits
below export, so the backends are defined here and handed to it (``register_backend``) rather
than imported by it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import torch
from torch import nn

from ..cost.latency import register_backend
from .onnx import OnnxModel, export_onnx
from .quantize import quantize_int8


@contextlib.contextmanager
def onnxruntime_runner(
    model: nn.Module, input_size: tuple[int, ...], *, threads: int, device: torch.device, channels_last: bool,
    int8: bool = False,
) -> Iterator[OnnxModel]:
    """An ONNX Runtime session of ``model`` at ``input_size`` (int8 with ``int8=True``), its files removed on exit.

    The graph has a fixed input size, like the int8 graph: ONNX Runtime plans static shapes
    better (about 3% here). The int8 graph is calibrated on 8 random batches: right for timing,
    not for accuracy, which needs real calibration data (``lightnets export --int8 --calibration``).
    """
    if device.type != "cpu" or channels_last:
        raise ValueError("the onnxruntime backends run on the CPU, without channels_last")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        if int8:
            generator = torch.Generator().manual_seed(1)
            calibration = [torch.randn(input_size, generator=generator) for _ in range(8)]
            quantize_int8(model, path, calibration, resolution=input_size[-1])
        else:
            export_onnx(model, path, resolution=input_size[-1], in_chans=input_size[1], dynamic_size=False)
        yield OnnxModel(path, threads=threads)


def onnxruntime_int8_runner(
    model: nn.Module, input_size: tuple[int, ...], **conditions
) -> contextlib.AbstractContextManager:
    """:func:`onnxruntime_runner` with ``int8=True``."""
    return onnxruntime_runner(model, input_size, int8=True, **conditions)


def register_backends() -> None:
    """Hand the two ONNX Runtime backends to :func:`lightnets.cost.measure_latency` (``import lightnets`` does)."""
    register_backend("onnxruntime", onnxruntime_runner)
    register_backend("onnxruntime-int8", onnxruntime_int8_runner)
