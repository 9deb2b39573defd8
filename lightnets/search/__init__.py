"""Latency-aware search: lookup tables of measured site latencies, and NetAdapt's proposals built on them."""

from .adapt import (
    NetAdaptResult,
    Proposal,
    free_cores,
    netadapt,
    plot_netadapt,
    proposal_kind,
    proposals,
    shrink_to_save,
    width_baseline,
)
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
    validation_table,
)

__all__ = [
    "Entry",
    "NetAdaptResult",
    "LatencyTable",
    "Prediction",
    "Proposal",
    "device_fingerprint",
    "free_cores",
    "netadapt",
    "plot_netadapt",
    "plot_validation",
    "proposal_kind",
    "proposals",
    "shrink_to_save",
    "site_key",
    "summarize",
    "summary_lines",
    "validate",
    "validation_table",
    "width_baseline",
]
