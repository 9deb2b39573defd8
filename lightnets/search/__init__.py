"""Latency-aware search: lookup tables of measured site latencies, and NetAdapt's proposals built on them."""

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
from .netadapt import Proposal, proposal_kind, proposals, shrink_to_save

__all__ = [
    "Entry",
    "LatencyTable",
    "Prediction",
    "Proposal",
    "device_fingerprint",
    "plot_validation",
    "proposal_kind",
    "proposals",
    "shrink_to_save",
    "site_key",
    "summarize",
    "summary_lines",
    "validate",
]
