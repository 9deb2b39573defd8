"""The model registry: ``list_models()`` and ``create_model(name, ...)``.

Family names take every option; named variants (timm's and torchvision's names among them)
fix some options and resolve to the same builders. Classifiers, the segmentation models
(LR-ASPP) and the detectors (SSDLite) share the registry; ``list_models(task=...)`` tells them apart.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..catalog import ENTRIES, PAPERS, model_names
from .builder import build
from .lraspp import lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small
from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .shufflenet_v1 import GROUPS as SHUFFLENET_V1_GROUPS
from .shufflenet_v1 import shufflenet_v1
from .shufflenet_v2 import shufflenet_v2
from .spec import NetSpec
from .ssdlite import ssdlite_mobilenet_v2, ssdlite_mobilenet_v3_large, ssdlite_mobilenet_v3_small

COMMON_OPTIONS = ("num_classes", "width_mult", "in_chans", "dropout", "bn_eps")

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "shufflenet_v1": shufflenet_v1,
    "shufflenet_v2": shufflenet_v2,
    "lraspp_mobilenet_v3_large": lraspp_mobilenet_v3_large,
    "lraspp_mobilenet_v3_small": lraspp_mobilenet_v3_small,
    "ssdlite_mobilenet_v3_large": ssdlite_mobilenet_v3_large,
    "ssdlite_mobilenet_v3_small": ssdlite_mobilenet_v3_small,
    "ssdlite_mobilenet_v2": ssdlite_mobilenet_v2,
}
#: Family name -> (builder, paper); the names and papers are :mod:`lightnets.catalog`'s.
FAMILIES: dict[str, tuple[Callable[..., nn.Module], str]] = {
    family: (_BUILDERS[family], paper) for family, paper in PAPERS.items()
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def builder(self) -> Callable[..., nn.Module]:
        return FAMILIES[self.family][0]

    def options(self) -> list[str]:
        """Keyword options this entry accepts (the family's, minus the ones the name fixes)."""
        return [p for p in inspect.signature(self.builder).parameters if p not in self.fixed]


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, family: str, **fixed: Any) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = ModelEntry(name, family, fixed)


for _name, _family, _fixed in ENTRIES:
    register(_name, _family, **_fixed)


def list_models(family: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names, families first, in registration order.

    ``task``: only ``"classification"`` models (logits of shape (N, classes)), only
    ``"segmentation"`` ones (per-pixel logits, (N, classes, H, W)) or only ``"detection"`` ones
    (SSDLite: box codes and class logits per anchor); default all.
    """
    wanted = set(model_names(family, task))  # validates family and task
    return [n for n in _REGISTRY if n in wanted]


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(_REGISTRY)}") from None


def create_model(name: str | None = None, *, spec: NetSpec | str | None = None, **options: Any) -> nn.Module:
    """Build a registered model, or the network a spec describes (``spec=``, see :func:`build`).

    Options: ``num_classes`` (>= 1, default 1000; 21 for LR-ASPP; >= 2 and default 91 for
    SSDLite, whose class 0 is the background), ``width_mult`` (alpha,
    finite > 0), ``in_chans`` (>= 1, default 3), ``dropout`` (before the classifier, in [0, 1)),
    ``bn_eps``, and the family's own: ``minimal`` (MobileNetV3), ``groups`` (ShuffleNetV1: 1,
    2, 3, 4 or 8), ``official`` (ShuffleNetV1 and V2: the authors' release), ``padding``
    (MobileNets: ``"symmetric"`` or ``"tf_same"``), ``activation`` (MobileNetV1: ``"re"`` or
    ``"r6"``) and ``inter_channels`` (LR-ASPP's head width, default 128), ``reduced_tail`` (SSDLite on
    MobileNetV3: half-width last stage, default True). A named variant fixes
    some of these (``mobilenet_v1_050`` fixes ``width_mult=0.5``); passing a different
    value for a fixed option raises. ``spec`` takes no other argument: the spec states it all.
    """
    if spec is not None:
        if name is not None or options:
            raise ValueError(
                f"create_model(spec=...) takes no model name or options (the spec states every choice), got "
                f"name={name!r}, options={sorted(options)}"
            )
        return build(spec)
    if name is None:
        raise ValueError("create_model needs a model name (see lightnets.list_models()) or spec=...")
    entry = get_entry(name)
    allowed = inspect.signature(entry.builder).parameters
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(f"{name}: unknown option {key!r}; allowed: {', '.join(entry.options())}")
        if key in entry.fixed and value != entry.fixed[key]:
            raise ValueError(
                f"{name} fixes {key}={entry.fixed[key]!r}, got {key}={value!r}; "
                f"use the family name {entry.family!r} to choose it"
            )
    _check_common(options)
    return entry.builder(**{**options, **entry.fixed})


def _check_common(options: dict[str, Any]) -> None:
    for key in ("num_classes", "in_chans"):
        value = options.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    width = options.get("width_mult", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width_mult must be a finite number > 0, got {width!r}")
    if "minimal" in options and not isinstance(options["minimal"], bool):
        raise ValueError(f"minimal must be True or False, got {options['minimal']!r}")
    groups = options.get("groups")
    if "groups" in options and (isinstance(groups, bool) or not isinstance(groups, int)
                                or groups not in SHUFFLENET_V1_GROUPS):
        raise ValueError(f"groups must be one of {list(SHUFFLENET_V1_GROUPS)}, got {options['groups']!r}")
