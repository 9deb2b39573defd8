"""Run the guideline experiments and judge each guideline from the measured trend.

Every experiment is a grid of networks (variants x columns). Each network is timed with
:func:`lightnets.cost.measure_latency` and its multiply-adds counted with
:func:`lightnets.cost.profile`; the table shows the paper's throughput beside this machine's,
both normalised to the first row of their column so trends compare across hardware.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..cost import LatencyResult, profile
from ..cost.latency import SPREAD_LIMIT, measure_latencies
from ..cost.load import LoadWatch, machine_load
from ..models.memory import FLOAT_BYTES, check_memory
from . import paper
from .networks import (
    G3_VARIANTS,
    MAP_SIZE,
    Stack,
    depthwise_only,
    depthwise_separable,
    g1_network,
    g2_network,
    g3_network,
    g4_network,
    pointwise_only,
    standard_conv,
)

EXPERIMENTS = ("g1", "g2", "g3", "g4", "depthwise")
SETTINGS = ("cpu", "gpu")
#: Two throughputs closer than this are a tie: the machines are shared and noisy.
TOLERANCE = 0.02


@dataclass
class LabConfig:
    """How to measure: device, threads, batch, map size, and the time to spend per network."""

    device: str = "cpu"
    threads: int | None = None  # default: 1 on the CPU, as the paper's single-thread ARM runs
    batch: int | None = None  # default: 1 on the CPU, 8 on the GPU (the paper's Figure 1 / Table 8)
    map_size: int = MAP_SIZE
    seconds_per_network: float = 1.0
    min_runs: int = 5
    max_runs: int = 100
    setting: str | None = None  # the paper column to compare with; default by device
    rounds: int = 5  # interleaved rounds over an experiment's networks (drift hits them alike)
    spread_limit: float = SPREAD_LIMIT
    retries: int = 2

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        if self.setting is None:
            self.setting = "gpu" if self.device == "cuda" else "cpu"
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")
        if self.batch is None:
            self.batch = 8 if self.device == "cuda" else 1
        if self.threads is None and self.device == "cpu":
            self.threads = 1
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {self.batch!r}")
        if isinstance(self.map_size, bool) or not isinstance(self.map_size, int) or self.map_size < 1:
            raise ValueError(f"map_size must be an integer >= 1, got {self.map_size!r}")
        if not (isinstance(self.seconds_per_network, (int, float)) and 0 < self.seconds_per_network < math.inf):
            raise ValueError(
                f"seconds_per_network must be a positive finite number of seconds, got {self.seconds_per_network!r}"
            )
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1, got {self.rounds!r}")
        for name in ("min_runs", "max_runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.min_runs > self.max_runs:
            raise ValueError(f"min_runs ({self.min_runs}) exceeds max_runs ({self.max_runs})")


@dataclass
class Cell:
    """One network of the grid: what it is, what it costs, how fast it ran."""

    variant: str
    column: str
    config: str
    madds: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    throughput: float  # batches per second
    paper: float | None = None
    spread: float = 0.0  # (p90 - p10) / median, within rounds (LatencyResult.stability_spread)
    unstable: bool = False  # spread over the limit after the retries

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Claim:
    """One comparison the guideline predicts: ``faster`` should out-run ``slower`` in ``column``."""

    column: str
    faster: str
    slower: str
    ratio: float  # measured throughput of faster / slower
    unstable: bool = False  # rests on a cell whose measurement was unstable

    @property
    def outcome(self) -> str:
        if self.ratio > 1 + TOLERANCE:
            return "agrees"
        if self.ratio < 1 - TOLERANCE:
            return "disagrees"
        return "tie"


@dataclass
class ExperimentResult:
    name: str
    title: str
    guideline: str
    setting: str
    variants: list[str]
    columns: list[str]
    cells: list[Cell]
    claims: list[Claim]
    conditions: dict
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def cell(self, variant: str, column: str) -> Cell:
        return next(c for c in self.cells if c.variant == variant and c.column == column)

    def normalised(self, variant: str, column: str, source: str = "measured") -> float | None:
        first = self.cell(self.variants[0], column)
        this = self.cell(variant, column)
        if source == "paper":
            return this.paper / first.paper if this.paper and first.paper else None
        return this.throughput / first.throughput

    @property
    def verdict(self) -> str:
        """"holds", "does not hold" or "holds partly", from the claims (ties are neither)."""
        outcomes = [c.outcome for c in self.claims]
        agree, disagree = outcomes.count("agrees"), outcomes.count("disagrees")
        if agree and not disagree:
            return "holds"
        if disagree > agree or not agree:
            return "does not hold"
        return "holds partly"

    def verdict_line(self) -> str:
        outcomes = [c.outcome for c in self.claims]
        shaky = sum(c.unstable for c in self.claims)
        return (
            f"{self.guideline}: {self.verdict.upper()} here ({outcomes.count('agrees')} of {len(outcomes)} "
            f"comparisons agree, {outcomes.count('tie')} within {100 * TOLERANCE:.0f}%, "
            f"{outcomes.count('disagrees')} disagree)"
            + (f"; {shaky} comparison{'s rest' if shaky != 1 else ' rests'} on UNSTABLE measurements" if shaky else "")
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "guideline": self.guideline,
            "setting": self.setting,
            "verdict": self.verdict,
            "verdict_line": self.verdict_line(),
            "conditions": self.conditions,
            "variants": self.variants,
            "columns": self.columns,
            "cells": [c.to_dict() for c in self.cells],
            "claims": [{**c.__dict__, "outcome": c.outcome} for c in self.claims],
            "notes": self.notes,
            "extra": self.extra,
        }


def _time_networks(
    nets: dict[tuple[str, str], tuple[Stack, int]], config: LabConfig, progress: Callable[[str], None] | None
) -> dict[tuple[str, str], tuple[int, LatencyResult]]:
    """MAdds (one image) and a LatencyResult for each network (keyed by (variant, column)) at the
    configured batch, all of them measured together in interleaved rounds."""
    timed, madds, runs = {}, {}, {}
    for key, (net, hw) in nets.items():
        # a layer's input and its widest output at once: a lower bound, checked before allocating
        widest = max([m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] + [net.in_chs])
        check_memory(f"timing {net.label} with batch {config.batch} at {hw}x{hw}",
                     FLOAT_BYTES * config.batch * hw * hw * (net.in_chs + widest), hint="use a smaller --batch")
        net = net.to(config.device).eval()
        timed[key] = (net, (config.batch, net.in_chs, hw, hw))
        madds[key] = profile(net, (1, net.in_chs, hw, hw)).total.madds
    names = {key: f"{key[0]} | {key[1]}" for key in nets}
    # One untimed pass each sizes the run counts so every network gets about the same wall time.
    probes = measure_latencies({names[k]: v for k, v in timed.items()}, threads=config.threads, runs=1, warmup=1)
    for key in nets:
        in_budget = math.ceil(config.seconds_per_network * 1e3 / probes[names[key]].median_ms)
        runs[names[key]] = int(min(config.max_runs, max(config.min_runs, config.rounds, in_budget)))
    rounds = min(config.rounds, *runs.values())  # max_runs below rounds: fewer rounds, each network in all

    def step(done: int, total: int, name: str) -> None:
        if progress and done % max(1, len(nets)) == 0:
            progress(f"round {done // len(nets)} of {rounds}: {len(nets)} networks timed")

    results = measure_latencies(
        {names[k]: v for k, v in timed.items()}, threads=config.threads, runs=runs, warmup=1, rounds=rounds,
        spread_limit=config.spread_limit, retries=config.retries, on_step=step,
    )
    return {key: (madds[key], results[names[key]]) for key in nets}


def _cell(variant: str, column: str, label: str, madds: int, lat: LatencyResult, paper: float | None = None) -> Cell:
    return Cell(
        variant=variant, column=column, config=label, madds=madds, median_ms=lat.median_ms, p10_ms=lat.p10_ms,
        p90_ms=lat.p90_ms, runs=lat.runs, throughput=1e3 / lat.median_ms, paper=paper, spread=lat.stability_spread,
        unstable=lat.unstable,
    )


def _grid(
    variants: Sequence[str],
    columns: Sequence[str],
    build: Callable[[str, str], Stack],
    paper_value: Callable[[str, str], float | None],
    config: LabConfig,
    progress: Callable[[str], None] | None,
) -> list[Cell]:
    nets = {(variant, column): (build(variant, column), config.map_size) for column in columns for variant in variants}
    measured = _time_networks(nets, config, progress)
    cells = []
    for (variant, column), (net, _) in nets.items():
        madds, lat = measured[(variant, column)]
        cells.append(_cell(variant, column, net.label, madds, lat, paper_value(variant, column)))
        if progress:
            progress(f"{variant} {column}: {lat.median_ms:.2f} ms{' UNSTABLE' if lat.unstable else ''}")
    return cells


def _conditions(config: LabConfig) -> dict:
    threads = config.threads or torch.get_num_threads()
    return {
        "device": config.device,
        "threads": threads,
        "batch": config.batch,
        "map_size": config.map_size,
        "paper_setting": paper.HARDWARE[config.setting],
        "torch": torch.__version__,
        "denormals": "flushed",
        "rounds": config.rounds,
        "spread_limit": config.spread_limit,
        "retries": config.retries,
    }


def _scaled(channels: int, scale: str, multiple: int = 1) -> int:
    """Channels for the x1 / x2 / x4 columns: widths times 1, 2, 4 (see ``paper``), rounded to ``multiple``."""
    factor = {"x1": 1, "x2": 2, "x4": 4}[scale]
    return max(multiple, round(channels * factor / multiple) * multiple)


def _first_beats_rest(variants: Sequence[str], columns: Sequence[str], cells: list[Cell]) -> list[Claim]:
    lookup = {(c.variant, c.column): c.throughput for c in cells}
    return [
        Claim(column, variants[0], v, lookup[(variants[0], column)] / lookup[(v, column)])
        for column in columns
        for v in variants[1:]
    ]


@dataclass
class GridSpec:
    """The networks of one guideline experiment: variants x columns, and the paper's numbers."""

    variants: list[str]
    columns: list[str]
    build: Callable[[str, str], Stack]
    paper_value: Callable[[str, str], float | None]


