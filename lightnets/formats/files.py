"""Atomic file writes: a file is either its old self or its complete new self, never a fragment.

Every writer in lightnets that replaces a file a user keeps (checkpoints, ``metrics.jsonl``,
``config.json``, latency tables, NetAdapt's state, a search's results, exported programs) goes
through :func:`atomic_path` or :func:`atomic_write`: the data goes to ``PATH.tmp-PID`` beside
the target, is fsync'ed, and is renamed over the target. When the write fails (a full disk, a
quota, an exporter that raises), the temporary file is removed, so a later run does not trip
over it and the space it took is given back; the target is left as it was. Only a killed
process leaves a temporary file behind, which :func:`remove_stale_temporaries` clears.

Here, at the bottom of the packages that write files (``formats`` is imported by ``train``,
``export``, ``convert`` and ``search``), so that one helper serves them all.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

#: Environment variable naming a fault point at which the process fails on purpose (tests only).
FAULT_ENV = "LIGHTNETS_FAULT"


def fault_point(name: str) -> None:
    """Die here, as SIGKILL would, when ``LIGHTNETS_FAULT`` names this point.

    The moments between two writes (a checkpoint renamed into place, the epoch's metrics line
    not yet appended) are too short to hit with a signal from outside; tests name them instead.
    Points: ``checkpoint-written`` (a checkpoint's temporary file written, not yet renamed),
    ``epoch-checkpointed`` (an epoch's checkpoint in place, its metrics line not yet written),
    ``netadapt-step`` (a NetAdapt step's state and history written) and ``nas-trial-<n>``
    (architecture search: trial ``n`` evaluated, its result not yet stored as complete).
    ``disk-full`` does not kill: every atomic write fails with ``ENOSPC`` once its temporary file is
    written, as on a full disk (see :func:`atomic_path`).
    """
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _write(fh, data: bytes) -> None:
    """Write ``data`` to the open file ``fh``; a separate function so that tests can make it fail."""
    fh.write(data)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path to write ``path``'s new contents to; renamed over ``path`` when the block ends.

    The block writes the temporary file by name (``onnx.save``, ``torch.export.save``, ...); it
    is then fsync'ed and renamed into place, and the directory fsync'ed, so the rename survives
    a power cut. When the block or the rename raises, the temporary file is removed and
    ``path`` is untouched; an ``OSError`` is raised again naming ``path`` and saying so.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        if os.environ.get(FAULT_ENV) == "disk-full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.lexists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
            raise OSError(err.errno, f"cannot write {path!r}: {reason}; it was left as it was and the partial "
                                     "temporary file was removed") from err
        raise
    _fsync(directory)


def atomic_write(path: str, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), atomically; see :func:`atomic_path`."""
    payload = data.encode("utf8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        _write(fh, payload)


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the ``*.tmp-PID`` files a killed checkpoint write left behind in ``directory``."""
    removed = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if re.search(r"\.safetensors\.tmp-\d+$", name):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


def read_json(path: str) -> object:
    """The JSON document in the file at ``path``; invalid JSON raises a ValueError naming the file and line."""
    with open(path, encoding="utf8") as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
