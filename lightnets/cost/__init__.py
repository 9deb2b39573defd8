"""Cost analysis: counting and timing. Knows nothing model-specific."""

from .counting import count_madds, count_params

__all__ = ["count_madds", "count_params"]
