"""A one-line progress bar with ETA on stderr (no dependency; silent when not a terminal)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, label: str = "", enabled: bool = True) -> Iterator[T]:
    stream = sys.stderr
    show = enabled and stream.isatty()
    start = time.perf_counter()
    for done, item in enumerate(items):
        if show:
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (total - done) if done else 0.0
            filled = int(30 * done / max(total, 1))
            stream.write(
                f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
                f"{elapsed:5.1f}s elapsed, ETA {eta:5.1f}s  {str(item)[:40]:<40}"
            )
            stream.flush()
        yield item
    if show:
        stream.write(f"\r{label} done: {total} in {time.perf_counter() - start:.1f}s" + " " * 80 + "\n")
        stream.flush()
