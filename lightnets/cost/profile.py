"""Per-operator cost of a forward pass: parameters, MAdds, MAC, and measured time.

Counting happens at the dispatch level (a ``TorchDispatchMode``), so functional operations
(``torch.cat``, ``chunk``, ``+``, ``*``, the copy inside a channel shuffle) are seen as well as
modules; module hooks alone would miss them. The model is not modified. Conventions:

- **MAdds**: multiply-adds of convolutions and linear layers, nothing else: the convention
  of every paper in the zoo (MobileNet V1-V3, ShuffleNet V1-V2). Equals
  ``FlopCounterMode`` FLOPs / 2.
- **Element-wise ops** (counted separately): one per output element for activations, adds
  and multiplies; two for BatchNorm (scale and shift, eval mode); k*k per output element
  for a kxk pool, one per input element for a global pool. Data movement (concat, split,
  shuffle) counts no ops.
- **MAC** (memory access cost, ShuffleNetV2 section 2): elements read plus elements written:
  the input feature maps, the output, and the weights (parameters and BN statistics). A
  view (``split`` / ``chunk`` in eager PyTorch) moves no data and has MAC 0; a layout copy
  (the reshape-transpose-reshape of a channel shuffle) reads and writes every element.
- **Arithmetic intensity**: FLOPs (2 x MAdds + element-wise ops) per byte of MAC.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.module_tracker import ModuleTracker

from .kinds import CONV, KINDS, LINEAR, POOL, SPLIT, aten, op_kind
from .latency import SPREAD_LIMIT, LatencyResult, measure_latency, on_measuring_thread

_GLOBAL_POOLS = {aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default, aten.mean.dim, aten.mean.default}


@dataclass
class OpCost:
    """One row: one operator of the forward pass, attributed to its innermost module."""

    index: int
    name: str
    op: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    madds: int
    elementwise_ops: int
    mac: int
    mac_bytes: int
    time_ms: float | None = None

    @property
    def flops(self) -> int:
        return 2 * self.madds + self.elementwise_ops

    @property
    def intensity(self) -> float:
        """FLOPs per byte of memory access."""
        return self.flops / self.mac_bytes if self.mac_bytes else 0.0

    def to_dict(self) -> dict:
        row = asdict(self)
        row["input_shape"] = list(self.input_shape)
        row["output_shape"] = list(self.output_shape)
        row["flops"] = self.flops
        row["intensity"] = round(self.intensity, 4)
        return row


@dataclass
class Totals:
    params: int
    madds: int
    elementwise_ops: int
    mac: int
    mac_bytes: int
    time_ms: float | None

    @property
    def flops(self) -> int:
        return 2 * self.madds + self.elementwise_ops


@dataclass
class Profile:
    """The rows of one forward pass, with totals and per-kind shares."""

    rows: list[OpCost]
    input_size: tuple[int, ...]
    dtype: str
    latency: LatencyResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> Totals:
        timed = [r.time_ms for r in self.rows if r.time_ms is not None]
        return Totals(
            params=sum(r.params for r in self.rows),
            madds=sum(r.madds for r in self.rows),
            elementwise_ops=sum(r.elementwise_ops for r in self.rows),
            mac=sum(r.mac for r in self.rows),
            mac_bytes=sum(r.mac_bytes for r in self.rows),
            time_ms=sum(timed) if timed else None,
        )

    def by_kind(self) -> list[dict]:
        """Per kind: count, MAdds, MAC and time, each with its share of the total (0-1)."""
        total = self.total
        out = []
        for kind in KINDS:
            rows = [r for r in self.rows if r.kind == kind]
            if not rows:
                continue
            madds = sum(r.madds for r in rows)
            mac = sum(r.mac for r in rows)
            entry = {
                "kind": kind,
                "count": len(rows),
                "params": sum(r.params for r in rows),
                "madds": madds,
                "madds_share": madds / total.madds if total.madds else 0.0,
                "mac": mac,
                "mac_share": mac / total.mac if total.mac else 0.0,
                "time_ms": None,
                "time_share": None,
            }
            if total.time_ms:
                time_ms = sum(r.time_ms or 0.0 for r in rows)
                entry.update(time_ms=time_ms, time_share=time_ms / total.time_ms)
            out.append(entry)
        return out

    def to_dict(self) -> dict:
        total = self.total
        return {
            "input_size": list(self.input_size),
            "dtype": self.dtype,
            "total": {**asdict(total), "flops": total.flops},
            "by_kind": self.by_kind(),
            "latency": self.latency.to_dict() if self.latency else None,
            "notes": self.notes,
            "rows": [r.to_dict() for r in self.rows],
        }

    def write_json(self, path: str) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2)

    def write_csv(self, path: str) -> None:
        names = [f.name for f in fields(OpCost)] + ["flops", "intensity"]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            for row in self.rows:
                d = row.to_dict()
                d["input_shape"] = "x".join(map(str, row.input_shape))
                d["output_shape"] = "x".join(map(str, row.output_shape))
                writer.writerow(d)


def _tensors(value: object) -> list[torch.Tensor]:
    return [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


def _first_shape(value: object) -> tuple[int, ...]:
    tensors = _tensors(value)
    return tuple(tensors[0].shape) if tensors else ()


class _CostMode(TorchDispatchMode):
    """Records one :class:`OpCost` per operator; optionally times each operator's kernel."""

    def __init__(self, tracker: ModuleTracker, root: str, weight_ids: set[int], param_ids: set[int], timed: bool):
        super().__init__()
        self.tracker = tracker
        self.root = root
        self.weight_ids = weight_ids
        self.param_ids = param_ids
        self.timed = timed
        self.rows: list[OpCost] = []
        self.times: list[float] = []

    def _module_name(self) -> str:
        names = [n for n in self.tracker.parents if n != "Global"]
        if not names:
            return "<outside>"
        innermost = max(names, key=len)
        return innermost[len(self.root) + 1:] if innermost.startswith(self.root + ".") else "<root>"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = op_kind(func, args)
        if kind is None:
            return func(*args, **kwargs)
        if self.timed:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = func(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append((time.perf_counter() - start) * 1e3)
        else:
            out = func(*args, **kwargs)
        self.rows.append(self._cost(func, kind, args, kwargs, out))
        return out

    def _cost(self, func, kind: str, args: tuple, kwargs: dict, out: object) -> OpCost:
        inputs = _tensors((args, kwargs))
        outputs = _tensors(out)
        if func in (aten.native_batch_norm.default,):
            outputs = outputs[:1]  # the saved mean / invstd outputs are empty in eval mode
        if func is aten.max_pool2d_with_indices.default:
            outputs = outputs[:1]  # the indices are a training-time by-product
        seen: set[int] = set()
        read = written = weights = params = 0
        read_bytes = written_bytes = 0
        for t in inputs:
            if id(t) in seen:
                continue
            seen.add(id(t))
            n = t.numel()
            # A weight may arrive as a view of the parameter (linear layers pass weight.t()).
            owner = id(t._base) if t._base is not None else id(t)
            if owner in self.weight_ids:
                weights += n
                read_bytes += n * t.element_size()
                if owner in self.param_ids:
                    params += n
            else:
                read += n
                read_bytes += n * t.element_size()
        for t in outputs:
            written += t.numel()
            written_bytes += t.numel() * t.element_size()
        out_numel = outputs[0].numel() if outputs else 0
        feature_inputs = [t for t in inputs if (id(t._base) if t._base is not None else id(t)) not in self.weight_ids]

        madds = ops = 0
        if func in CONV:
            weight = args[1]
            madds = out_numel * weight.shape[1] * int(torch.tensor(weight.shape[2:]).prod())
        elif func in LINEAR:
            a, b = (args[1], args[2]) if func is aten.addmm.default else (args[0], args[1])
            madds = a.shape[0] * a.shape[1] * b.shape[-1]
        elif kind == "batchnorm":
            ops = 2 * out_numel
        elif func in _GLOBAL_POOLS:
            ops = args[0].numel()
        elif func in POOL:
            kernel = args[1] if len(args) > 1 else (1, 1)
            kernel = list(kernel) * (2 if len(kernel) == 1 else 1)
            ops = out_numel * kernel[0] * kernel[1]
        elif kind in ("activation", "add", "multiply", "other"):
            ops = out_numel
        mac = read + written + weights
        mac_bytes = read_bytes + written_bytes
        if func in SPLIT:
            mac = mac_bytes = 0  # views: no data moves
        return OpCost(
            index=len(self.rows),
            name=self._module_name(),
            op=str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func),
            kind=kind,
            input_shape=tuple(feature_inputs[0].shape) if feature_inputs else (),
            output_shape=_first_shape(out),
            params=params,
            madds=int(madds),
            elementwise_ops=int(ops),
            mac=int(mac),
            mac_bytes=int(mac_bytes),
        )


