"""``torch.export`` programs (``.pt2``): the model as a graph that runs without lightnets installed."""

from __future__ import annotations

import torch
from torch import nn

from ..formats import atomic_path, check_output_file
from .fuse import fuse
from .onnx import _DecodedDetections


def export_pt2(
    model: nn.Module, path: str, *, resolution: int = 224, fuse_bn: bool = True, max_batch: int = 4096
) -> str:
    """``torch.export`` ``model`` (eval mode, BatchNorm folded unless ``fuse_bn=False``) to ``path``.

    The batch axis is dynamic up to ``max_batch``; the spatial size is fixed at ``resolution``.
    The example batch has two images because torch.export specialises a dimension whose
    example size is 1. The program is written to a temporary file and renamed, so a failed
    export leaves no partial file at ``path``, whose folder must exist (checked before the export,
    :func:`~lightnets.formats.check_output_file`). Returns ``path``.

    A detection model exports as in :func:`~lightnets.export.export_onnx`: forward pass and box
    decoding, returning ``(boxes, scores)``; NMS stays in Python (``model.detect``). A
    segmentation model returns its logits at ``resolution``.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer (the input size in pixels), got {resolution!r}")
    check_output_file(path, "torch.export file")
    net = fuse(model) if fuse_bn else model.eval()
    if getattr(model, "task", None) == "detection":
        net = _DecodedDetections(net, (resolution, resolution))
    x = torch.randn(2, getattr(model, "in_chans", 3), resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    program = torch.export.export(net, (x,), dynamic_shapes={"x": {0: batch}})
    with atomic_path(path) as partial, open(partial, "wb") as fh:
        torch.export.save(program, fh)
    return path
