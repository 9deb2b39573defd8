"""Deployment: BatchNorm folding, ONNX export, ONNX Runtime inference."""

from .fuse import count_batchnorms, fuse

__all__ = ["count_batchnorms", "fuse"]
