"""Latency lookup tables: every distinct site of a network timed once on this device.

NetAdapt (Yang et al., 2018, section 3.3) and MnasNet-style search (MobileNetV3 section 4.1)
score many networks; measuring each whole network is slow, and counting MAdds is not the
direct metric (ShuffleNetV2 section 2). A lookup table times each distinct layer once (here:
each :func:`~lightnets.models.walk` site, which is a stem, a block or a head with its resolved
spec, input channels and input size) and predicts a network as the sum of its sites plus a
per-network overhead. Entries are measured with :func:`~lightnets.cost.measure_latency`'s
conditions (warm-up, median / p10 / p90, threads set, denormals flushed) and never guessed: a
missing entry is measured on demand, or the prediction refuses.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch

from ..cost import BACKENDS, measure_latency, percentile, round_order
from ..export import onnxruntime_rounds
from ..formats import atomic_write
from ..models import BuildSettings, NetSpec, Site, build, build_site, resolve, walk
from ..report import ProgressLine, format_table, machine_info, progress, pyplot

FORMAT = "lightnets-latency-table/1"


SITE_TIMING = {
    "torch": "wall time of the site alone",
    "onnxruntime": "wall time of the site alone in ONNX Runtime, less its boundary layout conversions",
}


def device_fingerprint(backend: str, threads: int, batch: int) -> dict:
    """What a table's entries depend on: the CPU, core count, torch, backend, threads and batch."""
    machine = machine_info()
    return {
        "cpu": machine["cpu"],
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "backend": backend,
        "threads": threads,
        "batch": batch,
        "site_timing": SITE_TIMING["onnxruntime" if backend.startswith("onnxruntime") else "torch"],
    }


@dataclass(frozen=True)
class Entry:
    """One site's measured latency (milliseconds) and how many timed runs it rests on."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int


@dataclass(frozen=True)
class Prediction:
    """A network's predicted latency, ``overhead_ms + scale * sites_ms`` (see :meth:`LatencyTable.calibrate`)."""

    total_ms: float
    sites_ms: float
    overhead_ms: float
    scale: float
    per_site: list[tuple[str, float]] = field(repr=False)


def site_key(site: Site, settings: BuildSettings) -> str:
    """The table key: what the site computes, on what input (padding matters for stride-2 convs)."""
    return site.key() + ("" if settings.padding == "symmetric" else f" {settings.padding}")


