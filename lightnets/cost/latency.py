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
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

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


@dataclass
class LatencyResult:
    """Median and spread of repeated forward passes, and the conditions they ran under."""

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

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative spread of the runs."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["spread"] = self.spread
        return d

    def __str__(self) -> str:
        return (
            f"median {self.median_ms:.2f} ms (p10 {self.p10_ms:.2f}, p90 {self.p90_ms:.2f}, spread "
            f"{100 * self.spread:.0f}%) over {self.runs} runs after {self.warmup} warm-up; {self.backend}, "
            f"{self.threads} thread{'s' if self.threads != 1 else ''}, {self.device}, torch {self.torch_version}, "
            f"denormals {'flushed' if self.denormals_flushed else 'NOT flushed (unsupported on this CPU)'}"
            f"{', channels_last' if self.channels_last else ''}"
        )


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _check(runs: int, warmup: int, backend: str, input_size: tuple[int, ...]) -> None:
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if not input_size or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_size):
        raise ValueError(
            f"input_size must be a tuple of positive integers such as (1, 3, 224, 224), got {input_size!r}"
        )


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, ...] = (1, 3, 224, 224),
    *,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 10,
    channels_last: bool = False,
    backend: str = "eager",
) -> LatencyResult:
    """Time ``runs`` forward passes in eval mode after ``warmup`` untimed ones.

    Sets the intra-op thread count (``threads``; None keeps torch's current count) and flushes
    denormals for the duration, restoring both afterwards, and reports both. ``backend``:
    ``"eager"``, ``"compile"`` (``torch.compile``, compiled during warm-up, which therefore
    runs at least once) or ``"onnxruntime"`` (the model exported to ONNX with BatchNorm
    folded, shapes fixed at the timed input size, run by ONNX Runtime on the CPU with the same
    thread count and denormals set to zero; needs ``lightnets[deploy]``) or
    ``"onnxruntime-int8"`` (the same, quantized to int8 with per-channel weights, calibrated on
    8 random batches: right for timing, not for accuracy, which needs real calibration data:
    ``lightnets export --int8 --calibration``). The two ONNX Runtime backends come from
    :mod:`lightnets.export.latency`. ``channels_last`` converts a copy of the model and the
    input; the caller's model is never modified (its training flag is restored).
    """
    input_size = tuple(input_size)
    _check(runs, warmup, backend, input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "meta":
        raise ValueError("cannot time a model on the 'meta' device; build it on a real device")
    dtype = param.dtype if param is not None else torch.float32
    if backend not in _BUILT_IN and backend not in _REGISTERED:
        raise ValueError(f"backend {backend!r} is provided by lightnets.export, which registers it when imported")
    was_training = model.training
    model.eval()
    prepared = contextlib.ExitStack()
    try:
        runner: Callable[[torch.Tensor], torch.Tensor] = model
        x = torch.randn(input_size, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
        if channels_last:
            runner = copy.deepcopy(model).to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if backend == "compile":
            runner = torch.compile(runner)
            warmup = max(warmup, 1)
        if backend in _REGISTERED:
            prepare = _REGISTERED[backend]
            threads_used = threads or torch.get_num_threads()
            runner = prepared.enter_context(
                prepare(model, input_size, threads=threads_used, device=device, channels_last=channels_last)
            )
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        times: list[float] = []
        with set_threads(threads) as used_threads, denormals_flushed() as flushed, torch.inference_mode():
            for _ in range(warmup):
                runner(x)
            sync()
            for _ in range(runs):
                start = time.perf_counter()
                runner(x)
                sync()
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
        prepared.close()
    ordered = sorted(times)
    return LatencyResult(
        backend=backend,
        input_size=input_size,
        median_ms=statistics.median(ordered),
        p10_ms=percentile(ordered, 0.1),
        p90_ms=percentile(ordered, 0.9),
        runs=runs,
        warmup=warmup,
        threads=used_threads,
        device=str(device),
        channels_last=channels_last,
        denormals_flushed=flushed,
        torch_version=torch.__version__,
        times_ms=times,
    )
