"""Latency lookup tables: every distinct site of a network timed once on this device.

NetAdapt (Yang et al., 2018, section 3.3) and MnasNet-style search (MobileNetV3 section 4.1)
score many networks; measuring each whole network is slow, and counting MAdds is not the
direct metric (ShuffleNetV2 section 2). A lookup table times each distinct layer once (here:
each :func:`~lightnets.models.walk` site, which is a stem, a block or a head with its resolved
spec, input channels and input size) and predicts a network as the sum of its sites plus a
per-network overhead. Entries are measured with :func:`~lightnets.cost.measure_latency`'s
conditions (warm-up, median / p10 / p90, threads set, denormals flushed) and never guessed: a
missing entry is measured on demand, or the prediction refuses.

Speed: this VM's speed drifts by up to 1.6x within minutes to an hour. A table times a fixed
reference block between its sites (:mod:`lightnets.cost.speed`) and stores every time in "ms at
the table's reference speed": divided by the reference's time at that moment over the table's
nominal reference time (``reference_ms``, the median of the readings while it was built).
Whole networks measured later (:func:`validate`, :meth:`LatencyTable.calibrate`) are divided the
same way against the same nominal time, so that predictions and measurements are compared at one
speed whatever the machine did in between. :meth:`LatencyTable.speed_now` reads the factor to
turn a prediction into this moment's ms (:meth:`Prediction.at_speed`).

ONNX Runtime on x86 runs convolutions in a blocked layout (NCHWc) and converts where the layout
changes. A site is timed without the conversions at its edges that only a part cut out of a
network pays (:func:`~lightnets.export.strip_boundary_reorders`), its input arriving blocked. A
table built with ``input_layouts=True`` instead gives each site's input the layout the site
before it leaves in the network (plain after a ShuffleNet unit's concatenation and shuffle): it
learns each site's layouts (:class:`~lightnets.export.PartLayout`) before timing it, and keeps an
entry per input layout where the layout changes what the site runs (:meth:`LatencyTable.keys`).
With ``fold_residuals=True`` a site whose input arrives blocked is timed as ONNX Runtime runs it
behind a blocked layer, its residual Add folded into the convolution and written in place.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch

from ..cost import (
    BACKENDS,
    REFERENCE_EVERY,
    REFERENCE_ID,
    REFERENCE_RUNS,
    REFERENCE_SHAPE,
    REFERENCE_WARMUP,
    RoundTimes,
    measure_latency,
    percentile,
    reference_module,
    round_schedule,
    speed_summary,
)
from ..export import PartLayout, TimingExports, onnxruntime_rounds
from ..formats import atomic_write
from ..models import BuildSettings, NetSpec, Site, build, build_site, resolve, walk
from ..report import ProgressLine, format_table, machine_info, progress, pyplot

FORMAT = "lightnets-latency-table/2"
#: Format 1: no speed reference (entries in the ms of the build's moment, read as not normalised).
READABLE_FORMATS = ("lightnets-latency-table/1", FORMAT)


SITE_TIMING = {
    "torch": "wall time of the site alone",
    "onnxruntime": "wall time in ONNX Runtime of the site's optimised graph without its boundary layout conversions",
}


def device_fingerprint(backend: str, threads: int, batch: int, input_layouts: bool = False,
                       fold_residuals: bool = False) -> dict:
    """What a table's entries depend on: the CPU, core count, torch, backend, threads and batch
    (and, for an ONNX Runtime table that prices sites by their input's layout or times them with
    their residuals folded, that)."""
    machine = machine_info()
    # absent when off: earlier tables still match
    extra = {**({"input_layouts": True} if input_layouts else {}),
             **({"fold_residuals": True} if fold_residuals else {})}
    return {
        "cpu": machine["cpu"],
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "backend": backend,
        "threads": threads,
        "batch": batch,
        "site_timing": SITE_TIMING["onnxruntime" if backend.startswith("onnxruntime") else "torch"],
        **extra,
    }


@dataclass(frozen=True)
class Entry:
    """One site's measured latency (milliseconds) and how many timed runs it rests on.

    With a speed reference, ``median_ms`` / ``p10_ms`` / ``p90_ms`` are at the table's reference
    speed and ``raw_median_ms`` is the same median of the runs as measured (not divided); without
    one both are as measured (``raw_median_ms`` None)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    raw_median_ms: float | None = None

    @property
    def raw_ms(self) -> float:
        return self.median_ms if self.raw_median_ms is None else self.raw_median_ms


@dataclass(frozen=True)
class Prediction:
    """A network's predicted latency, ``overhead_ms + scale * sites_ms`` (see :meth:`LatencyTable.calibrate`).

    In ms at the table's reference speed (as measured, for a table without a reference);
    :meth:`at_speed` converts. ``raw_total_ms``: the same prediction from the entries as measured
    (not divided by the speed) with the fit on whole networks as measured, for comparison."""

    total_ms: float
    sites_ms: float
    overhead_ms: float
    scale: float
    per_site: list[tuple[str, float]] = field(repr=False)
    raw_total_ms: float | None = None
    raw_sites_ms: float | None = None

    def at_speed(self, factor: float) -> float:
        """The predicted ms on a machine running ``factor`` times slower than the table's reference
        speed: ``prediction.at_speed(table.speed_now())`` is this moment's ms."""
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < float("inf"):
            raise ValueError(f"factor must be a positive finite number (reference time now / the table's), "
                             f"got {factor!r}")
        return self.total_ms * factor