class LatencyTable:
    """Measured site latencies for one backend, thread count, batch size and device.

    Built with :meth:`new` or read with :meth:`load`, extended by :meth:`measure_sites` or on
    demand by :meth:`predict`, written atomically with :meth:`save`. A table records the
    device it was measured on; measuring into a table from another device raises (the entries
    would mix two machines).
    """

    def __init__(self, fingerprint: dict, runs: int = 30, warmup: int = 5) -> None:
        if fingerprint.get("backend") not in BACKENDS:
            raise ValueError(f"unknown backend {fingerprint.get('backend')!r}; allowed: {', '.join(BACKENDS)}")
        self.fingerprint = fingerprint
        self.runs, self.warmup = runs, warmup
        self.entries: dict[str, Entry] = {}
        self.overhead_ms = 0.0
        self.scale = 1.0
        self.calibration: list[dict] = []

    @classmethod
    def new(cls, backend: str = "eager", threads: int | None = None, batch: int = 1, runs: int = 30, warmup: int = 5):
        """An empty table for this device; ``threads`` defaults to torch's current count."""
        for name, value in (("batch", batch), ("runs", runs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        threads = threads or torch.get_num_threads()
        return cls(device_fingerprint(backend, threads, batch), runs=runs, warmup=warmup)

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

    def time_rounds(self, modules: list[torch.nn.Module], shapes: list[tuple[int, ...]], rounds: int, *,
                    part: bool, label: str, show_progress: bool) -> list[list[list[float]]]:
        """Per module, per round, the timed runs (ms); ``self.runs`` split over the rounds.

        Every backend interleaves the rounds: every module once per round, round after round.
        This machine's speed drifts (by up to 30% over minutes here); timed one after another,
        the modules timed early and late (and the whole networks :func:`validate` compares them
        with) would each see another machine, while interleaved, a slow spell hits every module
        alike, a little in one round rather than a few modules entirely. ONNX Runtime: each
        module is exported once and gets a fresh session in each round
        (:func:`~lightnets.export.onnxruntime_rounds`), since one session's speed is not
        another's; ``part=True`` times it as a part of a network costs inside the network
        (without, the layout conversions a part alone pays made MobileNetV1 / V2 sites sum to
        1.2-1.7x the whole network at 224 here).
        """
        if self.onnxruntime:
            bar = ProgressLine(f"{label} ({rounds} rounds, a fresh session each)", enabled=show_progress)
            sessions = onnxruntime_rounds(
                modules, shapes, threads=self.threads, runs=self.runs, warmup=self.warmup,
                int8=self.backend == "onnxruntime-int8", rounds=rounds, part=part, on_step=bar.update,
            )
            bar.close()
            return sessions
        runs = max(1, -(-self.runs // rounds))
        timed: list[list[list[float]]] = [[] for _ in modules]
        steps = [(r, i) for r in range(rounds) for i in round_order(len(modules), r)]  # round by round, shuffled
        for _, i in progress(steps, len(steps), f"{label} ({rounds} rounds)", enabled=show_progress):
            timed[i].append(measure_latency(
                modules[i], shapes[i], threads=self.threads, runs=runs, warmup=self.warmup, backend=self.backend
            ).times_ms)
        return timed

    def check_device(self) -> None:
        """Raise unless this machine is the one the table was measured on."""
        here = device_fingerprint(self.backend, self.threads, self.batch)
        differs = {k: (self.fingerprint.get(k), v) for k, v in here.items() if self.fingerprint.get(k) != v}
        if differs:
            detail = ", ".join(f"{k}: table {a!r}, here {b!r}" for k, (a, b) in differs.items())
            raise ValueError(f"this table was measured on another device or setup ({detail}); start a new table here")

    def measure_site(self, site: Site, settings: BuildSettings) -> Entry:
        """The entry for ``site``, measured now if the table does not have it."""
        key = site_key(site, settings)
        if key not in self.entries:
            # one site has nothing to interleave with; ONNX Runtime still needs several sessions
            self._measure([(site, settings)], rounds=3 if self.onnxruntime else 1, show_progress=False)
        return self.entries[key]

    def _measure(self, todo: list[tuple[Site, BuildSettings]], rounds: int, show_progress: bool) -> None:
        """Time ``todo`` in ``rounds`` rounds (:meth:`time_rounds`). An entry's median is the
        median of its per-round medians; p10 / p90 pool every run."""
        if not todo:
            return
        self.check_device()
        modules = [build_site(site, settings) for site, settings in todo]
        shapes = [(self.batch, site.in_chs, *site.in_size) for site, _ in todo]
        timed = self.time_rounds(modules, shapes, rounds, part=True, label="latency table",
                                 show_progress=show_progress)
        for (site, settings), per_round in zip(todo, timed, strict=True):
            pooled = sorted(t for times in per_round for t in times)
            self.entries[site_key(site, settings)] = Entry(
                statistics.median(statistics.median(t) for t in per_round),
                percentile(pooled, 0.1), percentile(pooled, 0.9), len(pooled),
            )

    def missing(self, specs: Iterable[NetSpec], input_size: int | tuple[int, int]) -> list[tuple[Site, BuildSettings]]:
        """The distinct sites of ``specs`` the table has no entry for, in order."""
        seen, todo = set(self.entries), []
        for spec in specs:
            for site in walk(spec, input_size):
                key = site_key(site, spec.settings)
                if key not in seen:
                    seen.add(key)
                    todo.append((site, spec.settings))
        return todo

    def measure_sites(
        self,
        specs: Iterable[NetSpec],
        input_size: int | tuple[int, int] = 224,
        rounds: int = 3,
        show_progress: bool = True,
    ) -> int:
        """Measure every site of ``specs`` the table lacks, in ``rounds`` rounds (with a progress
        bar; :meth:`time_rounds`: interleaved rounds, with ONNX Runtime a fresh session per site
        per round); returns how many sites were added."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
        todo = self.missing([resolve(s) for s in specs], input_size)
        self._measure(todo, rounds, show_progress)
        return len(todo)

    def predict(self, spec: NetSpec | str, input_size: int | tuple[int, int] = 224, measure: bool = True) -> Prediction:
        """Sum of the network's site latencies plus the table's overhead.

        A site the table lacks is measured now (``measure=True``) or raises: never guessed.
        """
        spec = resolve(NetSpec.parse(spec) if isinstance(spec, str) else spec)
        per_site = []
        for site in walk(spec, input_size):
            key = site_key(site, spec.settings)
            if key not in self.entries and not measure:
                raise KeyError(f"the table has no entry for {site.name}: {key}")
            per_site.append((site.name, self.measure_site(site, spec.settings).median_ms))
        sites_ms = sum(ms for _, ms in per_site)
        total = self.overhead_ms + self.scale * sites_ms
        if total <= 0:
            raise ValueError(
                f"the table's fit ({self.overhead_ms:.3f} ms + {self.scale:.4f} x summed sites) predicts "
                f"{total:.3f} ms for a network whose sites sum to {sites_ms:.3f} ms: its overhead is negative and "
                f"this network is smaller than those it was fitted on; calibrate on networks as small as those you "
                f"predict"
            )
        return Prediction(total, sites_ms, self.overhead_ms, self.scale, per_site)

    def calibrate(self, specs: Iterable[NetSpec], input_size: int = 224, rounds: int = 3) -> tuple[float, float]:
        """Fit ``measured = overhead + scale * summed sites`` on whole networks measured now.

        A network is not exactly the sum of its sites timed alone: a per-network constant (the
        input tensor, the calls between modules) and a factor (a site timed alone runs again
        and again on its own input and weights, warm in cache; inside a network its input was
        just written by the previous site, and the allocator reuses other memory). Least
        squares over the calibration networks; with one network the scale stays 1. Networks
        are measured as :func:`validate` measures them; calibrate on some networks and
        validate on others to see the error on networks the fit has not seen. Returns
        ``(overhead_ms, scale)``.
        """
        networks = {str(i): spec for i, spec in enumerate(specs)}
        rows = validate(self, networks, input_size, rounds=rounds, show_progress=False)
        records = [
            {"spec": str(resolve(networks[r["model"]])), "measured_ms": r["measured_ms"], "sites_ms": r["sites_ms"]}
            for r in rows
        ]
        if not records:
            raise ValueError("calibrate needs at least one network")
        self.overhead_ms, self.scale = _fit_overhead(records)
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
            "calibration": self.calibration,
            "entries": {k: asdict(v) for k, v in sorted(self.entries.items())},
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
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path!r} is not a lightnets latency table (format {FORMAT!r})")
        table = cls(data["fingerprint"], runs=data["runs"], warmup=data["warmup"])
        try:
            table.entries = {k: Entry(**v) for k, v in data["entries"].items()}
        except TypeError as err:
            raise ValueError(f"latency table {path!r} has a malformed entry: {err}") from None
        table.overhead_ms = float(data.get("overhead_ms", 0.0))
        table.scale = float(data.get("scale", 1.0))
        table.calibration = list(data.get("calibration", []))
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
    with the table's threads, backend and runs. Rows: name, whether the table was calibrated on
    it, predicted, measured (median, p10, p90), and the prediction's error relative to the
    measurement.
    """
    specs = {name: resolve(spec) for name, spec in networks.items()}
    predicted = {name: table.predict(spec, input_size) for name, spec in specs.items()}
    models = [build(spec) for spec in specs.values()]
    shapes = [(table.batch, spec.settings.in_chans, input_size, input_size) for spec in specs.values()]
    timed = table.time_rounds(models, shapes, rounds, part=False, label="validate", show_progress=show_progress)
    medians = {name: [statistics.median(t) for t in per_round] for name, per_round in zip(specs, timed, strict=True)}
    pooled = {name: [t for times in per_round for t in times] for name, per_round in zip(specs, timed, strict=True)}
    rows = []
    calibrated = {r["spec"] for r in table.calibration}
    for name in specs:
        measured, times = statistics.median(medians[name]), sorted(pooled[name])
        rows.append(
            {
                "model": name,
                "calibration": str(specs[name]) in calibrated,
                "predicted_ms": predicted[name].total_ms,
                "sites_ms": predicted[name].sites_ms,
                "measured_ms": measured,
                "p10_ms": percentile(times, 0.1),
                "p90_ms": percentile(times, 0.9),
                "error": predicted[name].total_ms / measured - 1,
            }
        )
    return rows


def _fit_overhead(records: list[dict]) -> tuple[float, float]:
    """``(overhead_ms, scale)`` of ``measured = overhead + scale * summed sites`` by least
    squares over records with ``sites_ms`` and ``measured_ms``.

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
    fit = statistics.linear_regression(xs, ys)
    if fit.slope <= 0:
        raise ValueError(
            f"the calibration networks measured whole ({', '.join(f'{y:.3f}' for y in ys)} ms) do not grow "
            f"with their summed sites ({', '.join(f'{x:.3f}' for x in xs)} ms): fitted scale {fit.slope:.3f}; "
            f"the measurements are too noisy or the networks too alike: measure with more runs, or calibrate "
            f"on networks further apart"
        )
    return fit.intercept, fit.slope


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
