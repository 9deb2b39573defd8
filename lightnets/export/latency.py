"""The ONNX Runtime backends of :func:`lightnets.cost.measure_latency`, registered by ``lightnets.export``.

Timing ONNX Runtime means exporting the model first, which is this package's job; cost sits
below export, so the backends are defined here and handed to it (``register_backend``) rather
than imported by it.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import json
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from ..cost.latency import register_backend
from ..cost.speed import (
    REFERENCE_EVERY,
    REFERENCE_RUNS,
    REFERENCE_SHAPE,
    REFERENCE_WARMUP,
    RoundTimes,
    reference_module,
    round_schedule,
)
from .onnx import OnnxModel, _require, export_onnx
from .quantize import quantize_int8


def _export_for_timing(model: nn.Module, folder: str, input_size: tuple[int, ...], int8: bool) -> str:
    """``model`` as an ONNX file in ``folder`` for exactly ``input_size`` (int8: calibrated on 8
    random batches of that size)."""
    path = os.path.join(folder, "model.onnx")
    if int8:
        generator = torch.Generator().manual_seed(1)
        calibration = [torch.randn(input_size, generator=generator) for _ in range(8)]
        return quantize_int8(model, path, calibration, resolution=tuple(input_size[-2:]))
    return export_onnx(model, path, resolution=tuple(input_size[-2:]), in_chans=input_size[1], dynamic_size=False)


#: Below this many models, :func:`onnxruntime_rounds` exports in its own process: starting a
#: worker (importing torch and the exporter) takes longer than a few exports.
PARALLEL_EXPORT_MIN = 16
#: Exports sent to each worker process of :func:`_export_all` ahead of the one it is on.
EXPORTS_IN_FLIGHT = 2


def _export_worker_start() -> None:
    torch.set_num_threads(1)  # one process per core


def _export_job(job: tuple[bytes, str, tuple[int, ...], bool]) -> str:
    pickled, folder, shape, int8 = job
    # bytes this process's parent pickled a moment ago from a module it holds, not a file
    return _export_for_timing(pickle.loads(pickled), folder, shape, int8)


def _export_all(models: Sequence[nn.Module], folders: Sequence[str], shapes: Sequence[tuple[int, ...]], int8: bool,
                workers: int, done: Callable[[int], object]) -> list[str]:
    """Every model exported for timing, in order; in ``workers`` processes when there are at least
    :data:`PARALLEL_EXPORT_MIN`. torch.onnx's exporter traces in Python, one core per export
    (about 1.2 s per MobileNet block here), so exporting in one process leaves the other cores
    idle: the zoo's 478 sites took 9 of a table's 13 minutes. ``done(i)`` after each."""
    jobs = list(zip(models, folders, [tuple(shape) for shape in shapes], strict=True))
    if workers <= 1 or len(jobs) < PARALLEL_EXPORT_MIN:
        paths = []
        for i, (model, folder, shape) in enumerate(jobs):
            paths.append(_export_for_timing(model, folder, shape, int8))
            done(i)
        return paths
    paths: list[str] = []
    pending: collections.deque = collections.deque()

    def collect() -> None:
        paths.append(pending.popleft().get())
        done(len(paths) - 1)

    # spawn, not fork: a forked child of a process that ran OpenMP can hang in its first parallel region
    with torch.multiprocessing.get_context("spawn").Pool(workers, _export_worker_start) as pool:
        # Each module goes pickled to bytes, its tensors by value: sent as they are, torch.multiprocessing
        # moves every tensor into shared memory in place, each holding a file descriptor open for as
        # long as the caller keeps the module (the zoo's 478 sites and 57 networks wanted over 20,000,
        # this machine's limit). A few jobs in flight, so that a few modules' bytes exist at a time.
        for model, folder, shape in jobs:
            pending.append(pool.apply_async(_export_job, ((pickle.dumps(model), folder, shape, int8),)))
            if len(pending) >= EXPORTS_IN_FLIGHT * workers:
                collect()
        while pending:
            collect()
    return paths


def export_workers() -> int:
    """Processes :func:`onnxruntime_rounds` exports in by default: one per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def onnxruntime_runner(
    model: nn.Module, input_size: tuple[int, ...], *, threads: int, device: torch.device, channels_last: bool,
    int8: bool = False,
) -> Iterator[OnnxModel]:
    """An ONNX Runtime session of ``model`` at ``input_size`` (int8 with ``int8=True``), its files removed on exit.

    The graph has a fixed input size, like the int8 graph: ONNX Runtime plans static shapes
    better (about 3% here). The int8 graph is calibrated on 8 random batches: right for timing,
    not for accuracy, which needs real calibration data (``lightnets export --int8 --calibration``).
    """
    if device.type != "cpu" or channels_last:
        raise ValueError("the onnxruntime backends run on the CPU, without channels_last")
    with tempfile.TemporaryDirectory() as tmp:
        yield OnnxModel(_export_for_timing(model, tmp, input_size, int8), threads=threads)


