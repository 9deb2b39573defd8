"""Cost analysis: counting and timing. Knows nothing model-specific.

- :func:`profile`: per-operator parameters, MAdds, element-wise ops, MAC, intensity, time.
- :func:`measure_latency`: the direct metric, measured with warm-up, percentiles, a fixed
  thread count and denormals flushed.
- :func:`count_madds`, :func:`count_params`: the two indirect metrics on their own.
"""

from .counting import count_madds, count_params
from .kinds import KINDS
from .latency import BACKENDS, LatencyResult, denormals_flushed, measure_latency, percentile
from .profile import OpCost, Profile, Totals, profile

__all__ = [
    "BACKENDS",
    "KINDS",
    "LatencyResult",
    "OpCost",
    "Profile",
    "Totals",
    "count_madds",
    "count_params",
    "denormals_flushed",
    "measure_latency",
    "percentile",
    "profile",
]