def g1_grid(setting: str) -> GridSpec:
    """G1 networks: c1 from the paper (times the column's factor) and c2 = round(c^2 / c1).

    The paper's x1 pairs do not hold MAdds equal (36 x 432 is 5% below 128 x 128), so c2 is
    derived from c1, keeping every pair within 1% while the ratio stays close to the paper's.
    """
    table = paper.G1[setting]
    base = table["1:1"][0][0]

    def pair(variant: str, column: str) -> tuple[int, int]:
        c1, c = _scaled(table[variant][0][0], column), _scaled(base, column)
        return c1, round(c * c / c1)

    return GridSpec(
        list(table), list(paper.SCALES), lambda v, col: g1_network(*pair(v, col)),
        lambda v, col: table[v][1][paper.SCALES.index(col)],
    )


#: Table 2's CPU x1 column asks for c = 180 with g = 8, which cannot be built (180 is not a
#: multiple of 8) and whose nearest buildable widths (176, 184) miss equal MAdds by 3-5%.
#: That column uses c = 68, 96, 136, 192 instead: MAdds within 0.4% of each other.
G2_OVERRIDES = {("cpu", "x1"): {1: 68, 2: 96, 4: 136, 8: 192}}


def g2_channels(setting: str, groups: int, column: str) -> int:
    """The width of the G2 network with ``groups`` groups in ``column`` (x1, x2, x4)."""
    override = G2_OVERRIDES.get((setting, column))
    if override:
        return override[groups]
    channels = _scaled(paper.G2[setting][groups][0], column)
    if channels % groups:
        raise ValueError(f"G2 width {channels} is not divisible by {groups} groups")
    return channels


