"""The ONNX Runtime backends of :func:`lightnets.cost.measure_latency`, registered by ``lightnets.export``.

Timing ONNX Runtime means exporting the model first, which is this package's job; cost sits
below export, so the backends are defined here and handed to it (``register_backend``) rather
than imported by it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
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
        try:
            paths.append(pending.popleft().result())
        except BrokenProcessPool as error:
            raise RuntimeError(
                "an export worker process died before finishing (killed, out of memory, or a script that starts "
                "processes without an `if __name__ == \"__main__\":` guard, which each spawned worker runs "
                "again); pass workers=1 to export in this process") from error
        done(len(paths) - 1)

    # spawn, not fork: a forked child of a process that ran OpenMP can hang in its first parallel region.
    # An executor, not multiprocessing.Pool: a Pool replaces a worker that dies and waits for its job forever.
    pool = ProcessPoolExecutor(workers, mp_context=torch.multiprocessing.get_context("spawn"),
                               initializer=_export_worker_start)
    try:
        # Each module goes pickled to bytes, its tensors by value: sent as they are, torch.multiprocessing
        # moves every tensor into shared memory in place, each holding a file descriptor open for as
        # long as the caller keeps the module (the zoo's 478 sites and 57 networks wanted over 20,000,
        # this machine's limit). A few jobs in flight, so that a few modules' bytes exist at a time.
        for model, folder, shape in jobs:
            pending.append(pool.submit(_export_job, (pickle.dumps(model), folder, shape, int8)))
            if len(pending) >= EXPORTS_IN_FLIGHT * workers:
                collect()
        while pending:
            collect()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
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


def boundary_reorders(graph, input_blocked: bool = True) -> set[str]:
    """Names of the layout conversions an optimised graph has only because it is cut out of a
    network: a ``ReorderInput`` of the graph's input, and a ``ReorderOutput`` from which only
    blocked-layout elementwise operators (a residual Add, an activation) lead to the output.
    Inside a network, the previous / next part already holds the blocked layout. Conversions
    within the graph (ShuffleNetV1's grouped convolutions and shuffle, MobileNetV3's SE pool
    run in the plain layout) are not boundaries: the network pays them too.

    Nor is a conversion at the edge when the part also needs that tensor in the plain layout:
    an input that another operator reads as it is (with fewer channels than a block, ONNX
    Runtime's first convolution reads the plain input itself), or an elementwise operator
    that also reads a plain tensor (ShuffleNetV1's residual Add after a grouped convolution,
    which runs in the plain layout). The network converts there too, once. Both kinds are
    decided together: without a conversion, a tensor is in the blocked layout only if every
    operator that made it was blocked.

    ``input_blocked=False``: the part's input arrives in the plain layout (the part before it in
    the network ends in the plain layout: ShuffleNet's concatenation and channel shuffle), so the
    network converts it too and no ``ReorderInput`` is left out; a residual Add then reads a
    plain tensor and its ``ReorderOutput`` stays as well."""
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    constants = {t.name for t in getattr(graph, "initializer", [])}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def elementwise_to_output(tensor: str) -> list | None:
        """The elementwise operators from ``tensor`` to the graph's output, or None if anything else follows."""
        following = consumers.get(tensor, [])
        if not following:
            return [] if tensor in outputs else None
        found = []
        for node in following:
            rest = [elementwise_to_output(out) for out in node.output]
            if node.op_type not in _BLOCKED_ELEMENTWISE or any(r is None for r in rest):
                return None
            found += [node, *(n for r in rest for n in r)]
        return found

    into = {n.name: n for n in graph.node if input_blocked and n.op_type == "ReorderInput" and n.input[0] in inputs}
    out_of = {}
    for node in graph.node:
        if node.op_type == "ReorderOutput":
            path = elementwise_to_output(node.output[0])
            if path is not None:
                out_of[node.name] = (node, path)

    def blocked(tensor: str, converted_inputs: set[str]) -> bool:
        """Whether ``tensor`` is in the blocked layout once the candidate conversions are gone."""
        if tensor in constants or not tensor:
            return True  # an operator's constant operand (Clip's bounds), or an input left out
        if tensor in inputs:
            return tensor in converted_inputs
        node = producer.get(tensor)
        if node is None:
            return False
        if node.op_type == "ReorderOutput":
            return node.name in out_of
        if node.op_type == "ReorderInput" or getattr(node, "domain", "") == "com.microsoft.nchwc":
            return True
        return node.op_type in _BLOCKED_ELEMENTWISE and all(blocked(t, converted_inputs) for t in node.input)

    changed = True
    while changed:
        changed = False
        converted = {n.input[0] for n in into.values()}
        for name, node in list(into.items()):
            others = [c for c in consumers.get(node.input[0], []) if c is not node]
            if not all(c.op_type in _BLOCKED_ELEMENTWISE and all(blocked(t, converted) for t in c.input)
                       for c in others):
                del into[name]
                changed = True
        for name, (_, path) in list(out_of.items()):
            if not all(blocked(t, converted) for n in path for t in n.input):
                del out_of[name]
                changed = True
    return set(into) | set(out_of)


def random_feeds(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """A standard-normal float32 array of each shape, by input name: what a timed run feeds."""
    generator = np.random.default_rng(seed)
    return {name: generator.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}


@dataclass(frozen=True)
class PartLayout:
    """How a part, as ONNX Runtime optimises it on this CPU, meets its neighbours in a network:
    whether its output leaves in the blocked layout (NCHWc) when its input arrives blocked
    (``blocked_out``) or plain (``plain_in_blocked_out``), and whether the input's layout
    changes what the part runs (``input_matters``: False when it has no conversion of its input
    to leave out, the two cases then being one graph). A network's first part gets the plain
    input; each next part the layout the one before it gives (:func:`part_layout`)."""

    blocked_out: bool
    plain_in_blocked_out: bool
    input_matters: bool

    def output_blocked(self, input_blocked: bool) -> bool:
        return self.blocked_out if input_blocked else self.plain_in_blocked_out


def part_layout(graph, blocked_graph=None) -> PartLayout:
    """The :class:`PartLayout` of an optimised graph, from its :func:`boundary_reorders` for
    each layout of its input: its output is blocked when a ``ReorderOutput`` is left out.
    ``blocked_graph``: the part as optimised behind a blocked layer
    (:func:`optimise_behind_a_blocked_layer`), which it runs when its input arrives blocked."""

    def output_blocked(g, boundary: set[str]) -> bool:
        by_name = {node.name: node.op_type for node in g.node}
        return any(by_name[name] == "ReorderOutput" for name in boundary)

    behind = graph if blocked_graph is None else blocked_graph
    blocked, plain = boundary_reorders(behind, True), boundary_reorders(graph, False)
    return PartLayout(output_blocked(behind, blocked), output_blocked(graph, plain),
                      blocked_graph is not None or blocked != plain)


def optimise_for_this_cpu(path: str, out_path: str) -> None:
    """Write to ``out_path`` the graph at ``path`` as ONNX Runtime's full optimisation leaves it on
    this CPU (with its blocked-layout operators): what :func:`strip_boundary_reorders` cuts."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = out_path
    options.log_severity_level = 3  # not the warning that the file holds this CPU's layout: it is meant to
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def strip_boundary_reorders(path: str, out_path: str, x: torch.Tensor, *, input_blocked: bool = True,
                            optimised: bool = False) -> dict[str, tuple[int, ...]] | None:
    """Write to ``out_path`` the graph at ``path`` as ONNX Runtime optimises it on this CPU, less
    its :func:`boundary_reorders` (for an input that arrives blocked, or with
    ``input_blocked=False`` plain), and return its inputs' shapes by name; None (nothing written)
    when it has none. ``x``: an input of the size it is timed at. ``optimised=True``: ``path`` is
    already optimised (:func:`optimise_for_this_cpu`).

    The part then runs as it runs inside a network: its input arrives and its output leaves in
    the blocked layout (NCHWc), each a graph input / output of the padded channel count. The
    elementwise operators that read a stripped input (a residual Add) read the blocked one, as
    they would in the network; :func:`boundary_reorders` strips no input that anything else
    reads. Timed with
    ``OnnxModel(out_path, optimized=True)`` on random arrays of those shapes: no time is taken off a
    measurement, where subtracting the conversions' profiled time (the profiler adds about 3 us
    per kernel, and ran at another moment of the machine's speed) left MobileNetV1's sites
    0.86x between two builds while other families' agreed within 5%."""
    onnx = _require("onnx")
    if not optimised:
        optimise_for_this_cpu(path, out_path)
    source = path if optimised else out_path
    model = onnx.load(source)
    graph = model.graph
    boundary = boundary_reorders(graph, input_blocked)
    if not boundary:
        if not optimised:
            os.remove(out_path)
        return None
    into = [n for n in graph.node if n.name in boundary and n.op_type == "ReorderInput"]
    out_of = [n for n in graph.node if n.name in boundary and n.op_type == "ReorderOutput"]
    blocked = [n.output[0] for n in into] + [n.input[0] for n in out_of]
    # the blocked tensors' shapes (padded channels): one run of the graph with them as outputs
    probe = onnx.load(source)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in blocked)
    onnx.save(probe, out_path)
    session = OnnxModel(out_path, threads=1, optimized=True)
    values = session.run({session.input_name: x.detach().cpu().numpy()})
    shapes = {o.name: value.shape for o, value in zip(session.session.get_outputs(), values, strict=True)}
    del session
    for node in into:
        plain, block = node.input[0], node.output[0]
        graph.node.remove(node)
        for other in graph.node:  # only blocked-layout elementwise operators read it (boundary_reorders)
            other.input[:] = [block if name == plain else name for name in other.input]
        graph.input.remove(next(i for i in graph.input if i.name == plain))
        graph.input.append(onnx.helper.make_tensor_value_info(block, onnx.TensorProto.FLOAT, list(shapes[block])))
    for node in out_of:
        block, plain = node.input[0], node.output[0]
        graph.node.remove(node)
        for other in graph.node:
            other.input[:] = [block if name == plain else name for name in other.input]
        for output in graph.output:
            if output.name == plain:
                output.name = block
    # the shapes ONNX Runtime inferred and the exporter declared are the plain layout's
    del graph.value_info[:]
    for output in graph.output:
        output.type.tensor_type.ClearField("shape")
    onnx.save(model, out_path)
    inputs = {i.name: tuple(shapes[i.name]) if i.name in shapes else tuple(x.shape) for i in graph.input}
    OnnxModel(out_path, threads=1, optimized=True).run(random_feeds(inputs))  # loads and runs, or says why here
    return inputs


#: The name of the layer :func:`optimise_behind_a_blocked_layer` puts before a part's input.
BLOCKED_PRODUCER = "lightnets_blocked_producer"


def optimise_behind_a_blocked_layer(path: str, out_path: str) -> bool:
    """Write to ``out_path`` the graph at ``path`` as ONNX Runtime optimises it on this CPU when
    a layer that runs in the blocked layout (NCHWc) writes its input, as the layer before it
    does inside a network; False (nothing written) when no such layer can stand there.

    Optimised alone, a part's input is a plain graph input, and ONNX Runtime folds a residual
    Add (and the ReLU after it) into the convolution before it, as that convolution's Sum input,
    only when the Add's other operand comes blocked from a layer: the part alone keeps an Add
    and a ReLU that the network does not run. Here a 1x1 convolution is put before the input,
    the graph optimised, and that convolution cut out again; the ``ReorderInput`` before it
    stays, for :func:`strip_boundary_reorders` to take out as any part's. ShuffleNetV1 with 8
    groups, x2.0 (official), a unit of its second stage: Add 44 us, ReLU 39 us and the
    convolution 87 us alone, the folded convolution 112 us inside the network (ONNX Runtime's
    profiler, 2 threads).

    False when that convolution would not run blocked (fewer channels than a block), when the
    part reads its input in the plain layout (the network converts there too, as the part alone
    does), when the graph has other than one 4-d float input of known channels, or when the graph
    left does not compute what the part does (the optimiser folded the part's first operator into
    that convolution, as it folds a scaling, a BatchNorm or an activation, and it went with it):
    both are run on one random input and compared."""
    onnx = _require("onnx")
    model = onnx.load(path)
    graph = model.graph
    if len(graph.input) != 1:
        return False
    (given,) = graph.input
    dims = [d.dim_value for d in given.type.tensor_type.shape.dim]
    if given.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1] < 1:
        return False  # (the batch may be a named dimension: only the channels are needed)
    name, fed, channels = given.name, BLOCKED_PRODUCER + "_input", dims[1]
    weight = onnx.numpy_helper.from_array(np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1),
                                          BLOCKED_PRODUCER + "_weight")
    graph.initializer.append(weight)
    graph.node.insert(0, onnx.helper.make_node("Conv", [fed, weight.name], [name], name=BLOCKED_PRODUCER))
    given.name = fed
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, os.path.join(tmp, "behind.onnx"))
        optimise_for_this_cpu(os.path.join(tmp, "behind.onnx"), os.path.join(tmp, "optimised.onnx"))
        optimised = onnx.load(os.path.join(tmp, "optimised.onnx"))
    graph = optimised.graph
    readers: dict[str, list] = {}
    for node in graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    reorder = readers.get(fed, [])
    if len(reorder) != 1 or reorder[0].op_type != "ReorderInput":
        return False  # the producer runs plain
    (reorder,) = reorder
    producer = readers.get(reorder.output[0], [])
    if (len(producer) != 1 or producer[0].op_type != "Conv" or producer[0].domain != "com.microsoft.nchwc"
            or len(producer[0].input) > 3 or any(a.name == "activation" for a in producer[0].attribute)):
        return False
    (producer,) = producer
    written = producer.output[0]
    if (not readers.get(written) or any(r.op_type == "ReorderOutput" for r in readers[written])
            or any(o.name == written for o in graph.output)):
        return False
    graph.node.remove(producer)
    for node in graph.node:
        node.input[:] = [reorder.output[0] if tensor == written else tensor for tensor in node.input]
    used = {tensor for node in graph.node for tensor in node.input} | {o.name for o in graph.output}
    for initializer in [t for t in graph.initializer if t.name in producer.input[1:] and t.name not in used]:
        graph.initializer.remove(initializer)
    reorder.input[0] = graph.input[0].name = name
    with tempfile.TemporaryDirectory() as tmp:
        cut = os.path.join(tmp, "cut.onnx")
        onnx.save(optimised, cut)
        feeds = random_feeds({name: tuple(d or 1 for d in dims)})
        expected = OnnxModel(path, threads=1).run(feeds)
        got = OnnxModel(cut, threads=1, optimized=True).run(feeds)
        if len(got) != len(expected) or not all(a.shape == b.shape and np.allclose(a, b, rtol=1e-3, atol=1e-4)
                                                for a, b in zip(got, expected, strict=True)):
            return False
    onnx.save(optimised, out_path)
    return True


