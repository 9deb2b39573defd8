"""Plain-text tables, matplotlib, a progress bar and the machine's description, for the terminal
reports and figures of cli, lab, train, search and analysis.

Helpers used by many live below them; this package imports nothing from lightnets.
"""

from .machine import machine_info
from .plotting import pyplot
from .progress import ProgressLine, progress
from .tables import format_table
from .text import safe_text

__all__ = ["ProgressLine", "format_table", "machine_info", "progress", "pyplot", "safe_text"]