def g2_grid(setting: str) -> GridSpec:
    table = paper.G2[setting]
    return GridSpec(
        [f"g={g}" for g in table], list(paper.SCALES),
        lambda v, col: g2_network(g2_channels(setting, int(v[2:]), col), int(v[2:])),
        lambda v, col: table[int(v[2:])][1][paper.SCALES.index(col)],
    )


def g3_grid(setting: str) -> GridSpec:
    columns = [f"c={c}" for c in paper.G3_CHANNELS[setting]]
    return GridSpec(
        list(G3_VARIANTS), columns, lambda v, col: g3_network(v, int(col[2:])),
        lambda v, col: paper.G3[setting][v][columns.index(col)],
    )


G4_LABELS = {key: f"ReLU {'yes' if key[0] else 'no'}, shortcut {'yes' if key[1] else 'no'}" for key in paper.G4["cpu"]}
_G4_KEYS = {label: key for key, label in G4_LABELS.items()}


def g4_grid(setting: str) -> GridSpec:
    columns = [f"c={c}" for c in paper.G4_CHANNELS]
    return GridSpec(
        list(G4_LABELS.values()), columns, lambda v, col: g4_network(int(col[2:]), *_G4_KEYS[v]),
        lambda v, col: paper.G4[setting][_G4_KEYS[v]][columns.index(col)],
    )