def in_place_outputs(graph) -> dict[str, str]:
    """Output name -> input name of each graph output that a blocked convolution with a folded
    residual writes while its Sum input is a graph input nothing reads after it. Inside a
    network ONNX Runtime writes such a convolution's output over its Sum input (the NCHWc
    convolution may run in place, and the network holds that tensor no longer); run alone on
    separate buffers, it copies the Sum input to the output first. Bound with
    :meth:`OnnxModel.bind`'s ``in_place``, the part runs as in the network: the second stage of
    ShuffleNetV1 with 8 groups, x2.0 (official), 0.29 ms a unit with the Add and the copy,
    0.22 ms folded and in place, at 2 threads."""
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}

    def upstream(node) -> set[str]:
        """Every tensor ``node`` depends on."""
        seen, todo = set(), list(node.input)
        while todo:
            tensor = todo.pop()
            if tensor and tensor not in seen:
                seen.add(tensor)
                if tensor in producer:
                    todo += producer[tensor].input
        return seen

    pairs: dict[str, str] = {}
    for node in graph.node:
        # not when the convolution also reads its Sum input as data: ONNX Runtime reuses a buffer in
        # place only for its last use, and a graph output is no buffer to give away
        if not (node.op_type == "Conv" and node.domain == "com.microsoft.nchwc" and len(node.input) > 3
                and node.input[3] in inputs and node.output[0] in outputs and node.input[3] not in pairs.values()
                and node.input[3] not in node.input[:3] and node.input[3] not in outputs):
            continue
        before = upstream(node)
        readers = [n for n in graph.node if node.input[3] in n.input and n.output[0] != node.output[0]]
        if all(any(out in before for out in n.output) for n in readers):
            pairs[node.output[0]] = node.input[3]
    return pairs


