"""The zoo table: every distinct registered network, its indirect costs and its measured speed.

This is the picture the seeds argue for (ShuffleNetV2 section 2, "direct metric"): MAdds and
MAC side by side with measured latency, so the gap between them is visible.
"""

from __future__ import annotations

import inspect
import statistics
from dataclasses import asdict, dataclass, field

import torch

from ..catalog import TASKS, task_of
from ..cost import profile
from ..cost.latency import SPREAD_LIMIT, LatencyResult, measure_latencies
from ..cost.load import BUSY_CORES, LoadWatch, MachineLoad, load_lines, machine_load
from ..models import create_model, get_entry, list_models
from ..models.memory import check_request, spec_of
from ..report import ProgressLine, progress


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
    task: str = "classification"  # or detection, segmentation (lightnets.catalog.TASKS)

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


def distinct_models(names: list[str] | None = None, task: str | None = None) -> dict[str, list[str]]:
    """Registered names (default: every registered model, or those of one of
    :data:`~lightnets.catalog.TASKS`) grouped by the network they build: first name -> its aliases.

    ``mobilenet_v2`` and ``mobilenet_v2_100`` are the same network, and so are
    ``ssdlite320_mobilenet_v3_large`` and ``ssdlite_mobilenet_v3_large``; each is measured once.
    """
    groups: dict[tuple, list[str]] = {}
    for name in names if names is not None else list_models(task=task):
        entry = get_entry(name)
        # A family name builds its defaults, which a named variant may fix to the same values.
        defaults = {p.name: p.default for p in inspect.signature(entry.builder).parameters.values()}
        key = (entry.family, tuple(sorted({**defaults, **entry.fixed}.items())))
        groups.setdefault(key, []).append(name)
    return {members[0]: members[1:] for members in groups.values()}


def distinct_specs() -> dict:
    """The distinct classifiers (:func:`distinct_models`) -> each one's spec, less any spec an
    earlier name already builds: the networks a latency table is built and judged on (57
    today). :func:`distinct_models` groups names by their builder's arguments; a table is keyed
    by what a network computes, so two names that built one spec would be one network to it."""
    specs: dict = {}
    seen: set[str] = set()
    for name in distinct_models(task="classification"):  # dense heads' models have no NetSpec
        spec = create_model(name).spec
        if str(spec) not in seen:
            seen.add(str(spec))
            specs[name] = spec
    return specs


@dataclass
class ZooRun:
    """The zoo's rows and how they were measured: rounds, spread limit, the machine's load.

    ``rows``: stable rows by median latency, then the unstable ones (by latency, not ranked
    among the others: their figure is not a measurement of the network alone).
    """

    rows: list[ZooRow]
    resolution: int
    backend: str
    threads: int
    rounds: int
    runs: int
    spread_limit: float
    retries: int
    load_before: MachineLoad
    load_during: MachineLoad

    @property
    def unstable(self) -> list[ZooRow]:
        return [r for r in self.rows if r.latency.unstable]

    @property
    def busy(self) -> bool:
        return self.load_before.busy or self.load_during.busy

    def title(self, cpu: str, torch_version: str) -> str:
        return (
            f"lightnets zoo: {self.resolution}x{self.resolution}, batch 1, {self.threads} "
            f"thread{'s' if self.threads != 1 else ''}, {self.backend} CPU ({cpu}), torch {torch_version}, "
            f"denormals flushed"
        )

    def header(self) -> list[str]:
        """What a reader needs before the figures: how they were taken and how busy the machine was."""
        lines = [
            f"measured in {self.rounds} interleaved rounds (every model once per round), {self.runs} timed runs "
            f"per model; median of the per-round medians; a row whose spread exceeds "
            f"{100 * self.spread_limit:.0f}%, or timed while other processes used {BUSY_CORES} cores or more, "
            f"is measured again (up to {self.retries} times), then marked UNSTABLE",
            "spread: (p90 - p10) / median of a row's runs, each divided by its round's median (the machine's drift "
            "between rounds, which hits every row alike, taken out); drift: (max - min) / median of its round medians"
            + (f"; median drift {100 * statistics.median(r.latency.drift for r in self.rows):.0f}%" if self.rows
               else ""),
            *load_lines(self.load_before, self.load_during),
        ]
        if any(r.task != "classification" for r in self.rows):
            lines.append(
                "dense models (task detection, segmentation) built with their default classes (SSDLite 91, COCO's; "
                "LR-ASPP 21, Pascal VOC's) and timed at the same size: a detector's forward pass (box codes and class "
                "logits per anchor; decoding and NMS not included), a segmenter's logits at the input size"
            )
        return lines

    def summary(self) -> str:
        if not self.unstable:
            return f"all {len(self.rows)} rows stable (spread within {100 * self.spread_limit:.0f}%)"
        return (f"{len(self.unstable)} of {len(self.rows)} rows UNSTABLE after {self.retries + 1} attempts: "
                + ", ".join(r.name for r in self.unstable))

    def to_dict(self) -> dict:
        return {
            "resolution": self.resolution, "backend": self.backend, "threads": self.threads, "rounds": self.rounds,
            "runs": self.runs, "spread_limit": self.spread_limit, "retries": self.retries,
            "load_before": self.load_before.to_dict(), "load_during": self.load_during.to_dict(),
            "unstable": [r.name for r in self.unstable], "models": [r.to_dict() for r in self.rows],
        }