GRIDS: dict[str, Callable[[str], GridSpec]] = {"g1": g1_grid, "g2": g2_grid, "g3": g3_grid, "g4": g4_grid}


def _run_grid(name: str, config: LabConfig, progress: Callable[[str], None] | None) -> tuple[GridSpec, list[Cell]]:
    grid = GRIDS[name](config.setting)
    return grid, _grid(grid.variants, grid.columns, grid.build, grid.paper_value, config, progress)


def run_g1(config: LabConfig, progress: Callable[[str], None] | None = None) -> ExperimentResult:
    """G1: equal channel width minimises memory access cost (ShuffleNetV2 Table 1)."""
    grid, cells = _run_grid("g1", config, progress)
    return ExperimentResult(
        "g1", "G1: 1x1 conv pairs c1 -> c2 -> c1, equal MAdds", "G1 (equal channel width minimises MAC)",
        config.setting, grid.variants, grid.columns, cells, _first_beats_rest(grid.variants, grid.columns, cells),
        _conditions(config),
        notes=["network: (c1, c2); c2 = round(c^2 / c1) so MAdds stay equal (the paper's pairs differ by up to 5%)"],
    )


def run_g2(config: LabConfig, progress: Callable[[str], None] | None = None) -> ExperimentResult:
    """G2: excessive group convolution increases MAC (ShuffleNetV2 Table 2)."""
    grid, cells = _run_grid("g2", config, progress)
    variants, columns = grid.variants, grid.columns
    lookup = {(c.variant, c.column): c.throughput for c in cells}
    claims = [
        Claim(col, variants[i], variants[i + 1], lookup[(variants[i], col)] / lookup[(variants[i + 1], col)])
        for col in columns
        for i in range(len(variants) - 1)
    ]
    notes = ["each row should be slower than the one above it (more groups, same MAdds)"]
    for (setting, column), widths in G2_OVERRIDES.items():
        if setting == config.setting:
            notes.append(
                f"{column} uses c = {', '.join(map(str, widths.values()))}: the paper's c = 180 cannot take g = 8 "
                f"with equal MAdds"
            )
    return ExperimentResult(
        "g2", "G2: stacked 1x1 group convs, equal MAdds (c^2 / g)", "G2 (excessive group convolution increases MAC)",
        config.setting, variants, columns, cells, claims, _conditions(config), notes=notes,
    )


def run_g3(config: LabConfig, progress: Callable[[str], None] | None = None) -> ExperimentResult:
    """G3: network fragmentation reduces the degree of parallelism (ShuffleNetV2 Table 3)."""
    grid, cells = _run_grid("g3", config, progress)
    merge_note = (
        "series: n square 1x1 convs of width round(c / sqrt(n)); parallel: n branches c -> c/n, merged by "
        "concatenation (the paper does not state the merge; concat adds no arithmetic)"
    )
    return ExperimentResult(
        "g3", "G3: 1, 2 or 4 fragments in series or parallel, equal MAdds", "G3 (fragmentation reduces parallelism)",
        config.setting, grid.variants, grid.columns, cells, _first_beats_rest(grid.variants, grid.columns, cells),
        _conditions(config), notes=[merge_note],
    )


def run_g4(config: LabConfig, progress: Callable[[str], None] | None = None) -> ExperimentResult:
    """G4: element-wise operations are non-negligible (ShuffleNetV2 Table 4)."""
    grid, cells = _run_grid("g4", config, progress)
    variants, columns = grid.variants, grid.columns
    lookup = {(c.variant, c.column): c.throughput for c in cells}
    full, bare = variants[0], variants[-1]
    claims = [Claim(col, v, full, lookup[(v, col)] / lookup[(full, col)]) for col in columns for v in variants[1:]]
    slowdowns = {col: 1 - lookup[(full, col)] / lookup[(bare, col)] for col in columns}
    cost = ", ".join(f"{100 * s:.0f}% at {col}" for col, s in slowdowns.items())
    return ExperimentResult(
        "g4", "G4: ResNet bottleneck x10 with and without ReLU / shortcut",
        "G4 (element-wise operations are non-negligible)", config.setting, variants, columns, cells, claims,
        _conditions(config),
        notes=[
            ("c is the unit's input/output width, the bottleneck c/4 (as in ResNet); each row without ReLU or "
            "shortcut should be faster than the full unit (first row)"),
            f"ReLU + shortcut cost this share of the bare unit's throughput: {cost}",
        ],
        extra={"slowdown": slowdowns},
    )