# what ONNX Runtime runs in its blocked layout, or fuses into the convolution before it
_BLOCKED_ELEMENTWISE = frozenset({"Add", "Sum", "Relu", "Clip", "HardSwish", "HardSigmoid", "Identity"})


def boundary_reorders(graph) -> set[str]:
    """Names of the layout conversions an optimised graph has only because it is cut out of a
    network: a ``ReorderInput`` of the graph's input, and a ``ReorderOutput`` from which only
    blocked-layout elementwise operators (a residual Add, an activation) lead to the output.
    Inside a network, the previous / next part already holds the blocked layout. Conversions
    within the graph (ShuffleNetV1's grouped convolutions and shuffle, MobileNetV3's SE pool
    run in the plain layout) are not boundaries: the network pays them too."""
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def leads_only_to_output(tensor: str) -> bool:
        following = consumers.get(tensor, [])
        if not following:
            return tensor in outputs
        return all(
            node.op_type in _BLOCKED_ELEMENTWISE and all(leads_only_to_output(out) for out in node.output)
            for node in following
        )

    found = set()
    for node in graph.node:
        if node.op_type == "ReorderInput" and node.input[0] in inputs:
            found.add(node.name)
        elif node.op_type == "ReorderOutput" and leads_only_to_output(node.output[0]):
            found.add(node.name)
    return found


def _check_timing_args(runs: int, warmup: int, rounds: int, profiled_runs: int, rounds_name: str) -> None:
    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0), (rounds_name, rounds, 1),
                               ("profiled_runs", profiled_runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _boundary_reorder_ms(path: str, x: torch.Tensor, prefix: str, *, threads: int, warmup: int,
                         profiled_runs: int) -> float:
    """The median milliseconds per run that the ONNX graph at ``path`` spends in its
    :func:`boundary_reorders`, read from ``profiled_runs`` runs (after ``warmup``) of a session
    profiled into files starting with ``prefix``."""
    onnx = _require("onnx")
    profiled = OnnxModel(path, threads=threads, profile_prefix=prefix)
    for _ in range(warmup + profiled_runs):
        profiled(x)
    with open(profiled.session.end_profiling(), encoding="utf8") as fh:
        events = json.load(fh)
    del profiled
    boundary = boundary_reorders(onnx.load(prefix + ".optimized.onnx").graph)
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) != warmup + profiled_runs:
        raise RuntimeError(f"ONNX Runtime's profile has {len(starts)} runs, expected {warmup + profiled_runs}")
    reorders = [0.0] * len(starts)
    for event in events:
        if event.get("cat") == "Node" and event["name"].removesuffix("_kernel_time") in boundary:
            # a kernel belongs to the last run that started before it
            reorders[bisect.bisect_right(starts, event["ts"]) - 1] += event["dur"] / 1e3
    return statistics.median(reorders[warmup:])


