"""The zoo table: every distinct registered network, its indirect costs and its measured speed.

This is the picture the seeds argue for (ShuffleNetV2 section 2, "direct metric"): MAdds and
MAC side by side with measured latency, so the gap between them is visible.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field

import torch

from ..cost import measure_latency, profile
from ..cost.latency import LatencyResult
from ..models import create_model, get_entry, list_models
from ..report import progress


@dataclass
class ZooRow:
    name: str
    family: str
    aliases: list[str]
    params: int
    madds: int
    mac: int
    mac_bytes: int
    latency: LatencyResult = field(repr=False)

    @property
    def madds_per_ms(self) -> float:
        """Millions of multiply-adds per millisecond of median latency (= GMAdds/s)."""
        return self.madds / 1e6 / self.latency.median_ms

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency"] = self.latency.to_dict()
        d["latency"].pop("times_ms")
        d["median_ms"] = self.latency.median_ms
        d["madds_per_ms"] = self.madds_per_ms
        return d


def distinct_models(names: list[str] | None = None) -> dict[str, list[str]]:
    """Registered names grouped by the network they build: first name -> its aliases.

    ``mobilenet_v2`` and ``mobilenet_v2_100`` are the same network; it is measured once.
    """
    groups: dict[tuple, list[str]] = {}
    for name in names if names is not None else list_models():
        entry = get_entry(name)
        # A family name builds its defaults, which a named variant may fix to the same values.
        defaults = {p.name: p.default for p in inspect.signature(entry.builder).parameters.values()}
        key = (entry.family, tuple(sorted({**defaults, **entry.fixed}.items())))
        groups.setdefault(key, []).append(name)
    return {members[0]: members[1:] for members in groups.values()}


def run_zoo(
    resolution: int = 224,
    *,
    threads: int | None = None,
    runs: int = 30,
    warmup: int = 5,
    models: list[str] | None = None,
    show_progress: bool = True,
    backend: str = "eager",
) -> list[ZooRow]:
    """Measure every distinct registered model (or ``models``) at batch 1, sorted by latency.

    ``backend`` is passed to :func:`measure_latency` (``eager``, ``compile``, ``onnxruntime``).
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    for name in models or []:
        get_entry(name)  # raises on unknown names before any measurement
    size = (1, 3, resolution, resolution)
    rows = []
    groups = distinct_models(models)
    for name in progress(groups, len(groups), "zoo", show_progress):
        model = create_model(name)
        with torch.device("meta"):
            costs = profile(create_model(name), size).total
        rows.append(
            ZooRow(
                name=name,
                family=get_entry(name).family,
                aliases=groups[name],
                params=costs.params,
                madds=costs.madds,
                mac=costs.mac,
                mac_bytes=costs.mac_bytes,
                latency=measure_latency(model, size, threads=threads, runs=runs, warmup=warmup, backend=backend),
            )
        )
    return sorted(rows, key=lambda r: r.latency.median_ms)
