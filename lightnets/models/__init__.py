"""The model zoo: one file per family, each with its paper's table as data."""

from .builder import ConvNet, FeatureInfo, scale_stages
from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .registry import FAMILIES, create_model, get_entry, list_models
from .shufflenet_v1 import shufflenet_v1
from .shufflenet_v2 import shufflenet_v2
from .spec import BlockSpec, parse_stages

__all__ = [
    "FAMILIES",
    "BlockSpec",
    "ConvNet",
    "FeatureInfo",
    "create_model",
    "get_entry",
    "list_models",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "parse_stages",
    "scale_stages",
    "shufflenet_v1",
    "shufflenet_v2",
]