def run_depthwise(
    config: LabConfig,
    progress: Callable[[str], None] | None = None,
    channels: Sequence[int] = (32, 64, 128, 256),
    sizes: Sequence[int] = (56, 28, 14),
) -> ExperimentResult:
    """Depthwise separable vs standard 3x3 convolution (MobileNetV1 section 3.1, equation 4).

    The separable layer's MAdds are 1/N + 1/9 of the standard one's; the question is whether
    its time falls as far. Reports both ratios and the achieved GFLOP/s of the standard,
    depthwise and pointwise convolutions.
    """
    cells, claims, rates = [], [], []
    variants = ["standard 3x3", "depthwise separable"]
    builders = {"standard 3x3": standard_conv, "depthwise separable": depthwise_separable,
                "depthwise 3x3": depthwise_only, "pointwise 1x1": pointwise_only}
    columns = {(size, n): f"C={n}, {size}x{size}" for size in sizes for n in channels}
    nets = {(label, column): (build(n), size) for (size, n), column in columns.items()
            for label, build in builders.items()}
    measured = _time_networks(nets, config, progress)
    for (size, n), column in columns.items():
        timed = {label: measured[(label, column)] for label in builders}
        for label in variants:
            madds, lat = timed[label]
            cells.append(_cell(label, column, nets[(label, column)][0].label, madds, lat))
        std_madds, std_lat = timed["standard 3x3"]
        sep_madds, sep_lat = timed["depthwise separable"]
        madds_ratio = sep_madds / std_madds
        time_ratio = sep_lat.median_ms / std_lat.median_ms
        gflops = {k: 2 * m * config.batch / (lat.median_ms * 1e6) for k, (m, lat) in timed.items()}
        rates.append({"channels": n, "size": size, "madds_ratio": madds_ratio, "time_ratio": time_ratio,
                      "gflops": gflops, "unstable": [k for k, (_, lat) in timed.items() if lat.unstable]})
        # The finding under test: the separable layer is slower than its MAdds predict.
        claims.append(Claim(column, "MAdds prediction", "depthwise separable", time_ratio / madds_ratio,
                            unstable=std_lat.unstable or sep_lat.unstable))
        if progress:
            progress(f"{column}: MAdds ratio {madds_ratio:.3f}, time ratio {time_ratio:.3f}")
    columns = [c.column for c in cells if c.variant == variants[0]]
    dw_vs_pw = [r["gflops"]["depthwise 3x3"] / r["gflops"]["pointwise 1x1"] for r in rates]
    return ExperimentResult(
        "depthwise", "Depthwise separable vs standard 3x3 conv",
        "Depthwise convolution is slower than its MAdds promise", config.setting, variants, columns, cells, claims,
        _conditions(config),
        notes=[
            "a comparison 'agrees' when the separable layer's time ratio exceeds its MAdds ratio by "
            f"> {100 * TOLERANCE:.0f}%",
            f"depthwise 3x3 reaches {100 * min(dw_vs_pw):.0f}%-{100 * max(dw_vs_pw):.0f}% of the pointwise 1x1 GFLOP/s",
        ],
        extra={"grid": rates},
    )


RUNNERS: dict[str, Callable[..., ExperimentResult]] = {
    "g1": run_g1, "g2": run_g2, "g3": run_g3, "g4": run_g4, "depthwise": run_depthwise,
}


def run_lab(
    names: Sequence[str], config: LabConfig, progress: Callable[[str], None] | None = None
) -> list[ExperimentResult]:
    """Run the named experiments (``g1``, ``g2``, ``g3``, ``g4``, ``depthwise``) in order."""
    for name in names:
        if name not in RUNNERS:
            raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}, all")
    results = []
    for name in names:
        start = time.perf_counter()
        before = machine_load()
        watch = LoadWatch().start()
        result = RUNNERS[name](config, progress)
        result.conditions["seconds"] = round(time.perf_counter() - start, 1)
        result.conditions["load_before"] = before.to_dict()
        result.conditions["load_during"] = watch.reading().to_dict()
        for claim in result.claims:
            pair = (claim.faster, claim.slower)
            claim.unstable = claim.unstable or any(
                c.unstable for c in result.cells if c.column == claim.column and c.variant in pair
            )
        results.append(result)
    return results
