"""A speed reference: a small fixed module timed between the modules of interleaved rounds.

This VM's speed drifts, by up to 1.6x within minutes to an hour and within a round too (the
ONNX Runtime lookup table's errors ran with the order in which networks were timed inside a
round: the first under-predicted by 10-24%, the last over-predicted by 13-30%). Interleaving
and shuffling rounds (:func:`round_order`) spread a drift over every module but cannot remove
it, and a table built in a fast hour misses every network validated in a slow one. Timing one
fixed module between the others gives the machine's speed at each moment: each module's runs
are divided by the reference's time there (interpolated between the readings before and after
it) relative to a nominal reference time, so that times taken at different moments are
compared at one speed.

The reference (:func:`reference_module`) is a MobileNet-style block, pointwise 1x1 -
depthwise 3x3 - pointwise 1x1 with BatchNorm and ReLU, 32 channels at 56x56, weights seeded:
the operators every network here spends its time in, so it slows down as they do (a compute-
only loop would miss memory-bandwidth drifts), about 7.3 M multiply-adds, estimated at 0.15-0.3 ms
on one or two threads of this machine (MobileNetV1 at 224, 569 M multiply-adds, runs in about
10-20 ms here): long enough to read reliably in a few runs, short enough that a reading every
:data:`REFERENCE_EVERY` modules costs a few percent of a round.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .latency import round_order

#: What the reference computes; a table stores it and refuses to normalise against another.
REFERENCE_ID = "pw1x1-bn-relu, dw3x3-bn-relu, pw1x1-bn; 32 channels, 56x56, seed 0"
REFERENCE_SHAPE = (1, 32, 56, 56)
#: A reading every this many modules of a round's order, and at the round's start and end.
REFERENCE_EVERY = 4
#: Runs of one reading: a few untimed ones bring the reference back into the caches the modules
#: before it used; the reading is the median of the timed ones.
REFERENCE_WARMUP = 2
REFERENCE_RUNS = 6


class SpeedReference(nn.Sequential):
    """The reference block (see the module docstring); eval mode, deterministic weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the input named x, as the ONNX exporter names it
        return super().forward(x)


def reference_module() -> SpeedReference:
    """A fresh copy of the reference block, its weights and BatchNorm statistics seeded (seed 0)."""
    chs = REFERENCE_SHAPE[1]
    generator = torch.Generator().manual_seed(0)
    module = SpeedReference(
        nn.Conv2d(chs, chs, 1, bias=False), nn.BatchNorm2d(chs), nn.ReLU(),
        nn.Conv2d(chs, chs, 3, padding=1, groups=chs, bias=False), nn.BatchNorm2d(chs), nn.ReLU(),
        nn.Conv2d(chs, chs, 1, bias=False), nn.BatchNorm2d(chs),
    )
    with torch.no_grad():
        for layer in module:
            if isinstance(layer, nn.Conv2d):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            elif isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.copy_(torch.randn(chs, generator=generator) * 0.1)
                layer.running_var.copy_(torch.rand(chs, generator=generator) + 0.5)
    return module.eval()


def check_every(every: int) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"reference_every must be an integer >= 1 (a reading every N modules), got {every!r}")


def round_schedule(count: int, round_index: int, every: int | None = REFERENCE_EVERY) -> list[int | None]:
    """What round ``round_index`` times, in order: the module indices of :func:`round_order`, with
    ``None`` (a reference reading) at the start, after every ``every`` modules and at the end
    (``every=None``: no reference, the order alone; no modules: one reading)."""
    order = round_order(count, round_index)
    if every is None:
        return list(order)
    check_every(every)
    schedule: list[int | None] = [None]
    for done, i in enumerate(order, 1):
        schedule.append(i)
        if done % every == 0 or done == count:
            schedule.append(None)
    return schedule


@dataclass
class RoundTimes:
    """Timed runs of interleaved rounds, and the reference's readings between them.

    ``times_ms[i][r]``: module ``i``'s timed runs in round ``r`` (ms, as measured);
    ``reference_ms[r]``: round ``r``'s reference readings (each the median of its runs) in the
    order of :func:`round_schedule` with ``every``; None when no reference was timed.
    """

    times_ms: list[list[list[float]]]
    reference_ms: list[list[float]] | None = None
    every: int | None = None

    def reference_at(self) -> list[list[float]]:
        """Per module, per round, the reference time where the module was timed: linear between
        the readings before and after it in the round's schedule, by position (readings are a
        few modules apart, so position stands in for time)."""
        if self.reference_ms is None:
            raise ValueError("these rounds were timed without a speed reference")
        at: list[list[float]] = [[0.0] * len(self.reference_ms) for _ in self.times_ms]
        for r, readings in enumerate(self.reference_ms):
            schedule = round_schedule(len(self.times_ms), r, self.every)
            refs = [p for p, item in enumerate(schedule) if item is None]
            if len(refs) != len(readings):
                raise ValueError(f"round {r} has {len(readings)} reference readings, its schedule {len(refs)}")
            for k, (a, b) in enumerate(zip(refs[:-1], refs[1:], strict=True)):
                for p in range(a + 1, b):
                    at[schedule[p]][r] = readings[k] + (readings[k + 1] - readings[k]) * (p - a) / (b - a)
        return at

    def readings(self) -> list[float]:
        """Every reference reading, round by round (none without a reference)."""
        return [t for readings in self.reference_ms or [] for t in readings]

    def normalised(self, nominal_ms: float) -> tuple[list[list[list[float]]], list[list[float]]]:
        """``(times, factors)``: every run divided by its speed factor, the reference time where it
        was timed over ``nominal_ms`` (a factor 2: the machine ran at half the nominal speed), and
        the factors per module per round."""
        if not (isinstance(nominal_ms, (int, float)) and nominal_ms > 0):
            raise ValueError(f"the nominal reference time must be > 0 ms, got {nominal_ms!r}")
        factors = [[t / nominal_ms for t in per_round] for per_round in self.reference_at()]
        times = [[[t / f for t in runs] for runs, f in zip(per_round, fs, strict=True)]
                 for per_round, fs in zip(self.times_ms, factors, strict=True)]
        return times, factors


def speed_summary(factors: Sequence[float]) -> dict[str, float] | None:
    """Min, median and max of speed factors (None for none)."""
    if not factors:
        return None
    return {"min": min(factors), "median": statistics.median(factors), "max": max(factors)}
