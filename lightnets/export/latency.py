"""The ONNX Runtime backends of :func:`lightnets.cost.measure_latency`, registered by ``lightnets.export``.

Timing ONNX Runtime means exporting the model first, which is this package's job; cost sits
below export, so the backends are defined here and handed to it (``register_backend``) rather
than imported by it.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator

import torch
from torch import nn

from ..cost.latency import register_backend
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
    """Wall milliseconds of ``model`` in ONNX Runtime: per session, its timed runs.

    The model is exported once and run in ``sessions`` fresh sessions (``runs`` split between
    them, each after ``warmup`` runs): one session's speed is not another's (five sessions of
    ShuffleNetV1 g2 1.0x at 224 here: 2.7-3.9 ms), so take the median of the sessions' medians.

    ``part=True`` times a part of a network as it costs inside the network. Its own session
    overstates that: on x86, ONNX Runtime's full optimisation runs convolutions in a blocked
    layout (NCHWc) and converts activations into it where a graph starts and back where it
    ends, once per network but once per part when a part is timed alone
    (:func:`boundary_reorders`: 0.03-0.07 ms per MobileNetV1 block at 224 here). Each run then
    has the median time of those conversions taken off, read from ``profiled_runs`` runs of a
    profiled session. Only the conversions are read from the profile: it adds about 3 us to
    every kernel it records (profiled kernel times summed to 1.1-1.4x the wall time here).
    """
    if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
        raise ValueError(f"sessions must be an integer >= 1, got {sessions!r}")
    onnx = _require("onnx")
    per_session = max(1, -(-runs // sessions))
    x = torch.randn(input_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = _export_for_timing(model, tmp, input_size, int8)
        timed = []
        for _ in range(sessions):
            session = OnnxModel(path, threads=threads)
            for _ in range(warmup):
                session(x)
            walls = []
            for _ in range(per_session):
                start = time.perf_counter()
                session(x)
                walls.append((time.perf_counter() - start) * 1e3)
            timed.append(walls)
            del session
        if not part:
            return timed
        prefix = os.path.join(tmp, "profile")
        profiled = OnnxModel(path, threads=threads, profile_prefix=prefix)
        for _ in range(warmup + profiled_runs):
            profiled(x)
        with open(profiled.session.end_profiling(), encoding="utf8") as fh:
            events = json.load(fh)
        boundary = boundary_reorders(onnx.load(prefix + ".optimized.onnx").graph)
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) != warmup + profiled_runs:
        raise RuntimeError(f"ONNX Runtime's profile has {len(starts)} runs, expected {warmup + profiled_runs}")
    reorders = [0.0] * len(starts)
    for event in events:
        if event.get("cat") == "Node" and event["name"].removesuffix("_kernel_time") in boundary:
            # a kernel belongs to the last run that started before it
            reorders[bisect.bisect_right(starts, event["ts"]) - 1] += event["dur"] / 1e3
    conversion = statistics.median(reorders[warmup:])
    return [[wall - conversion for wall in walls] for walls in timed]


def onnxruntime_int8_runner(
    model: nn.Module, input_size: tuple[int, ...], **conditions
) -> contextlib.AbstractContextManager:
    """:func:`onnxruntime_runner` with ``int8=True``."""
    return onnxruntime_runner(model, input_size, int8=True, **conditions)


def register_backends() -> None:
    """Hand the two ONNX Runtime backends to :func:`lightnets.cost.measure_latency` (importing export does)."""
    register_backend("onnxruntime", onnxruntime_runner)
    register_backend("onnxruntime-int8", onnxruntime_int8_runner)
