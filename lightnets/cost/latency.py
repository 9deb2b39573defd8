"""Measured latency: the direct metric (ShuffleNetV2 section 2).

Why denormals are flushed: a freshly initialised network in eval mode decays to denormal
activations deep in the network, and x86 CPUs process denormals one to two orders of
magnitude slower than normal floats; torchvision's mobilenet_v2 was seen at 300 ms with
random weights against 25 ms with trained ones on the same machine. Such a figure says
nothing about the architecture, so every measurement here runs with denormals flushed to
zero and reports that it did.

Backends that run a converted model (ONNX Runtime) are registered by the package that does the
converting (:mod:`lightnets.export`, which ``import lightnets`` loads): cost sits below export,
times whatever runner it is handed and never imports the exporter itself.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch
from torch import nn

from .load import BUSY_CORES, LoadWatch

T = TypeVar("T")
BACKENDS = ("eager", "compile", "onnxruntime", "onnxruntime-int8")
_BUILT_IN = ("eager", "compile")
# backend name -> prepare(model, input_size, *, threads, device, channels_last): a context
# manager yielding the callable to time (tensor in, tensor out), cleaned up on exit.
_REGISTERED: dict[str, Callable[..., contextlib.AbstractContextManager]] = {}


def register_backend(name: str, prepare: Callable[..., contextlib.AbstractContextManager]) -> None:
    """Provide ``measure_latency(backend=name)`` from a package above cost (see the module docstring).

    ``prepare(model, input_size, *, threads, device, channels_last)`` returns a context manager
    that yields the runner to time and releases what it made (files, sessions) on exit.
    """
    if name not in BACKENDS or name in _BUILT_IN:
        allowed = ", ".join(b for b in BACKENDS if b not in _BUILT_IN)
        raise ValueError(f"cannot register backend {name!r}; registrable: {allowed}")
    _REGISTERED[name] = prepare


def flushing_denormals() -> bool:
    """Whether this thread currently flushes denormal floats to zero (probed, not assumed)."""
    tiny = torch.full((4,), 1e-38, dtype=torch.float32)
    return bool(((tiny * 1e-3) == 0).all())


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Flush denormals inside the block; yields whether the CPU supports it. Restores the state."""
    before = flushing_denormals()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(before)