def run_zoo(
    resolution: int = 224,
    *,
    threads: int | None = None,
    runs: int = 30,
    warmup: int = 5,
    rounds: int = 5,
    spread_limit: float = SPREAD_LIMIT,
    retries: int = 2,
    models: list[str] | None = None,
    show_progress: bool = True,
    backend: str = "eager",
    task: str | None = None,
) -> ZooRun:
    """Measure every distinct registered model (or ``models``) at batch 1, in interleaved rounds.

    Every model is built first, then timed once per round for ``rounds`` rounds (``runs``
    timed runs in all, so at most ``runs`` rounds; see :func:`lightnets.cost.measure_latencies`), so a drift in the
    machine's speed hits all rows alike. The machine's load is read before (half a second)
    and during the measurement. ``backend`` is passed on (``eager``, ``compile``,
    ``onnxruntime``, ``onnxruntime-int8``). ``task`` keeps the models of one task (classification,
    detection, segmentation; default: all). Dense models are built with their default classes
    (detectors 91, COCO's; segmenters 21, Pascal VOC's) and timed at ``resolution`` like the
    classifiers: a detector's forward pass (box codes and class logits per anchor, no decoding or
    NMS), a segmenter's logits at the input size.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    if models is not None and not models:
        raise ValueError("models is empty: give at least one registered name, or None for the whole zoo")
    for name in models or []:
        get_entry(name)  # raises on unknown names before any measurement
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if models is not None and task is not None:
        models = [name for name in models if task_of(name) == task]
        if not models:
            raise ValueError(f"none of the models given is a {task} model")
    size = (1, 3, resolution, resolution)
    groups = distinct_models(models, task)
    costs, built = {}, {}
    for name in progress(groups, len(groups), "building", show_progress):
        model = create_model(name)
        check_request(spec_of(model), f"timing {name} at {resolution}x{resolution}", resolution)
        with torch.device("meta"):
            costs[name] = profile(create_model(name), size).total
        built[name] = (model, size)
    if isinstance(runs, int) and not isinstance(runs, bool) and isinstance(rounds, int) and runs < rounds:
        rounds = max(runs, 1)  # fewer runs than rounds: one run per round; the header states the rounds taken
    load_before = machine_load()
    watch = LoadWatch().start()
    bar = ProgressLine("zoo", enabled=show_progress)
    latencies = measure_latencies(
        built, threads=threads, runs=runs, warmup=warmup, rounds=rounds, spread_limit=spread_limit,
        retries=retries, backend=backend, on_step=bar.update,
    )
    bar.close()
    load_during = watch.reading()
    rows = [
        ZooRow(
            name=name, family=get_entry(name).family, aliases=groups[name], params=costs[name].params,
            madds=costs[name].madds, mac=costs[name].mac, mac_bytes=costs[name].mac_bytes, latency=latencies[name],
            task=task_of(name),
        )
        for name in groups
    ]
    rows.sort(key=lambda r: (r.latency.unstable, r.latency.median_ms))
    first = rows[0].latency
    return ZooRun(rows, resolution, backend, first.threads, rounds, first.runs, spread_limit, retries,
                  load_before, load_during)
