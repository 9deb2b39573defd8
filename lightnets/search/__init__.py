"""Latency-aware search: lookup tables of measured site latencies (NetAdapt and NAS build on them)."""

from .lut import (
    Entry,
    LatencyTable,
    Prediction,
    device_fingerprint,
    plot_validation,
    site_key,
    summarize,
    summary_lines,
    validate,
)

__all__ = [
    "Entry",
    "LatencyTable",
    "Prediction",
    "device_fingerprint",
    "plot_validation",
    "site_key",
    "summarize",
    "summary_lines",
    "validate",
]