@contextlib.contextmanager
def set_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads (None: keep the current count)."""
    before = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


#: A row whose spread, (p90 - p10) / median of its timed runs (within rounds), exceeds this
#: is measured again and, if still above it, marked unstable. Over all runs, idle rows of the
#: whole zoo read 0.19-0.50 here, most of it the machine's speed drifting between rounds (up
#: to 2x); under a CPU hog rows reach 2-6 (benchmarks/zoo_under_load.py).
SPREAD_LIMIT = 0.5


@dataclass
class LatencyResult:
    """Median and spread of repeated forward passes, and the conditions they ran under.

    With ``rounds`` > 1 the runs were taken in rounds (interleaved with other networks' when
    several were measured together): ``median_ms`` is the median of the per-round medians,
    p10 / p90 are over every timed run. ``unstable``: the spread exceeded ``spread_limit``
    after ``attempts`` measurements (the figure is kept, and labelled).
    """

    backend: str
    input_size: tuple[int, ...]
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    warmup: int
    threads: int
    device: str
    channels_last: bool
    denormals_flushed: bool
    torch_version: str
    times_ms: list[float] = field(repr=False, default_factory=list)
    rounds: int = 1
    round_medians_ms: list[float] = field(default_factory=list)
    attempts: int = 1
    spread_limit: float | None = None
    other_cores: float | None = None  # other processes' CPU use while this was timed (None: not read)
    round_spread: float | None = None  # the spread within rounds (see ``stability_spread``); None: 1 round

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative spread of the runs."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms else 0.0

    @property
    def drift(self) -> float:
        """(max - min) / median of the per-round medians: how much the machine's speed moved
        between rounds (interleaving spreads this over every network alike)."""
        medians = self.round_medians_ms
        return (max(medians) - min(medians)) / self.median_ms if len(medians) > 1 and self.median_ms else 0.0

    @property
    def stability_spread(self) -> float:
        """The spread the flag judges: within rounds when there were several (each run divided
        by its round's median, then (p90 - p10) of those), so that a drift of the whole
        machine between rounds, which hits every interleaved network alike, does not flag a
        network whose own runs were steady; over all runs with one round."""
        return self.spread if self.round_spread is None else self.round_spread

    @property
    def flag_reason(self) -> str | None:
        """Why the figure is not a measurement of the network alone, or None. Only with a
        ``spread_limit`` (flagging on): the spread over it, or other processes using
        ``BUSY_CORES`` or more while it was timed. The second catches what the spread cannot:
        under a CPU hog, 2-thread runs of mobilenet_v3_large read 2,066 ms with a 1% spread
        against 18 ms idle (benchmarks/zoo_under_load.py), every parallel region waiting
        out a scheduler tick."""
        if self.spread_limit is None:
            return None
        if self.other_cores is not None and self.other_cores >= BUSY_CORES:
            return f"other processes used {self.other_cores:.2f} cores while it was timed"
        if self.stability_spread > self.spread_limit:
            where = " within rounds" if self.round_spread is not None else ""
            return f"spread{where} {100 * self.stability_spread:.0f}% over {100 * self.spread_limit:.0f}%"
        return None

    @property
    def unstable(self) -> bool:
        return self.flag_reason is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["spread"] = self.spread
        d["unstable"] = self.unstable
        d["flag_reason"] = self.flag_reason
        return d

    def __str__(self) -> str:
        rounds = f" in {self.rounds} rounds" if self.rounds > 1 else ""
        flag = f"; UNSTABLE ({self.flag_reason}, after {self.attempts} attempts)" if self.unstable else ""
        return (
            f"median {self.median_ms:.2f} ms (p10 {self.p10_ms:.2f}, p90 {self.p90_ms:.2f}, spread "
            f"{100 * self.spread:.0f}%) over {self.runs} runs{rounds} after {self.warmup} warm-up; {self.backend}, "
            f"{self.threads} thread{'s' if self.threads != 1 else ''}, {self.device}, torch {self.torch_version}, "
            f"denormals {'flushed' if self.denormals_flushed else 'NOT flushed in every thread'}"
            f"{', channels_last' if self.channels_last else ''}{flag}"
        )


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _is_count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_many(models: Mapping, runs: int | Mapping[str, int], warmup: int, backend: str, rounds: int,
                spread_limit: float | None, retries: int) -> None:
    if not models:
        raise ValueError("nothing to measure: models is empty")
    for name, item in models.items():
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module)):
            raise ValueError(f"models[{name!r}] must be a (module, input_size) pair, got {type(item).__name__}")
        size = item[1]
        if not isinstance(size, tuple) or not size or not all(_is_count(d, 1) for d in size):
            raise ValueError(f"input_size must be a tuple of positive integers such as (1, 3, 224, 224), got {size!r}")
    counts = runs.values() if isinstance(runs, Mapping) else [runs]
    if isinstance(runs, Mapping) and set(runs) != set(models):
        raise ValueError(f"runs names {sorted(runs)} differ from the models' {sorted(models)}")
    if not all(_is_count(n, 1) for n in counts):
        raise ValueError(f"runs must be an integer >= 1 (or one per model), got {runs!r}")
    if not _is_count(warmup, 0):
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    if not _is_count(rounds, 1):
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if min(counts) < rounds:
        raise ValueError(f"runs ({min(counts)}) must be at least rounds ({rounds}): every round times each network")
    if not _is_count(retries, 0):
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    if spread_limit is not None and not (isinstance(spread_limit, (int, float)) and 0 < spread_limit < math.inf):
        raise ValueError(f"spread_limit must be a positive finite number or None, got {spread_limit!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def round_order(count: int, round_index: int) -> list[int]:
    """The order in which ``count`` things are timed in round ``round_index`` of interleaved rounds:
    round 0 in their own order, every later round in a fixed shuffle of its own (seeded by the
    round, so a rerun times in the same order).

    Interleaving makes a slow drift of the machine hit every network alike across rounds, but
    within a round the ones timed first and last still see different speeds; with the same
    order in every round that difference is the same each time, and the median of the rounds
    keeps it. Measured on the ONNX Runtime lookup table (57 networks, 3 rounds, one order):
    the networks timed first were under-predicted by 10-24%, the ones timed last over-predicted
    by 13-30%. Shuffled rounds turn that bias into noise, which the median of rounds damps.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    order = list(range(count))
    if round_index:
        random.Random(round_index).shuffle(order)
    return order


def flushing_in_every_thread() -> bool:
    """Whether every intra-op thread flushes denormals, probed with an operation split across them.

    The flush flag (FTZ/DAZ in MXCSR on x86) is per-thread state. ``torch.set_flush_denormal``
    sets it for the calling thread only; OpenMP's worker threads copy it from the thread that
    creates them, once. A worker team created before the flush (any earlier parallel operation)
    keeps computing denormals at full cost: measured here, half of a 2-thread product of
    denormals was left unflushed. The probe doubles 2^20 denormals, enough to be split across
    the threads, and checks that every product is zero. The denormals are written as bits
    (an integer fill): a float fill value would itself be flushed on the calling thread.
    """
    tiny = torch.full((1 << 20,), 0x00400000, dtype=torch.int32).view(torch.float32)  # 5.9e-39, a denormal
    return bool(((tiny * 1.5) == 0).all())


def on_measuring_thread(work: Callable[[], T], threads: int | None = None) -> T:
    """Run ``work()`` on a fresh thread that flushes denormals and has ``threads`` intra-op threads.

    A fresh thread gets a fresh OpenMP worker team, created after the flush is set, so every
    worker flushes (see :func:`flushing_in_every_thread`); the caller's threads and flags are
    left as they were. Exceptions from ``work`` are raised here.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            torch.set_flush_denormal(True)
            with set_threads(threads):
                outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = err

    worker = threading.Thread(target=run, name="lightnets-measure")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, ...] = (1, 3, 224, 224),
    *,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 10,
    channels_last: bool = False,
    backend: str = "eager",
    rounds: int = 1,
    spread_limit: float | None = None,
    retries: int = 0,
) -> LatencyResult:
    """Time ``runs`` forward passes in eval mode after ``warmup`` untimed ones.

    Sets the intra-op thread count (``threads``; None keeps torch's current count) and flushes
    denormals in every thread (the timing runs on a fresh thread, see
    :func:`on_measuring_thread`), and reports both. ``backend``:
    ``"eager"``, ``"compile"`` (``torch.compile``, compiled during warm-up, which therefore
    runs at least once) or ``"onnxruntime"`` (the model exported to ONNX with BatchNorm
    folded, shapes fixed at the timed input size, run by ONNX Runtime on the CPU with the same
    thread count and denormals set to zero; needs ``lightnets[deploy]``) or
    ``"onnxruntime-int8"`` (the same, quantized to int8 with per-channel weights, calibrated on
    8 random batches: right for timing, not for accuracy, which needs real calibration data:
    ``lightnets export --int8 --calibration``). The two ONNX Runtime backends come from
    :mod:`lightnets.export.latency`. ``channels_last`` converts a copy of the model and the
    input; the caller's model is never modified (its training flag is restored).

    ``rounds``, ``spread_limit`` and ``retries`` are :func:`measure_latencies`'s.
    """
    return measure_latencies(
        {"model": (model, tuple(input_size))}, threads=threads, runs=runs, warmup=warmup,
        channels_last=channels_last, backend=backend, rounds=rounds, spread_limit=spread_limit, retries=retries,
    )["model"]


@dataclass
class _Prepared:
    runner: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    sync: Callable[[], None]
    device: torch.device
    input_size: tuple[int, ...]


def _prepare(model: nn.Module, input_size: tuple[int, ...], backend: str, channels_last: bool, threads: int,
             stack: contextlib.ExitStack) -> _Prepared:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "meta":
        raise ValueError("cannot time a model on the 'meta' device; build it on a real device")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    stack.callback(model.train, was_training)
    runner: Callable[[torch.Tensor], torch.Tensor] = model
    x = torch.randn(input_size, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    if channels_last:
        runner = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if backend == "compile":
        runner = torch.compile(runner)
    if backend in _REGISTERED:
        runner = stack.enter_context(
            _REGISTERED[backend](model, input_size, threads=threads, device=device, channels_last=channels_last)
        )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return _Prepared(runner, x, sync, device, input_size)


def _timed(prepared: _Prepared, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        prepared.runner(prepared.x)
        prepared.sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure_latencies(
    models: Mapping[str, tuple[nn.Module, tuple[int, ...]]],
    *,
    threads: int | None = None,
    runs: int | Mapping[str, int] = 50,
    warmup: int = 10,
    channels_last: bool = False,
    backend: str = "eager",
    rounds: int = 1,
    spread_limit: float | None = None,
    retries: int = 0,
    on_step: Callable[[int, int, str], None] | None = None,
) -> dict[str, LatencyResult]:
    """Time several networks in interleaved rounds: every network once per round, ``rounds`` rounds.

    ``models`` maps a name to (model, input size). Each network gets ``warmup`` untimed passes,
    then ``runs`` timed ones in total (an int, or one per name), split evenly over the rounds;
    when several networks share the rounds, each round starts with one untimed pass to bring
    the network back into the caches the others used. A slow drift (another job starting,
    the CPU clocking down) thus hits every network alike instead of the ones measured last.
    ``median_ms`` is the median of the per-round medians.

    With ``spread_limit``, a network whose spread ((p90 - p10) / median, within rounds when
    there are several: :attr:`LatencyResult.stability_spread`) exceeds it, or that
    was timed while other processes used ``BUSY_CORES`` or more (read from the kernel over
    each attempt, see :mod:`lightnets.cost.load`), is measured again, up to ``retries`` more
    times (all rounds, interleaved among the networks still flagged); the best attempt (not
    flagged, then the least contended, then the smallest spread) is kept, and marked unstable if it is still flagged.
    ``on_step(done, total, name)`` is called after each
    network's turn in a round, for a progress bar.

    Why not ``torch.utils.benchmark.Timer``: its ``blocked_autorange`` reports the mean of
    blocks of calls, which hides the per-call spread this function exists to report, and it
    neither flushes denormals nor runs the ONNX Runtime sessions' own thread pools; the loop
    here is a plain ``perf_counter`` around each call, the way a deployment calls the network.
    """
    _check_many(models, runs, warmup, backend, rounds, spread_limit, retries)
    if backend not in _BUILT_IN and backend not in _REGISTERED:
        raise ValueError(f"backend {backend!r} is provided by lightnets.export, which registers it when imported")
    per_model = {name: runs if isinstance(runs, int) else runs[name] for name in models}
    per_round = {name: math.ceil(n / rounds) for name, n in per_model.items()}
    warm = max(warmup, 1) if backend == "compile" else warmup
    interleaved = len(models) > 1

    def work() -> dict[str, LatencyResult]:
        used = torch.get_num_threads()
        with contextlib.ExitStack() as stack, torch.inference_mode():
            flushed = flushing_in_every_thread()
            prepared = {
                name: _prepare(model, size, backend, channels_last, threads or used, stack)
                for name, (model, size) in models.items()
            }
            for p in prepared.values():
                for _ in range(warm):
                    p.runner(p.x)
                p.sync()
            best: dict[str, LatencyResult] = {}
            pending = list(prepared)
            steps, done = rounds * len(pending), 0
            for attempt in range(1, retries + 2):
                by_round: dict[str, list[list[float]]] = {name: [] for name in pending}
                watch = LoadWatch().start()  # others' CPU over the whole attempt: per turn, ticks are too coarse
                for _ in range(rounds):
                    for name in pending:
                        p = prepared[name]
                        if interleaved:
                            p.runner(p.x)
                            p.sync()
                        by_round[name].append(_timed(p, per_round[name]))
                        done += 1
                        if on_step:
                            on_step(done, steps, name)
                reading = watch.reading()
                # the kernel counts CPU time in 10 ms ticks: below a second a few stray ticks read as a
                # fraction of a core (a 3-network, 0.3 s test run was flagged busy on an idle machine)
                others = reading.other_cores if reading.seconds >= 1.0 else None
                for name in pending:
                    result = _summarise(
                        by_round[name], backend=backend, input_size=prepared[name].input_size, warmup=warm,
                        threads=used, device=str(prepared[name].device), channels_last=channels_last,
                        flushed=flushed, attempt=attempt, spread_limit=spread_limit,
                    )
                    result.other_cores = others
                    if name not in best or _rank(result) < _rank(best[name]):
                        best[name] = result
                    best[name].attempts = attempt
                pending = [name for name in pending if best[name].unstable]
                if not pending or attempt > retries:
                    break
                steps += rounds * len(pending)
            return {name: best[name] for name in models}

    return on_measuring_thread(work, threads)


def _rank(result: LatencyResult) -> tuple[bool, float, float]:
    """Which attempt to keep: one not flagged, then the least contended, then the narrowest."""
    return result.unstable, result.other_cores or 0.0, result.stability_spread


def _summarise(by_round: list[list[float]], *, backend: str, input_size: tuple[int, ...], warmup: int, threads: int,
               device: str, channels_last: bool, flushed: bool, attempt: int,
               spread_limit: float | None) -> LatencyResult:
    times = [t for chunk in by_round for t in chunk]
    ordered = sorted(times)
    round_medians = [statistics.median(chunk) for chunk in by_round]
    relative = sorted(t / m for chunk, m in zip(by_round, round_medians, strict=True) for t in chunk if m)
    round_spread = percentile(relative, 0.9) - percentile(relative, 0.1) if len(by_round) > 1 and relative else None
    return LatencyResult(
        backend=backend, input_size=input_size, median_ms=statistics.median(round_medians),
        p10_ms=percentile(ordered, 0.1), p90_ms=percentile(ordered, 0.9), runs=len(times), warmup=warmup,
        threads=threads, device=device, channels_last=channels_last, denormals_flushed=flushed,
        torch_version=torch.__version__, times_ms=times, rounds=len(by_round), round_medians_ms=round_medians,
        attempts=attempt, spread_limit=spread_limit, round_spread=round_spread,
    )