def _check_input_size(input_size: Iterable[int]) -> tuple[int, ...]:
    size = tuple(input_size)
    if not size or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in size):
        raise ValueError(
            f"input_size must be a tuple of positive integers such as (1, 3, 224, 224), got {input_size!r}"
        )
    return size


def _run(model: nn.Module, x: torch.Tensor, timed: bool) -> _CostMode:
    root = type(model).__name__
    weight_ids = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    param_ids = {id(p) for p in model.parameters()}
    with torch.no_grad(), ModuleTracker() as tracker:
        mode = _CostMode(tracker, root, weight_ids, param_ids, timed)
        with mode:
            model(x)
    return mode


def profile(
    model: nn.Module,
    input_size: tuple[int, ...] = (1, 3, 224, 224),
    *,
    latency: bool = False,
    runs: int = 20,
    warmup: int = 5,
    threads: int | None = None,
    rounds: int = 5,
    spread_limit: float | None = SPREAD_LIMIT,
    retries: int = 2,
) -> Profile:
    """Profile one forward pass of ``model`` in eval mode at ``input_size``.

    Returns one :class:`OpCost` row per operator. With ``latency=True`` each operator's
    kernel is also timed over ``runs`` forward passes (median per operator), and the
    end-to-end latency is measured with :func:`measure_latency`; the difference between
    the end-to-end median and the sum of operator medians is the framework overhead
    (Python, dispatch, allocation), reported in the notes rather than spread over the rows.
    The end-to-end runs are taken in ``rounds`` rounds and remeasured / flagged unstable by
    ``spread_limit`` and ``retries`` (see :func:`measure_latencies`; ``rounds`` is capped at
    ``runs``). Both timings run on a fresh thread that flushes denormals in every worker
    (:func:`on_measuring_thread`). The model's training flag is restored; the model is
    otherwise untouched.
    """
    size = _check_input_size(input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    notes: list[str] = []
    try:
        x = torch.randn(size, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
        if not latency:
            mode = _run(model, x, timed=False)
            return Profile(mode.rows, size, str(dtype).replace("torch.", ""), notes=notes)
        if device.type == "meta":
            raise ValueError("latency needs a model on a real device, not 'meta'")
        end_to_end = measure_latency(model, size, threads=threads, runs=runs, warmup=warmup,
                                     rounds=min(rounds, runs), spread_limit=spread_limit, retries=retries)

        def timed_passes() -> list[_CostMode]:
            for _ in range(warmup):
                _run(model, x, timed=True)
            return [_run(model, x, timed=True) for _ in range(runs)]

        passes = on_measuring_thread(timed_passes, threads)
        rows = passes[0].rows
        for i, row in enumerate(rows):
            row.time_ms = statistics.median(p.times[i] for p in passes)
        summed = sum(r.time_ms or 0.0 for r in rows)
        notes.append(
            f"per-operator times are medians over {runs} passes, each kernel timed on its own; they sum to "
            f"{summed:.2f} ms against an end-to-end median of {end_to_end.median_ms:.2f} ms "
            f"({end_to_end.median_ms - summed:+.2f} ms: Python and dispatch overhead when positive; when "
            f"negative, timing each kernel alone costs it some speed, e.g. idle threads waking up). "
            f"Compare operators by their shares of the summed time."
        )
        return Profile(rows, size, str(dtype).replace("torch.", ""), latency=end_to_end, notes=notes)
    finally:
        model.train(was_training)
