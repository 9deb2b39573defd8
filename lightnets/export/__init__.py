"""Deployment: BatchNorm folding, ONNX and torch.export files, int8 quantization, ONNX Runtime inference.

:func:`~lightnets.export.latency.register_backends` provides the ``onnxruntime`` and
``onnxruntime-int8`` backends of :func:`lightnets.cost.measure_latency`; importing this package
calls it (cost sits below export and cannot import it), and so does the first use of a top-level
``lightnets`` name.
"""

from .fuse import count_batchnorms, fuse
from .latency import (
    PartLayout,
    TimingExports,
    boundary_reorders,
    in_place_outputs,
    onnxruntime_rounds,
    onnxruntime_times,
    optimise_behind_a_blocked_layer,
    optimise_for_this_cpu,
    part_layout,
    random_feeds,
    register_backends,
    strip_boundary_reorders,
    timed_runs,
)
from .onnx import BoundRun, OnnxModel, export_onnx
from .predict import DensePrediction, Prediction, predict, predict_dense
from .pt2 import export_pt2
from .quantize import quantize_int8

__all__ = [
    "BoundRun", "DensePrediction", "OnnxModel", "PartLayout", "Prediction", "TimingExports", "boundary_reorders",
    "count_batchnorms", "export_onnx", "export_pt2", "fuse", "in_place_outputs", "onnxruntime_rounds",
    "onnxruntime_times", "optimise_behind_a_blocked_layer", "optimise_for_this_cpu", "part_layout", "predict",
    "predict_dense", "quantize_int8", "random_feeds",
    "register_backends", "strip_boundary_reorders", "timed_runs",
]

# ``import lightnets`` no longer loads the library (the CLI's --help stays fast), so the exporter
# registers its backends itself: measure_latency(backend="onnxruntime") works whenever it is loaded.
register_backends()
