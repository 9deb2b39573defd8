"""The ``lightnets`` command: a thin layer over the Python API."""

from .main import main

__all__ = ["main"]
