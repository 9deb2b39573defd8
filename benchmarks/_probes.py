"""The probe list's vocabulary: one bad input, how it is fed, and how its outcome is judged.

A probe is a name, the issue item it covers, and a function that takes a scratch directory
and feeds one bad input, either through the CLI (``cli(...)``, a fresh process) or through
the Python API (``api(...)``). Its outcome is one of:

- ``clear``: refused. The CLI exits non-zero with no Python traceback on stderr and says
  something there; the API raises ``ValueError`` (``CheckpointError`` and the other errors
  of ours derive from it).
- ``silent``: accepted. The CLI exits 0; the API returns.
- ``traceback``: refused badly. The CLI printed a Python traceback; the API raised anything
  that is not a ``ValueError``.

``benchmarks/bad_inputs.py`` runs every list of probes and prints
"N bad inputs, N clear errors, 0 silent, 0 tracebacks" when all is well.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Outcome:
    verdict: str          # "clear", "silent" or "traceback"
    message: str          # the error's last line, or what was returned


@dataclass(frozen=True)
class Probe:
    name: str
    item: str             # the issue item it covers, e.g. "18.1"
    feed: Callable[[Path], Outcome]


def cli(*argv: str, cwd: Path | None = None, timeout: float = 600, stdin: str | None = None) -> Outcome:
    """Run ``python -m lightnets *argv`` in a fresh process and judge it."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, "-m", "lightnets", *argv], cwd=cwd, env=env, input=stdin,
        capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    said = lines or [line for line in done.stdout.splitlines() if line.strip()] or [""]
    last = said[-1]
    if done.returncode == 0:
        return Outcome("silent", last)
    if "Traceback (most recent call last)" in done.stderr or not lines:
        return Outcome("traceback", last)
    return Outcome("clear", last)


def api(call: Callable[[], object]) -> Outcome:
    """Call ``call()`` and judge it: ``ValueError`` is a clear refusal."""
    try:
        returned = call()
    except ValueError as err:
        return Outcome("clear", f"{type(err).__name__}: {err}")
    except Exception as err:  # noqa: BLE001 - classifying it is the point
        return Outcome("traceback", f"{type(err).__name__}: {err}")
    return Outcome("silent", repr(returned)[:200])