#: Reference readings in ONNX Runtime each time the reference in this many sessions, kept open over
#: every round (sleeping between readings, see OnnxModel's ``spinning``): the median of three damps a
#: reading's noise. Sessions of one file differ little on their own (six kept open and timed in turn
#: here: within 2%); what once looked like one session's luck was the machine's drift and other open
#: sessions' spinning workers.
REFERENCE_SESSIONS = 3


def timed_runs(session: OnnxModel, x: torch.Tensor, warmup: int, runs: int) -> list[float]:
    """Wall times (ms) of ``runs`` calls of an ONNX Runtime ``session`` on ``x`` after ``warmup``
    untimed ones: the timing loop of :func:`onnxruntime_rounds`, one call away for experiments
    on sessions (``benchmarks/onnxruntime_spinning.py``)."""
    for _ in range(warmup):
        session(x)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        session(x)
        walls.append((time.perf_counter() - start) * 1e3)
    return walls


def onnxruntime_rounds(
    models: Sequence[nn.Module],
    shapes: Sequence[tuple[int, ...]],
    *,
    threads: int,
    runs: int = 30,
    warmup: int = 10,
    int8: bool = False,
    rounds: int = 3,
    part: bool = False,
    profiled_runs: int = 10,
    reference: bool = False,
    reference_every: int = REFERENCE_EVERY,
    on_step: Callable[[int, int, str], object] | None = None,
    workers: int | None = None,
) -> RoundTimes:
    """Wall milliseconds of each of ``models`` (at its input size in ``shapes``) in ONNX Runtime:
    per model, per round, the round's timed runs (``.times_ms``).

    Every model is exported once; then round by round, every model in turn gets a fresh session
    that runs ``warmup`` untimed and ``ceil(runs / rounds)`` timed runs, so each model is timed in
    ``rounds`` sessions; take the median of the rounds' medians. Interleaving the
    rounds, as the torch backends' rounds are (:func:`lightnets.cost.measure_latencies`),
    lets a drift of the machine's speed (up to 30% over minutes here) hit every model alike
    instead of the models timed early differing from those timed late. ``on_step(done, total,
    what)`` is called after each export, each session and each profile, for a progress bar.

    ``reference=True`` also times :func:`lightnets.cost.reference_module` (exported like the
    models, int8 with them) where :func:`lightnets.cost.round_schedule` puts a reading: at each
    round's start, after every ``reference_every`` models and at its end, in
    :data:`REFERENCE_SESSIONS` sessions kept open over every round (``.reference_ms``; see
    :class:`lightnets.cost.RoundTimes` for the speed factors they give).

    The exports run in ``workers`` processes (default :func:`export_workers`, one per core; 1:
    all in this process) when there are :data:`PARALLEL_EXPORT_MIN` models or more; the
    timing, after them, always runs in this process, alone.

    ``part=True`` times each model as a part of a network costs inside the network. Its own
    session overstates that: on x86, ONNX Runtime's full optimisation runs convolutions in a
    blocked layout (NCHWc) and converts activations into it where a graph starts and back where
    it ends, once per network but once per part when a part is timed alone
    (:func:`boundary_reorders`: 0.03-0.07 ms per MobileNetV1 block at 224 here). Each run then
    has the median time of those conversions taken off, read from ``profiled_runs`` runs of a
    profiled session of the model after the rounds. Only the conversions are read from the
    profile: it adds about 3 us to every kernel it records (profiled kernel times summed to
    1.1-1.4x the wall time here). The reference is timed whole, as it was built.
    """
    _check_timing_args(runs, warmup, rounds, profiled_runs, "rounds")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1 (processes to export in), got {workers!r}")
    if len(models) != len(shapes):
        raise ValueError(f"models and shapes must have the same length (one input size per model), "
                         f"got {len(models)} models and {len(shapes)} shapes")
    every = reference_every if reference else None
    round_schedule(len(models), 0, every)  # refuses a bad reference_every before anything is exported
    per_round = -(-runs // rounds)
    inputs = [torch.randn(shape, generator=torch.Generator().manual_seed(0)) for shape in shapes]
    steps = len(models) * (rounds + 1 + part)  # export, one session per round, profile
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(done, steps, what)

    with tempfile.TemporaryDirectory() as tmp:
        folders = [os.path.join(tmp, str(i)) for i in range(len(models))]
        for folder in folders:
            os.mkdir(folder)  # a folder each: the exports and profiles name their files alike
        paths = _export_all(models, folders, shapes, int8, export_workers() if workers is None else workers,
                            lambda i: step(f"exported {i}"))
        references: list[OnnxModel] = []
        if reference:
            os.mkdir(os.path.join(tmp, "reference"))
            path = _export_for_timing(reference_module(), os.path.join(tmp, "reference"), REFERENCE_SHAPE, int8)
            # sleeping workers: these stay open beside every session timed (see OnnxModel's spinning)
            references = [OnnxModel(path, threads=threads, spinning=False) for _ in range(REFERENCE_SESSIONS)]
        x_reference = torch.randn(REFERENCE_SHAPE, generator=torch.Generator().manual_seed(0))
        timed: list[list[list[float]]] = [[] for _ in models]
        readings: list[list[float]] = []
        for r in range(rounds):
            readings.append([])
            for i in round_schedule(len(paths), r, every):  # another order each round (see round_order)
                if i is None:
                    readings[r].append(statistics.median(
                        statistics.median(timed_runs(s, x_reference, REFERENCE_WARMUP, REFERENCE_RUNS))
                        for s in references
                    ))
                    continue
                session = OnnxModel(paths[i], threads=threads)
                timed[i].append(timed_runs(session, inputs[i], warmup, per_round))
                del session
                step(f"round {r + 1}, {i}")
        del references
        result = RoundTimes(timed, readings if reference else None, every)
        if not part:
            return result
        for i, (path, x, folder) in enumerate(zip(paths, inputs, folders, strict=True)):
            conversion = _boundary_reorder_ms(path, x, os.path.join(folder, "profile"), threads=threads,
                                              warmup=warmup, profiled_runs=profiled_runs)
            timed[i] = [[wall - conversion for wall in walls] for walls in timed[i]]
            step(f"profiled {i}")
    return result


def onnxruntime_times(
    model: nn.Module,
    input_size: tuple[int, ...],
    *,
    threads: int,
    runs: int = 30,
    warmup: int = 10,
    int8: bool = False,
    sessions: int = 3,
    part: bool = False,
    profiled_runs: int = 10,
) -> list[list[float]]:
    """Wall milliseconds of one ``model`` in ONNX Runtime: per session, its timed runs.

    :func:`onnxruntime_rounds` for one model, ``sessions`` fresh sessions being its rounds (see
    there for ``runs``, ``warmup``, ``part`` and ``profiled_runs``). Several models are better
    timed together by :func:`onnxruntime_rounds`: one after another, each sees the machine at
    another speed.
    """
    _check_timing_args(runs, warmup, sessions, profiled_runs, "sessions")
    return onnxruntime_rounds([model], [input_size], threads=threads, runs=runs, warmup=warmup, int8=int8,
                              rounds=sessions, part=part, profiled_runs=profiled_runs).times_ms[0]


def onnxruntime_int8_runner(
    model: nn.Module, input_size: tuple[int, ...], **conditions
) -> contextlib.AbstractContextManager:
    """:func:`onnxruntime_runner` with ``int8=True``."""
    return onnxruntime_runner(model, input_size, int8=True, **conditions)


def register_backends() -> None:
    """Hand the two ONNX Runtime backends to :func:`lightnets.cost.measure_latency` (importing export does)."""
    register_backend("onnxruntime", onnxruntime_runner)
    register_backend("onnxruntime-int8", onnxruntime_int8_runner)
