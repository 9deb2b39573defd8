"""A one-line progress bar with ETA on stderr (no dependency; silent when not a terminal)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class ProgressLine:
    """A bar redrawn in place by ``update(done, total, what)``; ``close()`` ends the line.

    For work that reports its own progress (a callback) rather than being iterated.
    """

    def __init__(self, label: str = "", enabled: bool = True) -> None:
        self.stream = sys.stderr
        self.label = label
        self.show = enabled and self.stream.isatty()
        self.start = time.perf_counter()
        self.total = 0

    def update(self, done: int, total: int, what: object = "") -> None:
        self.total = total
        if not self.show:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (total - done) if done else 0.0
        filled = int(30 * done / max(total, 1))
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
            f"{elapsed:5.1f}s elapsed, ETA {eta:5.1f}s  {str(what)[:40]:<40}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.show:
            self.stream.write(
                f"\r{self.label} done: {self.total} in {time.perf_counter() - self.start:.1f}s" + " " * 80 + "\n"
            )
            self.stream.flush()


def progress(items: Iterable[T], total: int, label: str = "", enabled: bool = True) -> Iterator[T]:
    bar = ProgressLine(label, enabled)
    for done, item in enumerate(items):
        bar.update(done, total, item)
        yield item
    bar.total = total
    bar.close()
