"""Where benchmark scripts write their JSON: benchmarks/results/<name>-<cpu>.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lightnets.analysis import machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(name: str, suffix: str = ".json") -> Path:
    """``benchmarks/results/<name>-<cpu slug><suffix>``: one file per benchmark and CPU model."""
    machine = machine_info()
    slug = re.sub(r"[^a-z0-9]+", "-", machine["cpu"].lower()).strip("-") or machine["hostname"]
    RESULTS.mkdir(exist_ok=True)
    return RESULTS / f"{name}-{slug}{suffix}"


def write_results(name: str, payload: dict) -> Path:
    """Write ``payload`` (plus the machine description) as JSON; returns the path."""
    path = result_path(name)
    path.write_text(json.dumps({"machine": machine_info(), **payload}, indent=2))
    return path