def _check_timing_args(runs: int, warmup: int, rounds: int, rounds_name: str) -> None:
    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0), (rounds_name, rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


#: Reference readings in ONNX Runtime each time the reference in this many sessions, kept open over
#: every round (sleeping between readings, see OnnxModel's ``spinning``): the median of three damps a
#: reading's noise. Sessions of one file differ little on their own (six kept open and timed in turn
#: here: within 2%); what once looked like one session's luck was the machine's drift and other open
#: sessions' spinning workers.
REFERENCE_SESSIONS = 3


def timed_runs(session: OnnxModel, x: torch.Tensor | dict[str, np.ndarray], warmup: int, runs: int,
               rewrite_inputs: bool = False, in_place: dict[str, str] | None = None) -> list[float]:
    """Wall times (ms) of ``runs`` calls of an ONNX Runtime ``session`` on ``x`` (a tensor, or
    arrays by input name) after ``warmup`` untimed ones: the timing loop of
    :func:`onnxruntime_rounds`, its inputs and outputs bound once (:meth:`OnnxModel.bind`), one
    call away for experiments on sessions (``benchmarks/onnxruntime_spinning.py``).

    ``rewrite_inputs=True``: before every run, untimed, the inputs are written again
    (:meth:`BoundRun.rewrite_inputs`), as a layer inside a network reads what the layer before
    it has just written, where a part run again and again on one input reads it where the last
    run left it. An experiment, off by default. With the sites and the network timed in the same
    6 rounds at 2 threads, ShuffleNetV1 with 8 groups, x0.5, had its sites sum to 0.87-0.91x the
    network as they were and 1.11x rewritten; x2.0 (official) 1.14x and 1.19x; MobileNetV2
    1.01x and 1.07x. But a lookup table built so predicted 51 of the 57 zoo networks within
    10% (55 in the run before, without): MobileNetV1 x0.25 +17.5%, ShuffleNetV1 g8 x1.0 +15.3%.

    ``in_place`` (output name -> input name): those outputs are written over those inputs
    (:meth:`OnnxModel.bind`), as :func:`in_place_outputs` finds them in a part."""
    feeds = x if isinstance(x, dict) else {session.input_name: x.detach().cpu().numpy()}
    run = session.bind(feeds, in_place)  # one untimed run besides the warm-up: the outputs' shapes
    for _ in range(warmup):
        if rewrite_inputs:
            run.rewrite_inputs()
        run()
    walls = []
    for _ in range(runs):
        if rewrite_inputs:
            run.rewrite_inputs()
        start = time.perf_counter()
        run()
        walls.append((time.perf_counter() - start) * 1e3)
    return walls


class TimingExports:
    """Models exported to ONNX once, in a temporary folder, to be timed in ONNX Runtime by
    :meth:`rounds`, whole or as parts of a network (:meth:`layout` tells how each part meets
    its neighbours, for the caller to choose which input layout to time it with). A context
    manager: the files go on leaving it (or :meth:`close`).

    The exports run in ``workers`` processes (default :func:`export_workers`, one per core; 1:
    all in this process) when there are :data:`PARALLEL_EXPORT_MIN` models or more.
    ``on_step(done, total, what)`` after each export, for a progress bar; :meth:`layout` and
    :meth:`rounds` take their own.

    ``fold_residuals=True``: a part whose input arrives blocked is timed as ONNX Runtime runs it
    behind a blocked layer (:meth:`behind_blocked`: a residual Add folded into the convolution
    before it) with that convolution's output written over its Sum input
    (:func:`in_place_outputs`), as inside a network. An experiment, off by default: it makes the
    parts more like the network, but a lookup table built so predicted no better (README).
    """

    def __init__(self, models: Sequence[nn.Module], shapes: Sequence[tuple[int, ...]], *, int8: bool = False,
                 workers: int | None = None, on_step: Callable[[int, int, str], object] | None = None,
                 fold_residuals: bool = False) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be an integer >= 1 (processes to export in), got {workers!r}")
        if not isinstance(fold_residuals, bool):
            raise ValueError(f"fold_residuals must be True or False, got {fold_residuals!r}")
        self.fold_residuals = fold_residuals
        if len(models) != len(shapes):
            raise ValueError(f"models and shapes must have the same length (one input size per model), "
                             f"got {len(models)} models and {len(shapes)} shapes")
        self.int8 = int8
        self.shapes = [tuple(shape) for shape in shapes]
        self.inputs = [torch.randn(shape, generator=torch.Generator().manual_seed(0)) for shape in self.shapes]
        self._tmp = tempfile.TemporaryDirectory()
        self.folders = [os.path.join(self._tmp.name, str(i)) for i in range(len(models))]
        for folder in self.folders:
            os.mkdir(folder)  # a folder each: the exports name their files alike
        try:
            self.paths = _export_all(models, self.folders, self.shapes, int8,
                                     export_workers() if workers is None else workers,
                                     lambda i: on_step and on_step(i + 1, len(models), f"exported {i}"))
        except BaseException:
            self.close()
            raise
        self._layouts: dict[int, PartLayout] = {}
        self._behind: dict[int, str | None] = {}
        self._parts: dict[tuple[int, bool], tuple[str, bool, torch.Tensor | dict[str, np.ndarray], dict[str, str]]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __enter__(self) -> TimingExports:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def _optimised(self, i: int) -> str:
        path = os.path.join(self.folders[i], "optimised.onnx")
        if not os.path.exists(path):
            optimise_for_this_cpu(self.paths[i], path)
        return path

    def behind_blocked(self, i: int) -> str | None:
        """Model ``i`` optimised once for this CPU behind a layer that writes its input in the
        blocked layout (:func:`optimise_behind_a_blocked_layer`): the file, or None where no
        such layer can stand, for int8 (whose convolutions do not run blocked) and without
        ``fold_residuals``."""
        if not self.fold_residuals:
            return None
        if i not in self._behind:
            path = os.path.join(self.folders[i], "optimised-behind-blocked.onnx")
            self._behind[i] = path if not self.int8 and optimise_behind_a_blocked_layer(self.paths[i], path) else None
        return self._behind[i]

    def layout(self, i: int) -> PartLayout:
        """Model ``i``'s :class:`PartLayout` (its graph optimised once for this CPU; with
        ``fold_residuals``, its blocked-input side from :meth:`behind_blocked`)."""
        if i not in self._layouts:
            onnx = _require("onnx")
            behind = self.behind_blocked(i)
            self._layouts[i] = part_layout(onnx.load(self._optimised(i)).graph, behind and onnx.load(behind).graph)
        return self._layouts[i]

    def part(self, i: int, input_blocked: bool) -> tuple[str, bool, torch.Tensor | dict[str, np.ndarray],
                                                         dict[str, str]]:
        """``(path, optimized, feeds, in_place)`` that time model ``i`` as a part whose input
        arrives blocked or plain: :func:`strip_boundary_reorders`' graph (blocked, with
        ``fold_residuals``: of :meth:`behind_blocked`'s graph, where there is one), or the
        export itself when it has nothing to strip; ``in_place``: with ``fold_residuals``, the
        outputs to write over inputs (:func:`in_place_outputs`), else none."""
        key = (i, input_blocked)
        if key not in self._parts:
            out = os.path.join(self.folders[i], f"part-{'blocked' if input_blocked else 'plain'}.onnx")
            source = (self.behind_blocked(i) if input_blocked else None) or self._optimised(i)
            shapes = strip_boundary_reorders(source, out, self.inputs[i], input_blocked=input_blocked, optimised=True)
            in_place = in_place_outputs(_require("onnx").load(out).graph) if shapes and self.fold_residuals else {}
            self._parts[key] = (self.paths[i], False, self.inputs[i], {}) if shapes is None else (
                out, True, random_feeds(shapes), in_place)
        return self._parts[key]

    def rounds(
        self,
        items: Sequence[int | tuple[int, bool]],
        *,
        threads: int,
        runs: int = 30,
        warmup: int = 10,
        rounds: int = 3,
        reference: bool = False,
        reference_every: int = REFERENCE_EVERY,
        on_step: Callable[[int, int, str], object] | None = None,
    ) -> RoundTimes:
        """Wall milliseconds of each item in ONNX Runtime: per item, per round, the round's timed
        runs (``.times_ms``). An item is a model's index (timed whole, as exported) or ``(index,
        input_blocked)``: the model as a part of a network whose input arrives in that layout
        (:meth:`part`). See :func:`onnxruntime_rounds`."""
        _check_timing_args(runs, warmup, rounds, "rounds")
        for item in items:
            index = item[0] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bool) else item
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
                raise ValueError(f"an item is a model's index (0-{len(self) - 1}) or (index, input_blocked), "
                                 f"got {item!r}")
        every = reference_every if reference else None
        round_schedule(len(items), 0, every)  # refuses a bad reference_every before anything runs
        per_round = -(-runs // rounds)
        parts = sum(not isinstance(item, int) for item in items)
        steps, done = parts + len(items) * rounds, 0

        def step(what: str) -> None:
            nonlocal done
            done += 1
            if on_step is not None:
                on_step(done, steps, what)

        timing = []
        for item in items:
            if isinstance(item, int):
                timing.append((self.paths[item], False, self.inputs[item], {}))
            else:
                timing.append(self.part(*item))
                step(f"stripped {item[0]}")
        references: list[OnnxModel] = []
        if reference:
            folder = os.path.join(self._tmp.name, "reference")
            os.makedirs(folder, exist_ok=True)
            path = _export_for_timing(reference_module(), folder, REFERENCE_SHAPE, self.int8)
            # sleeping workers: these stay open beside every session timed (see OnnxModel's spinning)
            references = [OnnxModel(path, threads=threads, spinning=False) for _ in range(REFERENCE_SESSIONS)]
        x_reference = torch.randn(REFERENCE_SHAPE, generator=torch.Generator().manual_seed(0))
        timed: list[list[list[float]]] = [[] for _ in items]
        readings: list[list[float]] = []
        for r in range(rounds):
            readings.append([])
            for i in round_schedule(len(items), r, every):  # another order each round (see round_order)
                if i is None:
                    readings[r].append(statistics.median(
                        statistics.median(timed_runs(s, x_reference, REFERENCE_WARMUP, REFERENCE_RUNS))
                        for s in references
                    ))
                    continue
                path, optimized, feeds, in_place = timing[i]
                session = OnnxModel(path, threads=threads, optimized=optimized)
                timed[i].append(timed_runs(session, feeds, warmup, per_round, in_place=in_place))
                del session
                step(f"round {r + 1}, {i}")
        del references
        return RoundTimes(timed, readings if reference else None, every)


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
    reference: bool = False,
    reference_every: int = REFERENCE_EVERY,
    on_step: Callable[[int, int, str], object] | None = None,
    workers: int | None = None,
) -> RoundTimes:
    """Wall milliseconds of each of ``models`` (at its input size in ``shapes``) in ONNX Runtime:
    per model, per round, the round's timed runs (``.times_ms``).

    Every model is exported once (:class:`TimingExports`); then round by round, every model in
    turn gets a fresh session that runs ``warmup`` untimed and ``ceil(runs / rounds)`` timed
    runs, so each model is timed in ``rounds`` sessions; take the median of the rounds' medians.
    Interleaving the rounds, as the torch backends' rounds are
    (:func:`lightnets.cost.measure_latencies`), lets a drift of the machine's speed (up to 30%
    over minutes here) hit every model alike instead of the models timed early differing from
    those timed late. ``on_step(done, total, what)`` is called after each export, each part
    stripped and each session, for a progress bar.

    ``reference=True`` also times :func:`lightnets.cost.reference_module` (exported like the
    models, int8 with them) where :func:`lightnets.cost.round_schedule` puts a reading: at each
    round's start, after every ``reference_every`` models and at its end, in
    :data:`REFERENCE_SESSIONS` sessions kept open over every round (``.reference_ms``; see
    :class:`lightnets.cost.RoundTimes` for the speed factors they give).

    The exports run in ``workers`` processes (default :func:`export_workers`, one per core; 1:
    all in this process) when there are :data:`PARALLEL_EXPORT_MIN` models or more; the
    timing, after them, always runs in this process, alone.

    ``part=True`` times each model as a part of a network costs inside the network, its input
    arriving in the blocked layout. Its own session overstates that: on x86, ONNX Runtime's full
    optimisation runs convolutions in a blocked layout (NCHWc) and converts activations into it
    where a graph starts and back where it ends, once per network but once per part when a part
    is timed alone (:func:`boundary_reorders`: 0.03-0.07 ms per MobileNetV1 block at 224 here,
    a quarter of MobileNetV1 x0.5's summed sites). Each part is then timed as
    :func:`strip_boundary_reorders` writes it: its optimised graph without those conversions,
    taking and giving the blocked layout (random inputs of its shapes). The reference is timed
    whole, as it was built. To time parts whose input arrives plain, or both ways, use
    :class:`TimingExports` and its items.
    """
    _check_timing_args(runs, warmup, rounds, "rounds")
    round_schedule(len(models), 0, reference_every if reference else None)  # refuses it before any export
    total = len(models) * (rounds + 1 + part)  # export, strip, one session per round
    with TimingExports(models, shapes, int8=int8, workers=workers,
                       on_step=on_step and (lambda done, _, what: on_step(done, total, what))) as exports:
        items = [(i, True) for i in range(len(models))] if part else list(range(len(models)))
        return exports.rounds(items, threads=threads, runs=runs, warmup=warmup, rounds=rounds, reference=reference,
                              reference_every=reference_every,
                              on_step=on_step and (lambda done, _, what: on_step(len(models) + done, total, what)))


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
) -> list[list[float]]:
    """Wall milliseconds of one ``model`` in ONNX Runtime: per session, its timed runs.

    :func:`onnxruntime_rounds` for one model, ``sessions`` fresh sessions being its rounds (see
    there for ``runs``, ``warmup`` and ``part``). Several models are better
    timed together by :func:`onnxruntime_rounds`: one after another, each sees the machine at
    another speed.
    """
    _check_timing_args(runs, warmup, sessions, "sessions")
    return onnxruntime_rounds([model], [input_size], threads=threads, runs=runs, warmup=warmup, int8=int8,
                              rounds=sessions, part=part).times_ms[0]


def onnxruntime_int8_runner(
    model: nn.Module, input_size: tuple[int, ...], **conditions
) -> contextlib.AbstractContextManager:
    """:func:`onnxruntime_runner` with ``int8=True``."""
    return onnxruntime_runner(model, input_size, int8=True, **conditions)


def register_backends() -> None:
    """Hand the two ONNX Runtime backends to :func:`lightnets.cost.measure_latency` (importing export does)."""
    register_backend("onnxruntime", onnxruntime_runner)
    register_backend("onnxruntime-int8", onnxruntime_int8_runner)
