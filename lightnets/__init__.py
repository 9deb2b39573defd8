"""lightnets: MobileNet V1-V3 and ShuffleNet V1-V2, faithful to their papers.

``import lightnets`` does not import torch: the ``lightnets`` command reaches its code through
this package, and ``lightnets --help`` or ``lightnets models`` should not pay seconds for a
library they do not use. The first use of a name below (``lightnets.create_model``, or any
``lightnets.<package>``) imports the library and registers measure_latency's ONNX Runtime
backends; importing ``lightnets.export`` registers them too.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["NetSpec", "__version__", "build", "create_model", "list_models"]

_API = {"NetSpec", "build", "create_model", "list_models"}


def _load() -> None:
    # the exporter too: importing it registers measure_latency's ONNX Runtime backends, which cost,
    # below it, cannot import; ``import lightnets`` used to, and code relying on that keeps working.
    from . import export, models

    del export  # loaded for its side effect only

    for name in _API:
        globals()[name] = getattr(models, name)


def __getattr__(name: str) -> Any:
    if name in _API:
        _load()
        return globals()[name]
    if name.startswith("_"):
        raise AttributeError(f"module 'lightnets' has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'lightnets' has no attribute {name!r}") from None
    _load()
    return module


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
