"""Plain-text tables and matplotlib for the terminal reports and figures of cli, lab, train and analysis.

A package that formats tables is used by many, so it lives below them; it imports nothing
from lightnets.
"""

from .plotting import pyplot
from .tables import format_table

__all__ = ["format_table", "pyplot"]
