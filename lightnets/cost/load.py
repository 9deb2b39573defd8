"""How busy the machine is while we measure: other processes' CPU use, read from the kernel.

A latency measured while other work runs is a measurement of the contention, not of the
network (issue 15: a busy 2-core machine made ``shufflenet_v1_g1_x1_0`` read 1,885 ms against
about 40 ms idle). Every measuring command reads the load before it starts and while it
runs, and says so; it does not hide the figures, it labels them.

"Other work" is the CPU time all processes spent (``/proc/stat``: user, nice, system, irq,
softirq and steal, the last being other virtual machines on the same host) less this
process's own (``os.times``), over the same wall-clock interval, in cores. Where
``/proc/stat`` is missing (macOS, Windows) the 1-minute load average stands in, which counts
this process too and lags by a minute; the reading says which source it used.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

#: Other processes using at least this many cores make the machine "busy": a quarter of a
#: core already shows in the p90 of a 2-thread batch-1 measurement (benchmarks/zoo_under_load.py).
BUSY_CORES = 0.25


@dataclass(frozen=True)
class MachineLoad:
    """Other processes' CPU use over an interval, in cores, and the cores there are."""

    other_cores: float | None   # None: the platform gives no reading
    cores: int
    seconds: float
    source: str                 # "/proc/stat" or "loadavg"

    @property
    def busy(self) -> bool:
        return self.other_cores is not None and self.other_cores >= BUSY_CORES

    def describe(self) -> str:
        if self.other_cores is None:
            return "machine load: unknown on this platform"
        what = (f"other processes used {self.other_cores:.2f} of {self.cores} cores"
                if self.source == "/proc/stat" else
                f"1-minute load average {self.other_cores:.2f} on {self.cores} cores (includes this process)")
        if self.busy:
            return f"BUSY MACHINE: {what}; latencies are inflated and may be unstable"
        return f"machine idle enough: {what}"

    def to_dict(self) -> dict:
        return {**asdict(self), "busy": self.busy}


_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system (idle iowait) irq softirq steal


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy jiffies summed over every CPU, number of CPUs) from ``/proc/stat``, or None."""
    try:
        with open("/proc/stat") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    total = next((line for line in lines if line.startswith("cpu ")), None)
    if total is None:
        return None
    values = [int(v) for v in total.split()[1:]]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return sum(values[i] for i in _BUSY_FIELDS if i < len(values)), cpus


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class LoadWatch:
    """Reads other processes' CPU use between :meth:`start` and :meth:`reading`.

    ``watch = LoadWatch().start(); ...measure...; load = watch.reading()``. Cheap: two reads
    of ``/proc/stat``, nothing runs in between.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, tuple[int, int] | None] | None = None

    def start(self) -> LoadWatch:
        self._start = (time.monotonic(), _own_cpu_seconds(), _cpu_jiffies())
        return self

    def reading(self) -> MachineLoad:
        if self._start is None:
            raise RuntimeError("LoadWatch.reading() before start()")
        wall0, own0, jiffies0 = self._start
        wall, own, jiffies = time.monotonic(), _own_cpu_seconds(), _cpu_jiffies()
        seconds = wall - wall0
        if jiffies0 is None or jiffies is None or seconds <= 0:
            return _loadavg_reading(seconds)
        tick = os.sysconf("SC_CLK_TCK")
        busy = (jiffies[0] - jiffies0[0]) / tick
        others = max(0.0, (busy - (own - own0)) / seconds)
        return MachineLoad(round(others, 3), jiffies[1], round(seconds, 3), "/proc/stat")


def _loadavg_reading(seconds: float) -> MachineLoad:
    cores = os.cpu_count() or 1
    try:
        return MachineLoad(round(os.getloadavg()[0], 3), cores, round(seconds, 3), "loadavg")
    except (OSError, AttributeError):
        return MachineLoad(None, cores, round(seconds, 3), "none")


def load_lines(before: MachineLoad, during: MachineLoad) -> list[str]:
    """The measuring commands' header lines: the load before and during, and a warning when
    either was busy (one wording for zoo, lab, profile and lut)."""
    lines = [f"before: {before.describe()}", f"during: {during.describe()}"]
    if before.busy or during.busy:
        lines.append("other work was running: these figures include its interference; rerun on an idle machine "
                     "(or with --threads 1, which suffers less from a busy core) before comparing them")
    return lines


def machine_load(seconds: float = 0.5) -> MachineLoad:
    """Other processes' CPU use over the next ``seconds`` (this process sleeps meanwhile)."""
    if not (isinstance(seconds, (int, float)) and 0 < seconds <= 60):
        raise ValueError(f"seconds must be a number in (0, 60], got {seconds!r}")
    watch = LoadWatch().start()
    time.sleep(seconds)
    return watch.reading()
