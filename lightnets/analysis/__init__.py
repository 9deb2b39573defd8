"""Analyses that combine the model zoo with the cost tools (the zoo table and its plot)."""

from ..report import machine_info
from .zoo import ZooRow, ZooRun, distinct_models, distinct_specs, run_zoo

__all__ = ["ZooRow", "ZooRun", "distinct_models", "distinct_specs", "machine_info", "run_zoo"]
