"""Plain-text tables for the terminal: aligned columns, numbers right, text left."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .text import safe_text


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    formats: Mapping[str, str | Callable[[Any], str]] | None = None,
) -> str:
    """Format ``rows`` as an aligned table; numbers are right-aligned, text left-aligned.

    ``columns`` is a list of (key, header); ``formats`` maps a key to a format string or a
    function. Cells and headers are printed safely (:func:`safe_text`): class names and paths
    come from files.
    """
    formats = formats or {}

    def cell(key: str, value: Any) -> str:
        fmt = formats.get(key)
        if value is None:
            return "-"
        if fmt is None:
            return safe_text(value)
        return safe_text(fmt(value) if callable(fmt) else fmt.format(value))

    body = [[cell(key, row.get(key)) for key, _ in columns] for row in rows]
    headers = [safe_text(header) for _, header in columns]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row.get(key), (int, float)) for row in rows) and rows for key, _ in columns]

    def line(cells: Sequence[str]) -> str:
        aligned = (c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True))
        return "  ".join(aligned).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in body)
    return "\n".join(out)
