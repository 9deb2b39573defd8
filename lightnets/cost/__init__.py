"""Cost analysis: counting and timing. Knows nothing model-specific.

- :func:`profile`: per-operator parameters, MAdds, element-wise ops, MAC, intensity, time.
- :func:`measure_latency`: the direct metric, measured with warm-up, percentiles, a fixed
  thread count and denormals flushed in every thread; :func:`measure_latencies` several
  networks in interleaved rounds, with unstable rows remeasured and flagged.
- :func:`reference_module`, :func:`round_schedule`, :class:`RoundTimes`: a fixed block timed
  between the modules of interleaved rounds, whose times give the machine's speed at each moment.
- :func:`machine_load`: how much CPU other processes use, for the measuring commands' headers.
- :func:`count_madds`, :func:`count_params`: the two indirect metrics on their own.
"""

from .counting import count_madds, count_params
from .kinds import KINDS
from .latency import (
    BACKENDS,
    SPREAD_LIMIT,
    LatencyResult,
    denormals_flushed,
    flushing_in_every_thread,
    measure_latencies,
    measure_latency,
    percentile,
    round_order,
)
from .load import LoadWatch, MachineLoad, machine_load
from .profile import OpCost, Profile, Totals, profile
from .speed import (
    REFERENCE_EVERY,
    REFERENCE_ID,
    REFERENCE_RUNS,
    REFERENCE_SHAPE,
    REFERENCE_WARMUP,
    RoundTimes,
    SpeedReference,
    reference_module,
    round_schedule,
    speed_summary,
)

__all__ = [
    "BACKENDS",
    "KINDS",
    "REFERENCE_EVERY",
    "REFERENCE_ID",
    "REFERENCE_RUNS",
    "REFERENCE_SHAPE",
    "REFERENCE_WARMUP",
    "RoundTimes",
    "SpeedReference",
    "SPREAD_LIMIT",
    "LatencyResult",
    "LoadWatch",
    "MachineLoad",
    "OpCost",
    "Profile",
    "Totals",
    "count_madds",
    "count_params",
    "denormals_flushed",
    "flushing_in_every_thread",
    "machine_load",
    "measure_latencies",
    "measure_latency",
    "percentile",
    "profile",
    "reference_module",
    "round_order",
    "round_schedule",
    "speed_summary",
]