def site_key(site: Site, settings: BuildSettings) -> str:
    """The table key: what the site computes, on what input (padding matters for stride-2 convs)."""
    return site.key() + ("" if settings.padding == "symmetric" else f" {settings.padding}")


#: Appended to an ``input_layouts`` table's key for a site whose input arrives in the plain layout
#: where that changes what it runs (:class:`~lightnets.export.PartLayout`); the bare key is the
#: site with its input blocked (NCHWc), as most sites inside a network get it.
PLAIN_INPUT = " | input plain"


class LatencyTable:
    """Measured site latencies for one backend, thread count, batch size and device.

    Built with :meth:`new` or read with :meth:`load`, extended by :meth:`measure_sites` or on
    demand by :meth:`predict`, written atomically with :meth:`save`. A table records the
    device it was measured on; measuring into a table from another device raises (the entries
    would mix two machines).
    """

    def __init__(self, fingerprint: dict, runs: int = 30, warmup: int = 5, reference: bool = True,
                 reference_every: int = REFERENCE_EVERY) -> None:
        if fingerprint.get("backend") not in BACKENDS:
            raise ValueError(f"unknown backend {fingerprint.get('backend')!r}; allowed: {', '.join(BACKENDS)}")
        if not isinstance(reference, bool):
            raise ValueError(f"reference must be True or False (time a speed reference between the modules), "
                             f"got {reference!r}")
        round_schedule(1, 0, reference_every)  # refuses a bad reference_every
        self.fingerprint = fingerprint
        self.runs, self.warmup = runs, warmup
        self.entries: dict[str, Entry] = {}
        #: with input_layouts: each site's layouts (by site key), to give each site of a network
        #: the input layout the site before it ends in
        self.layouts: dict[str, PartLayout] = {}
        self.overhead_ms = 0.0
        self.scale = 1.0
        self.raw_overhead_ms = 0.0  # the fit on whole networks as measured, over raw entries
        self.raw_scale = 1.0
        self.calibration: list[dict] = []
        self.reference = reference
        self.reference_every = reference_every
        self.reference_id = REFERENCE_ID
        self.reference_ms: float | None = None  # nominal: set by the first measurement
        #: every reference reading (ms) this object took, in order; not saved
        self.reference_readings: list[float] = []

    @classmethod
    def new(cls, backend: str = "eager", threads: int | None = None, batch: int = 1, runs: int = 30, warmup: int = 5,
            reference: bool = True, reference_every: int = REFERENCE_EVERY, input_layouts: bool = False,
            fold_residuals: bool = False):
        """An empty table for this device; ``threads`` defaults to torch's current count.

        ``reference``: time the speed reference every ``reference_every`` modules of each round and
        store entries at the table's reference speed (see the module docstring); False: as measured.

        ``input_layouts`` (ONNX Runtime only): time each site with its input in the layout the
        site before it leaves in the network, an entry per layout (:meth:`keys`), instead of
        always blocked. Faithful to the conversions a network runs (ShuffleNet's), but on this
        machine it predicted worse (README: 53 of 57 networks within 10% against 55 in a run of the
        default on the same day): a ShuffleNet unit alone with its input plain took 0.087 ms, four of
        them chained 0.054-0.067 ms each. An experiment to rerun on other CPUs.

        ``fold_residuals`` (ONNX Runtime only): time a site whose input arrives blocked as ONNX
        Runtime runs it behind a blocked layer, its residual Add folded into the convolution
        and written in place (:class:`~lightnets.export.TimingExports`). Faithful to what a
        network runs (ShuffleNetV1 g8 x2.0 (official): summed sites 1.14x the network before,
        1.01x so), but tables built so predicted no better here (README: 52 of 57 alone, 48 of
        57 with ``input_layouts``); an experiment to rerun on other CPUs.
        """
        for name, value in (("batch", batch), ("runs", runs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("input_layouts", input_layouts), ("fold_residuals", fold_residuals)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
            if value and not backend.startswith("onnxruntime"):
                raise ValueError(f"{name} is for the onnxruntime backends (their blocked layout), not {backend!r}")
        if fold_residuals and backend != "onnxruntime":
            raise ValueError(f"fold_residuals is for the fp32 onnxruntime backend: {backend!r} runs no convolution "
                             f"in the blocked layout")
        threads = threads or torch.get_num_threads()
        return cls(device_fingerprint(backend, threads, batch, input_layouts, fold_residuals), runs=runs, warmup=warmup,
                   reference=reference, reference_every=reference_every)

    @property
    def backend(self) -> str:
        return self.fingerprint["backend"]

    @property
    def threads(self) -> int:
        return self.fingerprint["threads"]

    @property
    def batch(self) -> int:
        return self.fingerprint["batch"]

    @property
    def onnxruntime(self) -> bool:
        return self.backend.startswith("onnxruntime")

    @property
    def input_layouts(self) -> bool:
        """Whether sites are priced by their input's layout (see :meth:`new`)."""
        return bool(self.fingerprint.get("input_layouts"))

    @property
    def fold_residuals(self) -> bool:
        """Whether blocked-input sites are timed with their residuals folded (see :meth:`new`)."""
        return bool(self.fingerprint.get("fold_residuals"))

    def time_rounds(self, modules: list[torch.nn.Module], shapes: list[tuple[int, ...]], rounds: int, *,
                    part: bool, label: str, show_progress: bool) -> RoundTimes:
        """Per module, per round, the timed runs (ms, as measured); ``self.runs`` split over the
        rounds; with the table's reference, its readings between them (:func:`~lightnets.cost.round_schedule`).

        Every backend interleaves the rounds: every module once per round, round after round.
        This machine's speed drifts (by up to 30% over minutes here); timed one after another,
        the modules timed early and late (and the whole networks :func:`validate` compares them
        with) would each see another machine, while interleaved, a slow spell hits every module
        alike, a little in one round rather than a few modules entirely. ONNX Runtime: each
        module is exported once and gets a fresh session in each round
        (:func:`~lightnets.export.onnxruntime_rounds`; one session at a time is timed, so no
        other session's workers spin beside it); ``part=True`` times it as a part of a network
        costs inside the network (without, the layout conversions a part alone pays made
        MobileNetV1 / V2 sites sum to 1.2-1.7x the whole network at 224 here).
        """
        every = self.reference_every if self.reference else None
        if self.onnxruntime:
            bar = ProgressLine(f"{label} ({rounds} rounds, a fresh session each)", enabled=show_progress)
            timed = onnxruntime_rounds(
                modules, shapes, threads=self.threads, runs=self.runs, warmup=self.warmup,
                int8=self.backend == "onnxruntime-int8", rounds=rounds, part=part, reference=self.reference,
                reference_every=self.reference_every, on_step=bar.update,
            )
            bar.close()
        else:
            runs = max(1, -(-self.runs // rounds))
            times: list[list[list[float]]] = [[] for _ in modules]
            readings: list[list[float]] = [[] for _ in range(rounds)]
            reference = reference_module() if self.reference else None
            # round by round, shuffled, the reference where the schedule puts it
            steps = [(r, i) for r in range(rounds) for i in round_schedule(len(modules), r, every)]
            for r, i in progress(steps, len(steps), f"{label} ({rounds} rounds)", enabled=show_progress):
                if i is None:
                    readings[r].append(measure_latency(
                        reference, REFERENCE_SHAPE, threads=self.threads, runs=REFERENCE_RUNS,
                        warmup=REFERENCE_WARMUP, backend=self.backend,
                    ).median_ms)
                else:
                    times[i].append(measure_latency(
                        modules[i], shapes[i], threads=self.threads, runs=runs, warmup=self.warmup,
                        backend=self.backend,
                    ).times_ms)
            timed = RoundTimes(times, readings if self.reference else None, every)
        self.reference_readings += timed.readings()
        return timed

    def normalise(self, timed: RoundTimes) -> tuple[list[list[list[float]]], list[list[float]] | None]:
        """``(times, factors)``: :meth:`time_rounds`' runs at the table's reference speed and the
        speed factor (the reference's time where each module was timed over the table's nominal
        time) per module per round; the first measurement of a table sets its nominal time, the
        median of its readings. Without a reference: the runs as measured, and None."""
        if timed.reference_ms is None:
            if self.reference:
                raise ValueError("these rounds were timed without the table's speed reference")
            return timed.times_ms, None
        if self.reference_ms is None:
            self.reference_ms = statistics.median(timed.readings())
        return timed.normalised(self.reference_ms)

    def speed_now(self, readings: int = 10) -> float:
        """The machine's speed factor now: the median of ``readings`` reference readings (each
        :data:`~lightnets.cost.REFERENCE_RUNS` runs; about 0.1-0.3 s in eager, more in ONNX Runtime,
        which exports the reference first) over the table's nominal reference time. A factor 1.2:
        running 1.2x slower than when the table was built, so a prediction takes
        ``prediction.at_speed(1.2)`` ms now."""
        if isinstance(readings, bool) or not isinstance(readings, int) or readings < 1:
            raise ValueError(f"readings must be an integer >= 1, got {readings!r}")
        if not self.reference:
            raise ValueError("this table has no speed reference (built with reference=False, or before format 2): "
                             "its entries are in the ms of the moments they were measured")
        if self.reference_ms is None:
            raise ValueError("this table has measured nothing yet: it has no nominal reference time to compare with")
        self.check_device()
        timed = self.time_rounds([], [], readings, part=False, label="speed", show_progress=False)
        return statistics.median(timed.readings()) / self.reference_ms

    def measure_networks(self, models: list[torch.nn.Module], shapes: list[tuple[int, ...]], rounds: int = 3,
                         label: str = "measure", show_progress: bool = False) -> list[dict]:
        """Whole networks timed in ``rounds`` interleaved rounds (:meth:`time_rounds`) with the
        table's settings, at the table's reference speed (:meth:`normalise`). Per network:
        ``measured_ms`` (the median of its per-round medians, normalised), ``p10_ms`` / ``p90_ms``
        (over every normalised run), ``raw_measured_ms`` (the same median as measured) and
        ``speed`` / ``speed_min`` / ``speed_max`` (its speed factors over the rounds; None without
        a reference)."""
        timed = self.time_rounds(models, shapes, rounds, part=False, label=label, show_progress=show_progress)
        times, factors = self.normalise(timed)
        out = []
        for i, (per_round, raw) in enumerate(zip(times, timed.times_ms, strict=True)):
            pooled = sorted(t for runs in per_round for t in runs)
            speed = speed_summary(factors[i]) if factors is not None else None
            out.append({
                "measured_ms": statistics.median(statistics.median(t) for t in per_round),
                "p10_ms": percentile(pooled, 0.1),
                "p90_ms": percentile(pooled, 0.9),
                "raw_measured_ms": statistics.median(statistics.median(t) for t in raw),
                "speed": speed and speed["median"],
                "speed_min": speed and speed["min"],
                "speed_max": speed and speed["max"],
            })
        return out

    def check_device(self) -> None:
        """Raise unless this machine is the one the table was measured on."""
        here = device_fingerprint(self.backend, self.threads, self.batch, self.input_layouts, self.fold_residuals)
        differs = {k: (self.fingerprint.get(k), v) for k, v in here.items() if self.fingerprint.get(k) != v}
        if differs:
            detail = ", ".join(f"{k}: table {a!r}, here {b!r}" for k, (a, b) in differs.items())
            raise ValueError(f"this table was measured on another device or setup ({detail}); start a new table here")
        if self.reference and self.reference_id != REFERENCE_ID:
            raise ValueError(f"this table's speed reference ({self.reference_id!r}) is not this version's "
                             f"({REFERENCE_ID!r}): its nominal time does not apply; start a new table")

    def measure_site(self, site: Site, settings: BuildSettings) -> Entry:
        """The entry for ``site`` (with ONNX Runtime: its input blocked), measured now if the table
        does not have it."""
        key = site_key(site, settings)
        if key not in self.entries:
            # one site has nothing to interleave with; ONNX Runtime still needs several sessions
            if self.onnxruntime:
                self._measure_parts([(site, settings)], lambda: [(key, 0, True)], 3, False)
            else:
                self._measure([(site, settings)], rounds=1, show_progress=False)
        return self.entries[key]

    def _entry(self, key: str, per_round: list[list[float]], raw: list[list[float]]) -> None:
        """Store the entry of one site's rounds: the median of its per-round medians; p10 / p90
        pooling every run; all at the table's reference speed (:meth:`normalise`), the median as
        measured beside."""
        pooled = sorted(t for runs in per_round for t in runs)
        self.entries[key] = Entry(
            statistics.median(statistics.median(t) for t in per_round),
            percentile(pooled, 0.1), percentile(pooled, 0.9), len(pooled),
            statistics.median(statistics.median(t) for t in raw) if self.reference else None,
        )

    def _measure(self, todo: list[tuple[Site, BuildSettings]], rounds: int, show_progress: bool) -> None:
        """Time ``todo`` whole in ``rounds`` rounds (:meth:`time_rounds`; the torch backends)."""
        if not todo:
            return
        self.check_device()
        modules = [build_site(site, settings) for site, settings in todo]
        shapes = [(self.batch, site.in_chs, *site.in_size) for site, _ in todo]
        timed = self.time_rounds(modules, shapes, rounds, part=True, label="latency table",
                                 show_progress=show_progress)
        times, _ = self.normalise(timed)
        for (site, settings), per_round, raw in zip(todo, times, timed.times_ms, strict=True):
            self._entry(site_key(site, settings), per_round, raw)

    def _measure_parts(self, sites: list[tuple[Site, BuildSettings]], choose, rounds: int,
                       show_progress: bool) -> None:
        """ONNX Runtime: export ``sites`` once, learn each one's :class:`~lightnets.export.PartLayout`
        (with ``input_layouts``), then time in ``rounds`` rounds the ``(key, index, input_blocked)`` that ``choose()``
        returns once the layouts are known (:class:`~lightnets.export.TimingExports`: one fresh
        session per part per round, the table's speed reference between them)."""
        self.check_device()
        modules = [build_site(site, settings) for site, settings in sites]
        shapes = [(self.batch, site.in_chs, *site.in_size) for site, _ in sites]
        bar = ProgressLine(f"latency table ({rounds} rounds, a fresh session each)", enabled=show_progress)
        with TimingExports(modules, shapes, int8=self.backend == "onnxruntime-int8", on_step=bar.update,
                           fold_residuals=self.fold_residuals) as exports:
            for i, (site, settings) in enumerate(sites if self.input_layouts else []):
                self.layouts[site_key(site, settings)] = exports.layout(i)
                bar.update(i + 1, len(sites), f"layouts {i}")
            todo = choose()
            if not todo:  # only layouts were missing (a table written before it kept them)
                bar.close()
                return
            timed = exports.rounds([(i, blocked) for _, i, blocked in todo], threads=self.threads, runs=self.runs,
                                   warmup=self.warmup, rounds=rounds, reference=self.reference,
                                   reference_every=self.reference_every, on_step=bar.update)
        bar.close()
        self.reference_readings += timed.readings()
        times, _ = self.normalise(timed)
        for (key, _, _), per_round, raw in zip(todo, times, timed.times_ms, strict=True):
            self._entry(key, per_round, raw)

    def keys(self, spec: NetSpec, input_size: int | tuple[int, int]) -> list[tuple[Site, str | None]]:
        """Each site of ``spec`` (resolved) with the key of the entry that prices it in this
        network: its :func:`site_key`. A table with ``input_layouts`` (:meth:`new`): the site's input arrives
        in the layout the site before it leaves (:class:`~lightnets.export.PartLayout`; the
        network's input is plain), and a site whose input's layout matters is priced by that
        layout's entry (:data:`PLAIN_INPUT`); None where that is not known yet (the site's
        layout, or one before it, not learnt)."""
        out: list[tuple[Site, str | None]] = []
        blocked: bool | None = False  # a network's input arrives in the plain layout
        for site in walk(spec, input_size):
            key = site_key(site, spec.settings)
            if not self.input_layouts:
                out.append((site, key))
                continue
            layout = self.layouts.get(key)
            if layout is None:
                out.append((site, None))
                blocked = None
                continue
            if blocked is None:
                out.append((site, None if layout.input_matters else key))
                same = layout.blocked_out == layout.plain_in_blocked_out
                blocked = layout.blocked_out if same else None
                continue
            out.append((site, key if blocked or not layout.input_matters else key + PLAIN_INPUT))
            blocked = layout.output_blocked(blocked)
        return out

    def missing(self, specs: Iterable[NetSpec], input_size: int | tuple[int, int]) -> list[tuple[Site, BuildSettings]]:
        """The distinct sites of ``specs`` the table lacks the entry of, in order. With
        ``input_layouts``: the entry in the input layout the network gives the site (:meth:`keys`), and
        the sites whose layouts the table has not learnt; a site whose input's layout waits on
        one of those is left for after them (:meth:`measure_sites` repeats until nothing is
        missing)."""
        seen, todo = set(), []
        for spec in specs:
            for site, key in self.keys(spec, input_size):
                base = site_key(site, spec.settings)
                lacking = base not in self.layouts if key is None else key not in self.entries
                if lacking and base not in seen:
                    seen.add(base)
                    todo.append((site, spec.settings))
        return todo

    def measure_sites(
        self,
        specs: Iterable[NetSpec],
        input_size: int | tuple[int, int] = 224,
        rounds: int = 3,
        show_progress: bool = True,
    ) -> int:
        """Measure every entry the table lacks to price ``specs``, in ``rounds`` rounds (with a
        progress bar; :meth:`time_rounds`: interleaved rounds, with ONNX Runtime a fresh session
        per site per round); returns how many entries were added.

        ONNX Runtime: the sites are exported once and timed as parts, their input blocked; with
        ``input_layouts`` (:meth:`new`), their layouts are learnt first and each is timed in the
        input layout the networks give it (:meth:`keys`), both where they give it both."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
        specs = [resolve(s) for s in specs]
        todo = self.missing(specs, input_size)
        before = len(self.entries)
        if not self.onnxruntime:
            self._measure(todo, rounds, show_progress)
        while self.onnxruntime and todo:
            index = {site_key(site, settings): i for i, (site, settings) in enumerate(todo)}

            def choose(index: dict[str, int] = index) -> list[tuple[str, int, bool]]:
                chosen: dict[str, tuple[str, int, bool]] = {}
                for spec in specs:
                    for site, key in self.keys(spec, input_size):
                        base = site_key(site, spec.settings)
                        # a site not exported in this pass (its entry wanted only now that the
                        # layouts before it are known) is measured in the next
                        if key is not None and key not in self.entries and key not in chosen and base in index:
                            chosen[key] = (key, index[base], key == base)
                return list(chosen.values())

            known = len(self.entries), len(self.layouts)
            self._measure_parts(todo, choose, rounds, show_progress)
            if (len(self.entries), len(self.layouts)) == known:
                raise RuntimeError(f"measuring {len(todo)} sites added no entry or layout")  # a bug, not bad input
            todo = self.missing(specs, input_size)
        return len(self.entries) - before

    def predict(self, spec: NetSpec | str, input_size: int | tuple[int, int] = 224, measure: bool = True) -> Prediction:
        """Sum of the network's site latencies plus the table's overhead, in ms at the table's
        reference speed (:meth:`Prediction.at_speed` with :meth:`speed_now`: this moment's ms).
        Each site is priced by the entry :meth:`keys` gives it.

        A site the table lacks is measured now (``measure=True``; in 3 rounds with ONNX Runtime,
        1 in the torch backends) or raises: never guessed.
        """
        spec = resolve(NetSpec.parse(spec) if isinstance(spec, str) else spec)
        if measure:
            self.measure_sites([spec], input_size, rounds=3 if self.onnxruntime else 1, show_progress=False)
        per_site, raw_sites_ms = [], 0.0
        for site, key in self.keys(spec, input_size):
            if key not in self.entries:
                raise KeyError(f"the table has no entry for {site.name}: {key or site_key(site, spec.settings)}")
            entry = self.entries[key]
            per_site.append((site.name, entry.median_ms))
            raw_sites_ms += entry.raw_ms
        sites_ms = sum(ms for _, ms in per_site)
        total = self.overhead_ms + self.scale * sites_ms
        if total <= 0:
            raise ValueError(
                f"the table's fit ({self.overhead_ms:.3f} ms + {self.scale:.4f} x summed sites) predicts "
                f"{total:.3f} ms for a network whose sites sum to {sites_ms:.3f} ms: its overhead is negative and "
                f"this network is smaller than those it was fitted on; calibrate on networks as small as those you "
                f"predict"
            )
        return Prediction(total, sites_ms, self.overhead_ms, self.scale, per_site,
                          self.raw_overhead_ms + self.raw_scale * raw_sites_ms, raw_sites_ms)

    def calibrate(self, specs: Iterable[NetSpec], input_size: int = 224, rounds: int = 3) -> tuple[float, float]:
        """Fit ``measured = overhead + scale * summed sites`` on whole networks measured now.

        A network is not exactly the sum of its sites timed alone: a per-network constant (the
        input tensor, the calls between modules) and a factor (a site timed alone runs again
        and again on its own input and weights, warm in cache; inside a network its input was
        just written by the previous site, and the allocator reuses other memory). Least
        squares over the calibration networks; with one network the scale stays 1. Networks
        are measured as :func:`validate` measures them; calibrate on some networks and
        validate on others to see the error on networks the fit has not seen; both at the
        table's reference speed. The same fit on the measurements and entries as measured (not
        divided by the speed) is kept as ``raw_overhead_ms`` / ``raw_scale``, for comparison.
        Returns ``(overhead_ms, scale)``.
        """
        networks = {str(i): spec for i, spec in enumerate(specs)}
        rows = validate(self, networks, input_size, rounds=rounds, show_progress=False)
        records = [
            {"spec": str(resolve(networks[r["model"]])), "measured_ms": r["measured_ms"], "sites_ms": r["sites_ms"],
             "raw_measured_ms": r["raw_measured_ms"], "raw_sites_ms": r["raw_sites_ms"]}
            for r in rows
        ]
        if not records:
            raise ValueError("calibrate needs at least one network")
        fit = _fit_overhead(records)
        raw_fit = _fit_overhead(raw_view(records))
        (self.overhead_ms, self.scale), (self.raw_overhead_ms, self.raw_scale) = fit, raw_fit
        self.calibration = records
        return self.overhead_ms, self.scale

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "runs": self.runs,
            "warmup": self.warmup,
            "overhead_ms": self.overhead_ms,
            "scale": self.scale,
            "raw_overhead_ms": self.raw_overhead_ms,
            "raw_scale": self.raw_scale,
            "reference": {"module": self.reference_id, "every": self.reference_every, "ms": self.reference_ms}
            if self.reference else None,
            "calibration": self.calibration,
            "entries": {k: asdict(v) for k, v in sorted(self.entries.items())},
            "layouts": {k: [v.blocked_out, v.plain_in_blocked_out, v.input_matters]
                        for k, v in sorted(self.layouts.items())},
        }

    def save(self, path: str) -> None:
        """Write the table as JSON, atomically (a temporary file renamed into place)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str) -> LatencyTable:
        try:
            with open(path, encoding="utf8") as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read latency table {path!r}: {err}") from None
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            found = data.get("format") if isinstance(data, dict) else None
            raise ValueError(f"{path!r} is not a lightnets latency table this version reads (format {found!r}; "
                             f"readable: {', '.join(READABLE_FORMATS)})")
        try:
            reference = data.get("reference")  # format 1 has none: entries as measured
            well_formed = isinstance(reference, dict) and {"module", "every", "ms"} <= set(reference) and (
                reference["ms"] is None or float(reference["ms"]) > 0)
            if reference is not None and not well_formed:
                raise TypeError(f"its speed reference must hold module, every and a nominal ms > 0, got {reference!r}")
            table = cls(data["fingerprint"], runs=data["runs"], warmup=data["warmup"], reference=reference is not None,
                        reference_every=reference["every"] if reference else REFERENCE_EVERY)
            table.entries = {k: Entry(**v) for k, v in data["entries"].items()}
            table.layouts = {k: PartLayout(*(bool(b) for b in v)) for k, v in data.get("layouts", {}).items()}
            table.overhead_ms = float(data.get("overhead_ms", 0.0))
            table.scale = float(data.get("scale", 1.0))
            table.raw_overhead_ms = float(data.get("raw_overhead_ms", table.overhead_ms))
            table.raw_scale = float(data.get("raw_scale", table.scale))
            table.calibration = list(data.get("calibration", []))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"latency table {path!r} is malformed: {type(err).__name__}: {err}") from None
        if reference is not None:
            table.reference_id = reference["module"]
            table.reference_ms = None if reference["ms"] is None else float(reference["ms"])
        return table


def validate(
    table: LatencyTable,
    networks: dict[str, NetSpec],
    input_size: int = 224,
    rounds: int = 3,
    show_progress: bool = True,
) -> list[dict]:
    """Predicted against measured whole-network latency for each named network (measured now).

    Networks are measured in ``rounds`` rounds (:meth:`LatencyTable.time_rounds`: interleaved,
    with ONNX Runtime a fresh session per network per round; the median of per-round medians),
    with the table's threads, backend and runs, at the table's reference speed
    (:meth:`LatencyTable.measure_networks`). Rows: name, whether the table was calibrated on it,
    predicted, measured (median, p10, p90), the prediction's error relative to the measurement;
    the same as measured, not divided by the speed (``raw_predicted_ms``: the raw entries with the
    raw fit, ``raw_sites_ms``, ``raw_measured_ms``, ``raw_error``), and the speed factors observed
    while the network was timed (``speed``: the median over the rounds, ``speed_min``,
    ``speed_max``; None without a reference). :func:`raw_view` reads the raw columns as the main ones.
    """
    specs = {name: resolve(spec) for name, spec in networks.items()}
    predicted = {name: table.predict(spec, input_size) for name, spec in specs.items()}
    models = [build(spec) for spec in specs.values()]
    shapes = [(table.batch, spec.settings.in_chans, input_size, input_size) for spec in specs.values()]
    measured = table.measure_networks(models, shapes, rounds, label="validate", show_progress=show_progress)
    rows = []
    calibrated = {r["spec"] for r in table.calibration}
    for name, m in zip(specs, measured, strict=True):
        p = predicted[name]
        rows.append(
            {
                "model": name,
                "calibration": str(specs[name]) in calibrated,
                "predicted_ms": p.total_ms,
                "sites_ms": p.sites_ms,
                **m,
                "error": p.total_ms / m["measured_ms"] - 1,
                "raw_predicted_ms": p.raw_total_ms,
                "raw_sites_ms": p.raw_sites_ms,
                "raw_error": p.raw_total_ms / m["raw_measured_ms"] - 1,
            }
        )
    return rows


_RAW_COLUMNS = ("predicted_ms", "sites_ms", "measured_ms", "error")


def raw_view(rows: list[dict]) -> list[dict]:
    """:func:`validate` rows (or calibration records) with their columns as measured, not divided
    by the speed, in the main columns (``raw_measured_ms`` as ``measured_ms`` ...), for
    :func:`refit`, :func:`summarize` and :func:`validation_table` to judge the raw prediction
    with; p10 / p90 are dropped (they are normalised)."""
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("p10_ms", "p90_ms") and not k.startswith("raw_")}
        row.update({k: r[f"raw_{k}"] for k in _RAW_COLUMNS if f"raw_{k}" in r})
        out.append(row)
    return out


def _fit_overhead(records: list[dict]) -> tuple[float, float]:
    """``(overhead_ms, scale)`` of ``measured = overhead + scale * summed sites`` by least
    squares of the relative errors over records with ``sites_ms`` and ``measured_ms``.

    Relative, because what a table is judged by is the relative error: least squares in ms
    lets the largest networks set the line, and an overhead that suits them is a large part
    of a small network (ONNX Runtime, 18 rounds: 0.17 ms on mobilenet_v1_025's 0.63 ms, +23%).
    Refitted so on the calibration half of each committed run of ``benchmarks/lut_accuracy.py``,
    it kept as many networks within 10% or more in 11 of 13 runs (1-4 more in five), 2 fewer in
    the two 3-round runs.

    One record gives one degree of freedom. A whole network that costs more than its sites pays
    a per-network overhead (the input, the calls between modules): scale 1 and that overhead.
    One that costs less shows that its sites, timed alone and warm, overstate: overhead 0 and
    the ratio as the scale. A negative overhead would predict a negative latency for any network
    whose sites sum to less than it (seen: -1.16 ms for a small search candidate after a noisy
    one-run calibration)."""
    if len(records) == 1:
        measured, sites = records[0]["measured_ms"], records[0]["sites_ms"]
        return (measured - sites, 1.0) if measured >= sites else (0.0, measured / sites)
    xs, ys = [r["sites_ms"] for r in records], [r["measured_ms"] for r in records]
    # (overhead + scale * x) / y - 1 = overhead * u + scale * v - 1, with u = 1 / y and v = x / y
    us, vs = [1 / y for y in ys], [x / y for x, y in zip(xs, ys, strict=True)]
    suu, svv, suv = sum(u * u for u in us), sum(v * v for v in vs), sum(u * v for u, v in zip(us, vs, strict=True))
    determinant = suu * svv - suv * suv
    slope = (suu * sum(vs) - suv * sum(us)) / determinant if determinant > 1e-12 * suu * svv else 0.0
    if slope <= 0:
        raise ValueError(
            f"the calibration networks measured whole ({', '.join(f'{y:.3f}' for y in ys)} ms) do not grow "
            f"with their summed sites ({', '.join(f'{x:.3f}' for x in xs)} ms): fitted scale {slope:.3f}; "
            f"the measurements are too noisy or the networks too alike: measure with more runs, or calibrate "
            f"on networks further apart"
        )
    return (svv * sum(us) - suv * sum(vs)) / determinant, slope


def refit(rows: list[dict], every: int = 2) -> tuple[list[dict], float, float]:
    """:func:`validate` rows predicted again with the overhead and scale fitted on every
    ``every``-th network of these same measurements; returns ``(rows, overhead_ms, scale)``.

    A table's fit holds while the machine runs at the speed it had when the fit was measured.
    This VM's speed drifts (ONNX Runtime, 1 thread: mobilenet_v2 6.4-7.4 ms, then 11.1-11.5 ms
    45 minutes later, idle both times), and a fit measured minutes before the validation then
    misses every network by the same factor. Fitted on networks measured in the same rounds as
    the others, the scale takes the machine's current speed, and the error on the networks
    outside the fit is the table's own: how well summed sites rank and scale networks. Each row
    keeps its prediction by the table's stored fit as ``as_built_ms`` / ``as_built_error``.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1 (fit on every N-th network), got {every!r}")
    if not rows:
        raise ValueError("refit needs validate() rows")
    overhead, scale = _fit_overhead(rows[::every])
    fitted = {id(r) for r in rows[::every]}
    out = []
    for r in rows:
        predicted = overhead + scale * r["sites_ms"]
        out.append({**r, "as_built_ms": r["predicted_ms"], "as_built_error": r["error"], "predicted_ms": predicted,
                    "error": predicted / r["measured_ms"] - 1, "calibration": id(r) in fitted})
    return out, overhead, scale


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Accuracy of :func:`validate` rows: over all networks (``all``) and over those the overhead
    fit did not see (``held_out``): median absolute error, the worst network, how many within 10%."""
    summary = {}
    for label, subset in (("all", rows), ("held_out", [r for r in rows if not r["calibration"]])):
        if subset:
            errors = [abs(r["error"]) for r in subset]
            worst = max(subset, key=lambda r: abs(r["error"]))
            summary[label] = {
                "median_abs_error": statistics.median(errors),
                "worst": worst["model"],
                "worst_error": worst["error"],
                "within_10": sum(e <= 0.10 for e in errors),
                "count": len(subset),
            }
    return summary


def validation_table(rows: list[dict]) -> str:
    """:func:`validate` rows as a text table; networks in the overhead fit are marked ``*``."""
    columns = [
        ("model", "model"),
        ("fit", "fit"),
        ("predicted_ms", "predicted ms"),
        ("measured_ms", "measured ms"),
        ("p10_ms", "p10"),
        ("p90_ms", "p90"),
        ("error", "error"),
    ]
    if rows and "as_built_error" in rows[0]:  # refit rows: the stored fit's error beside
        columns.append(("as_built_error", "as built"))
    if rows and rows[0].get("speed") is not None and "raw_error" in rows[0]:  # normalised rows: the raw error beside
        columns += [("raw_error", "raw error"), ("speed", "speed")]
    return format_table(
        [{**r, "fit": "*" if r["calibration"] else ""} for r in rows],
        columns,
        formats={
            "predicted_ms": "{:.2f}",
            "measured_ms": "{:.2f}",
            "p10_ms": "{:.2f}",
            "p90_ms": "{:.2f}",
            "error": "{:+.1%}",
            "as_built_error": "{:+.1%}",
            "raw_error": "{:+.1%}",
            "speed": "{:.2f}x",
        },
    )


def summary_lines(summary: dict[str, dict]) -> list[str]:
    names = {"all": "all", "held_out": "not in the fit"}
    return [
        f"{names[label]}: median absolute error {s['median_abs_error']:.1%}, worst {s['worst']} "
        f"{s['worst_error']:+.1%}, {s['within_10']} of {s['count']} within 10%"
        for label, s in summary.items()
    ]


def plot_validation(rows: list[dict], path: str, title: str) -> None:
    """Scatter of predicted against measured latency, with the 10% band (needs matplotlib)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    measured = [r["measured_ms"] for r in rows]
    predicted = [r["predicted_ms"] for r in rows]
    top = max(measured + predicted) * 1.05
    ax.fill_between([0, top], [0, top * 0.9], [0, top * 1.1], color="grey", alpha=0.15, label="within 10%")
    ax.plot([0, top], [0, top], color="grey", lw=0.8, label="predicted = measured")
    for fitted, style in ((True, {"facecolors": "none", "edgecolors": "C0"}), (False, {"color": "C1"})):
        subset = [r for r in rows if r.get("calibration", False) == fitted]
        label = "in the overhead fit" if fitted else "not in the fit"
        if subset:
            ax.scatter(
                [r["measured_ms"] for r in subset], [r["predicted_ms"] for r in subset], s=16, label=label, **style
            )
    ax.set(xlabel="measured latency (ms)", ylabel="predicted by the lookup table (ms)", xlim=(0, top), ylim=(0, top))
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
