"""Checking a file to be written before the work that produces it."""

from __future__ import annotations

import os


def check_output_file(path: str | os.PathLike, what: str = "output") -> str:
    """Raise a ValueError unless ``path`` names a file that can be written: not a directory, in a
    folder that exists and is writable. Returns ``path`` as a string.

    Exports take from seconds to minutes (an ONNX export of MobileNetV2, 37 s); checked
    afterwards, a directory or a missing folder given as the output failed only then. A missing
    folder is not created: a mistyped path should not leave new folders behind.
    """
    path = os.fspath(path)
    if not path:
        raise ValueError(f"the {what} path is empty; give the file to write")
    if os.path.isdir(path):
        raise ValueError(f"the {what} {path!r} is a directory; give the file to write inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"the folder of the {what} {path!r} does not exist ({folder!r}); create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"the {what} {path!r} cannot be written here (no write permission)")
    return path
